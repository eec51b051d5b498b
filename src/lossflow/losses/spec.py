"""Loss specifications: the config form of a loss, its registry, ``build_loss`` and ``loss_id``.

A loss in config is a mapping with a ``name`` and that loss's options, e.g.
``{"name": "focal", "gamma": 2.0, "alpha": 0.25}``. Each loss registers one pydantic spec class
(``extra="forbid"``) whose fields are exactly its options; the loss's own functional checks the
values, so a bad option fails at config load with the same message a direct call would give.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, SerializeAsAny, model_validator
from torch import nn

from lossflow.losses._base import Reduction

TaskType = Literal["regression", "binary", "multiclass", "multilabel", "ranking"]
TASK_TYPES: tuple[TaskType, ...] = ("regression", "binary", "multiclass", "multilabel", "ranking")


class LossConfigError(ValueError):
    """A loss spec names an unknown loss or option, or a loss that does not fit the task."""


class LossSpecBase(BaseModel):
    """Base class of every loss spec. Subclasses set ``name`` to a ``Literal`` and add options.

    Class attributes a subclass sets:
        tasks: the task types the loss fits.
        reference: the independent implementation it is tested and benchmarked against.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: ClassVar[frozenset[TaskType]] = frozenset()
    reference: ClassVar[str] = ""

    name: str
    reduction: Reduction = "mean"

    @classmethod
    def unknown_options(cls, data: Mapping[str, Any]) -> str | None:
        """The error message for keys of ``data`` that are not options of this loss, if any."""
        valid = sorted(cls.model_fields)
        unknown = sorted(str(k) for k in data if k not in cls.model_fields)
        if not unknown:
            return None
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, valid, n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        name = data.get("name", cls.model_fields["name"].default)
        return (
            f"unknown option {', '.join(hints)} for loss '{name}'; "
            f"valid options: {', '.join(valid)}"
        )

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_options(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            message = cls.unknown_options(data)
            if message is not None:
                raise LossConfigError(message)
        return data

    @model_validator(mode="after")
    def _check_by_building(self) -> LossSpecBase:
        self.validate_options()
        return self

    def validate_options(self) -> None:
        """Raise ``ValueError`` for invalid option values. Default: build the loss once."""
        self.build()

    def build(self) -> nn.Module:
        """Return the ``nn.Module`` this spec describes."""
        raise NotImplementedError(f"{type(self).__name__} does not implement build()")

    def task_types(self) -> frozenset[TaskType]:
        """Task types this loss, with these options, fits."""
        return self.tasks

    def with_class_counts(self, counts: list[int]) -> LossSpecBase:
        """This spec with ``class_counts`` filled from the training split where it is unset.

        Losses that weigh classes by their frequency (``class_balanced``, ``logit_adjusted``)
        take the counts from config or, when the config leaves them out, from the data. A spec
        that already has counts (or priors) keeps them.
        """
        fields = type(self).model_fields
        if "class_counts" not in fields or getattr(self, "class_counts", None) is not None:
            return self
        if getattr(self, "class_priors", None) is not None:
            return self
        return type(self).model_validate({**self.model_dump(), "class_counts": list(counts)})


SpecT = TypeVar("SpecT", bound=type[LossSpecBase])
LOSS_SPECS: dict[str, type[LossSpecBase]] = {}


def register_loss(cls: SpecT) -> SpecT:
    """Class decorator: add a spec class to the registry under its ``name`` default."""
    spec_cls: type[LossSpecBase] = cls
    name = spec_cls.model_fields["name"].default
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__}.name needs a string default, the loss's config name")
    if name in LOSS_SPECS:
        raise TypeError(f"loss name {name!r} is registered twice")
    if not spec_cls.tasks:
        raise TypeError(f"{cls.__name__} must declare the task types it fits")
    LOSS_SPECS[name] = spec_cls
    return cls


def parse_loss_spec(data: Mapping[str, Any] | LossSpecBase) -> LossSpecBase:
    """Validate a mapping (from YAML or code) into the registered spec class for its ``name``.

    Raises:
        LossConfigError: no ``name``, an unknown name (the message lists the known ones) or an
            unknown option (the message lists the valid ones).
        pydantic.ValidationError: an option of the wrong type or value.
    """
    if isinstance(data, LossSpecBase):
        return data
    if not isinstance(data, Mapping):
        raise LossConfigError(
            f"a loss spec must be a mapping with a 'name' key; got {type(data).__name__}"
        )
    name = data.get("name")
    if name is None:
        raise LossConfigError(f"a loss spec needs a 'name'; known losses: {', '.join(LOSS_SPECS)}")
    cls = LOSS_SPECS.get(str(name))
    if cls is None:
        close = difflib.get_close_matches(str(name), list(LOSS_SPECS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise LossConfigError(
            f"unknown loss '{name}'{hint}; known losses: {', '.join(sorted(LOSS_SPECS))}"
        )
    message = cls.unknown_options(data)
    if message is not None:
        raise LossConfigError(message)
    return cls.model_validate(dict(data))


# Type for a loss spec nested in another pydantic model (training config, composite terms).
LossSpec = Annotated[SerializeAsAny[LossSpecBase], BeforeValidator(parse_loss_spec)]


def build_loss(spec: Mapping[str, Any] | LossSpecBase) -> nn.Module:
    """Build the loss module for a spec (a mapping is validated first)."""
    return parse_loss_spec(spec).build()


def spec_payload(spec: LossSpecBase) -> dict[str, Any]:
    """The canonical JSON-able form of a spec, with every default filled in."""
    return spec.model_dump(mode="json")


def _stable_hash(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def loss_id(spec: Mapping[str, Any] | LossSpecBase, regularizers: Iterable[BaseModel] = ()) -> str:
    """A short stable id of a loss decision: ``<name>-<12 hex digits>``.

    The hash covers every option with its default filled in, so ``{"name": "focal"}`` and
    ``{"name": "focal", "gamma": 2.0}`` share an id, and the id is the same in every process and on
    every machine (canonical JSON, SHA-256). Regularisers, when given, are part of the decision and
    of the id.
    """
    parsed = parse_loss_spec(spec)
    payload: dict[str, Any] = {"loss": spec_payload(parsed)}
    regs = [r.model_dump(mode="json") for r in regularizers]
    if regs:
        payload["regularizers"] = regs
    return f"{parsed.name}-{_stable_hash(payload)}"


def check_task(spec: LossSpecBase, task: TaskType) -> None:
    """Raise ``LossConfigError`` when a loss does not fit the configured task type."""
    if task not in TASK_TYPES:
        raise LossConfigError(f"unknown task type {task!r}; known: {', '.join(TASK_TYPES)}")
    fits = spec.task_types()
    if task not in fits:
        fitting = sorted(n for n, c in LOSS_SPECS.items() if task in c.tasks)
        raise LossConfigError(
            f"loss '{spec.name}' fits {', '.join(sorted(fits)) or 'no task'} tasks, "
            f"not a {task} task; losses for {task}: {', '.join(fitting)}"
        )


@dataclass(frozen=True)
class LossParameter:
    """One option of a loss as ``available_losses`` reports it."""

    name: str
    type: str
    required: bool
    default: Any
    description: str


@dataclass(frozen=True)
class LossInfo:
    """A catalogue entry: what a loss is called, what it fits and how it is configured."""

    name: str
    tasks: tuple[TaskType, ...]
    summary: str
    reference: str
    parameters: tuple[LossParameter, ...]


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("NoneType", "None")


def available_losses() -> list[LossInfo]:
    """The catalogue: every registered loss with its task types and options (with defaults)."""
    out = []
    for name in sorted(LOSS_SPECS):
        cls = LOSS_SPECS[name]
        params = tuple(
            LossParameter(
                name=field_name,
                type=_type_name(field.annotation),
                required=field.is_required(),
                default=None if field.is_required() else field.default,
                description=field.description or "",
            )
            for field_name, field in cls.model_fields.items()
            if field_name != "name"
        )
        doc = (cls.__doc__ or "").strip().splitlines()
        out.append(
            LossInfo(
                name=name,
                tasks=tuple(t for t in TASK_TYPES if t in cls.tasks),
                summary=doc[0] if doc else "",
                reference=cls.reference,
                parameters=params,
            )
        )
    return out
