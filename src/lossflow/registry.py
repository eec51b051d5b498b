"""Name -> implementation registries with "did you mean" errors (losses, optimizers, schedulers).

A :class:`Registry` is a read-only mapping filled by ``register``. Its implementations may live
in modules that import torch while the registry itself does not: ``loader`` imports them on the
first lookup, so configuration can be read and names checked in a process that never trains.
Where the names are declared statically (``declared``), configuration checks them against that
declaration with :func:`unknown_name` and never imports the implementations; the registry then
refuses to register a name that is not declared.

Example:
    >>> colours = Registry("colour")
    >>> _ = colours.register("red", 1)
    >>> colours.lookup("red")
    1
    >>> colours.lookup("rde")
    Traceback (most recent call last):
    ...
    ValueError: unknown colour 'rde' (did you mean 'red'?); known colours: red
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar

T = TypeVar("T")
F = TypeVar("F")


def unknown_name(kind: str, name: str, known: Iterable[str]) -> str:
    """The message for an unknown ``name`` of a ``kind``: the closest known name and the list."""
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown {kind} '{name}'{hint}; known {kind}s: {', '.join(names)}"


class Registry(Mapping[str, T]):
    """Implementations by name.

    Args:
        kind: What an entry is (``"loss"``, ``"optimizer"``); used in error messages.
        loader: Imports the modules that register the entries; called once, on first use.
        error: Exception type raised by :meth:`lookup` for an unknown name.
        declared: The names this registry may hold, declared where no implementation is
            imported (``None``: any name).
    """

    def __init__(
        self,
        kind: str,
        loader: Callable[[], object] | None = None,
        error: type[Exception] = ValueError,
        declared: Iterable[str] | None = None,
    ) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._loader = loader
        self._error = error
        self.declared = None if declared is None else frozenset(declared)

    def _load(self) -> dict[str, T]:
        loader, self._loader = self._loader, None
        if loader is not None:
            try:
                loader()
            except BaseException:
                self._loader = loader  # the next lookup tries again and raises the same error
                raise
        return self._entries

    def register(self, name: str, value: T) -> T:
        """Add ``value`` under ``name``.

        Raises:
            TypeError: ``name`` is empty, already registered or not among the declared names.
        """
        if not name:
            raise TypeError(f"a {self.kind} needs a non-empty name")
        if self.declared is not None and name not in self.declared:
            declared = ", ".join(sorted(self.declared))
            raise TypeError(f"{self.kind} name {name!r} is not declared; declared: {declared}")
        if name in self._entries:
            raise TypeError(f"{self.kind} name {name!r} is registered twice")
        self._entries[name] = value
        return value

    def decorator(self, name: str) -> Callable[[F], F]:
        """``@registry.decorator("adam")`` registers the decorated function or class."""

        def add(value: F) -> F:
            self.register(name, value)  # type: ignore[arg-type]
            return value

        return add

    def unknown(self, name: str) -> str:
        """The message for an unknown ``name``: the closest known name and the full list."""
        return unknown_name(self.kind, name, self._load())

    def lookup(self, name: str) -> T:
        """The entry for ``name``.

        Raises:
            The registry's error type, naming the closest known name and listing them all.
        """
        entries = self._load()
        if name not in entries:
            raise self._error(self.unknown(name))
        return entries[name]

    def __getitem__(self, name: str) -> T:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __contains__(self, name: object) -> bool:
        return name in self._load()
