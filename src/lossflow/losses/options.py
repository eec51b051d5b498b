"""What the torch-free loss specs and the torch implementations share: reduction and penalty
names, the penalty's option check, and the switch of the losses' debug-only target checks.

Both sides import this module and it imports neither, so ``spec`` (config, no torch) and the
implementations (``_base``, ``regularizers``) depend on one declaration instead of on each other.

Target checks: a loss's forward never reads its data back to the host (no ``.item()``, no
``bool(tensor)``): that would synchronise a GPU on every training step and break a
``torch.compile`` graph. Targets are validated once, where the data is prepared
(:mod:`lossflow.data.validation`). To have every loss also check its target's values on each
call (binary labels in [0, 1], class indices in range, non-negative counts, distributions that
sum to 1, graded relevance), turn the debug checks on around the code to check:

    >>> from lossflow.losses import target_checks
    >>> with target_checks():
    ...     pass  # losses called here raise ValueError for an invalid target

They stay off inside a compiled region whatever the switch says.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, get_args

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = get_args(Reduction)
RegularizerName = Literal["l1", "l2", "elastic_net"]
REGULARIZERS: tuple[str, ...] = get_args(RegularizerName)

_target_checks = False


def check_penalty(strength: float, l1_ratio: float) -> None:
    """Raise ``ValueError`` unless ``strength >= 0`` is finite and ``l1_ratio`` lies in [0, 1]."""
    if not (strength >= 0 and math.isfinite(strength)):
        raise ValueError(f"strength must be a finite number >= 0; got {strength!r}")
    if not 0.0 <= l1_ratio <= 1.0:
        raise ValueError(f"l1_ratio must lie in [0, 1]; got {l1_ratio!r}")


def target_checks_enabled() -> bool:
    """Whether losses check their target's values on every call (off by default)."""
    return _target_checks


@contextmanager
def target_checks(enabled: bool = True) -> Iterator[None]:
    """Turn the losses' per-call target checks on (or off) inside the ``with`` block.

    A debugging aid: each check reads the target back to the host, which synchronises a GPU on
    every call. The previous setting is restored on exit.
    """
    global _target_checks
    previous, _target_checks = _target_checks, enabled
    try:
        yield
    finally:
        _target_checks = previous
