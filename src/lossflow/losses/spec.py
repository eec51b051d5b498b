"""Loss specifications: the config form of a loss, its registry, ``build_loss`` and ``loss_id``.

A loss in config is a mapping with a ``name`` and that loss's options, e.g.
``{"name": "focal", "gamma": 2.0, "alpha": 0.25}``. Each loss registers one pydantic spec class
(``extra="forbid"``) whose fields are exactly its options; the loss's own functional checks the
values, so a bad option fails at config load with the same message a direct call would give.

This module does not import torch: the spec classes live beside their losses and are registered
when a spec is first parsed, so a process that only reads configuration (the service, the CLI)
never loads the training stack. Weight penalties (:class:`RegularizerSpec`) are specs too.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    model_validator,
)

from lossflow.errors import UserError
from lossflow.losses.options import Reduction, RegularizerName, check_penalty
from lossflow.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from lossflow.losses.regularizers import WeightPenalty

TaskType = Literal["regression", "binary", "multiclass", "multilabel", "ranking"]
TASK_TYPES: tuple[TaskType, ...] = ("regression", "binary", "multiclass", "multilabel", "ranking")
# The modules whose spec classes register themselves on import (they import torch).
_IMPLEMENTATIONS: tuple[str, ...] = (
    "lossflow.losses.regression",
    "lossflow.losses.classification",
    "lossflow.losses.ranking",
    "lossflow.losses.composite",
)


class LossConfigError(UserError, ValueError):
    """A loss spec names an unknown loss or option, or a loss that does not fit the task."""


class LossSpecBase(BaseModel):
    """Base class of every loss spec. Subclasses set ``name`` to a ``Literal`` and add options.

    Class attributes a subclass sets:
        tasks: the task types the loss fits.
        reference: the independent implementation it is tested and benchmarked against.
        nonnegative_target: the loss models counts, so a target below 0 is invalid data (the
            data is checked where it is prepared, not by the loss on each call).
        task_options: for a task among ``tasks`` that only some option values fit, what to set
            (said when a configuration does not fit the task).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: ClassVar[frozenset[TaskType]] = frozenset()
    reference: ClassVar[str] = ""
    nonnegative_target: ClassVar[bool] = False
    task_options: ClassVar[Mapping[TaskType, str]] = {}

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
        """Return the ``nn.Module`` this spec describes (imports torch)."""
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


def _import_implementations() -> None:
    for module in _IMPLEMENTATIONS:
        importlib.import_module(module)


LOSS_SPECS: Registry[type[LossSpecBase]] = Registry(
    "loss", loader=_import_implementations, error=LossConfigError
)


def register_loss(cls: SpecT) -> SpecT:
    """Class decorator: add a spec class to the registry under its ``name`` default."""
    spec_cls: type[LossSpecBase] = cls
    name = spec_cls.model_fields["name"].default
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__}.name needs a string default, the loss's config name")
    if not spec_cls.tasks:
        raise TypeError(f"{cls.__name__} must declare the task types it fits")
    LOSS_SPECS.register(name, spec_cls)
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
        raise LossConfigError(
            f"a loss spec needs a 'name'; known losses: {', '.join(sorted(LOSS_SPECS))}"
        )
    cls = LOSS_SPECS.lookup(str(name))
    message = cls.unknown_options(data)
    if message is not None:
        raise LossConfigError(message)
    return cls.model_validate(dict(data))


class RegularizerSpec(BaseModel):
    """A weight penalty in config: ``{name: l1|l2|elastic_net, strength: λ, l1_ratio: ρ}``.

    The penalty is ``λ (ρ Σ|w| + (1 - ρ) Σw²)`` over weight matrices and kernels
    (:class:`lossflow.losses.regularizers.WeightPenalty`): ``l1`` is ρ = 1, ``l2`` is ρ = 0.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: RegularizerName
    strength: float = Field(description="λ >= 0, multiplies the whole penalty")
    l1_ratio: float | None = Field(
        None, description="elastic_net only: share ρ of the L1 term, in [0, 1]"
    )
    include_bias_and_norm: bool = Field(
        False, description="also penalise biases, 1-d and normalisation-layer parameters"
    )

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(str(k) for k in data if k not in cls.model_fields)
            if unknown:
                raise ValueError(
                    f"unknown option {', '.join(repr(k) for k in unknown)} for regulariser "
                    f"'{data.get('name')}'; valid options: {', '.join(sorted(cls.model_fields))}"
                )
        return data

    @model_validator(mode="after")
    def _check(self) -> RegularizerSpec:
        if self.name != "elastic_net" and self.l1_ratio is not None:
            raise ValueError(f"l1_ratio applies to elastic_net only, not to '{self.name}'")
        check_penalty(self.strength, self.ratio)
        return self

    @property
    def ratio(self) -> float:
        """ρ, the share of the L1 term: 1 for ``l1``, 0 for ``l2``, ``l1_ratio`` otherwise.

        Raises:
            ValueError: an ``elastic_net`` without ``l1_ratio``.
        """
        if self.name == "l1":
            return 1.0
        if self.name == "l2":
            return 0.0
        if self.l1_ratio is None:
            raise ValueError("regulariser 'elastic_net' needs l1_ratio in [0, 1]")
        return self.l1_ratio

    def build(self) -> WeightPenalty:
        """The penalty module (imports torch)."""
        from lossflow.losses.regularizers import WeightPenalty

        return WeightPenalty(
            self.strength, self.ratio, include_bias_and_norm=self.include_bias_and_norm
        )


def parse_regularizer_spec(data: Mapping[str, Any] | RegularizerSpec) -> RegularizerSpec:
    """Validate a mapping into a :class:`RegularizerSpec`."""
    return data if isinstance(data, RegularizerSpec) else RegularizerSpec.model_validate(data)


def build_regularizer(data: Mapping[str, Any] | RegularizerSpec) -> WeightPenalty:
    """Build the penalty module for a regulariser spec."""
    return parse_regularizer_spec(data).build()


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


def loss_id(
    spec: Mapping[str, Any] | LossSpecBase, regularizers: Iterable[RegularizerSpec] = ()
) -> str:
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
        hint = type(spec).task_options.get(task)
        how = f"; for a {task} task set {hint}" if hint else ""
        raise LossConfigError(
            f"loss '{spec.name}'{' as configured' if hint else ''} fits "
            f"{', '.join(sorted(fits)) or 'no task'} tasks, not a {task} task{how}; "
            f"losses for {task}: {', '.join(fitting)}"
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
    """A catalogue entry: what a loss (or a weight penalty) is called, what it fits and how it
    is configured. ``kind`` is ``"loss"`` (the ``loss`` section) or ``"penalty"`` (an entry of
    ``regularizers``)."""

    name: str
    tasks: tuple[TaskType, ...]
    summary: str
    reference: str
    parameters: tuple[LossParameter, ...]
    kind: Literal["loss", "penalty"] = "loss"


_PENALTIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "l1": ("L1 (lasso) weight penalty: λ Σ|w|", ("strength", "include_bias_and_norm")),
    "l2": ("L2 (ridge) weight penalty: λ Σw² (no 1/2)", ("strength", "include_bias_and_norm")),
    "elastic_net": (
        "Elastic net: λ (ρ Σ|w| + (1 - ρ) Σw²), ρ = l1_ratio",
        ("strength", "l1_ratio", "include_bias_and_norm"),
    ),
}


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("NoneType", "None")


def _parameters(
    cls: type[BaseModel], names: Iterable[str], required: Iterable[str] = ()
) -> tuple[LossParameter, ...]:
    must = set(required)
    return tuple(
        LossParameter(
            name=name,
            type=_type_name(cls.model_fields[name].annotation),
            required=cls.model_fields[name].is_required() or name in must,
            default=None
            if cls.model_fields[name].is_required() or name in must
            else cls.model_fields[name].default,
            description=cls.model_fields[name].description or "",
        )
        for name in names
    )


def available_losses() -> list[LossInfo]:
    """The catalogue: every registered loss with its task types and options (with defaults),
    then the weight penalties (``kind="penalty"``), which fit every task."""
    out = []
    for name in sorted(LOSS_SPECS):
        cls = LOSS_SPECS[name]
        doc = (cls.__doc__ or "").strip().splitlines()
        out.append(
            LossInfo(
                name=name,
                tasks=tuple(t for t in TASK_TYPES if t in cls.tasks),
                summary=doc[0] if doc else "",
                reference=cls.reference,
                parameters=_parameters(cls, [f for f in cls.model_fields if f != "name"]),
            )
        )
    for name, (summary, options) in _PENALTIES.items():
        out.append(
            LossInfo(
                name=name,
                tasks=TASK_TYPES,
                summary=summary,
                reference="the formula summed over the penalised weights",
                parameters=_parameters(RegularizerSpec, options, required=("l1_ratio",)),
                kind="penalty",
            )
        )
    return out
