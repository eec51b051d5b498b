"""The one reader of configuration: YAML files + group choices + overlays + ``a.b=c`` overrides.

Layout of a config directory::

    base.yaml            # the training run's defaults and ``defaults: {project: flights}``
    project/<name>.yaml  # one model's project: data_dir and tracking (registry URI, model name,
                         # experiment names) for every process, and per process (training,
                         # serving, monitoring, ab, retrain, compare) what differs for it
    data/<name>.yaml     # a section group: the whole ``data`` section for one dataset
    loss/<name>.yaml     # a section group: the ``loss`` section, one file per loss choice
    experiment/*.yaml    # training overlays: only what differs (may switch groups in defaults)
    serving/<name>.yaml  # the service's own file (``serving=<name>``, default ``default``)

Each process (training, serving, ...) is a :class:`ConfigKind`: which keys of ``base.yaml`` it
reads, which section groups it takes, and which folder holds its top-level files. Resolution
order: base, then the project's shared keys (``data_dir``, ``tracking``) and, for training, the
project's ``training`` section; then the chosen section-group files, then the chosen top-level
file, then (other processes) the project's section of that process, then dotted command-line
overrides. ``project=hotels`` picks a project (every process takes it: ``lossflow --project``
passes it to every command), ``loss=focal`` a group file, ``experiment=digits_cnn`` or
``serving=canary`` a top-level file, ``loss.gamma=3`` sets one key (the value is parsed as YAML).
Choosing a group replaces that section whole, so options of the previous loss cannot leak into
the new one. The resolved configuration names its project (``project``).

Every error names where the bad value came from (file or command line), the dotted key and what
was expected.
"""

from __future__ import annotations

import copy
import difflib
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from lossflow.errors import UserError

DEFAULT_CONFIG_DIR = Path("configs")
DEFAULTS_KEY = "defaults"
PROJECT = "project"
# What a project file holds: the keys every process shares, and one section per process.
PROJECT_SHARED: tuple[str, ...] = ("data_dir", "tracking")
PROJECT_SECTIONS: tuple[str, ...] = (
    "training",
    "serving",
    "monitoring",
    "ab",
    "retrain",
    "compare",
)

Model = TypeVar("Model", bound=BaseModel)
# A message that starts by naming its dotted key: "data.path: file x.csv does not exist".
_NAMED_KEY = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*): ")
Provenance = dict[tuple[str, ...], str]


class ConfigError(UserError, ValueError):
    """A configuration file or override is invalid; the message says where and why."""


@dataclass(frozen=True)
class ConfigKind(Generic[Model]):
    """How one process reads the config directory.

    Attributes:
        name: The process (``training``, ``serving``); used in messages.
        model: The typed configuration it validates into.
        folder: The folder of its top-level files (``experiment``, ``serving``): the chosen file
            is merged at the root of the configuration.
        default: The file of ``folder`` used when none is chosen; ``None``: no file.
        groups: Section groups it takes: a folder whose chosen file becomes that section.
        inherit: Keys of ``base.yaml`` it reads; ``None`` reads them all.
        example: An override shown in messages, e.g. ``port=8001``.
        section: Its section of a project file (``training``, ``serving``...).
    """

    name: str
    model: type[Model]
    folder: str
    default: str | None
    groups: tuple[str, ...] = ()
    inherit: tuple[str, ...] | None = None
    example: str = "trainer.max_epochs=5"
    section: str = "training"


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a YAML file.

    Raises:
        ConfigError: the file is not valid YAML (an impossible date such as 2013-02-30
            included) or does not hold a mapping.
    """
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, ValueError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a mapping, got {type(data).__name__}")
    return data


def _record(prov: Provenance, prefix: tuple[str, ...], value: Any, source: str) -> None:
    prov[prefix] = source
    if isinstance(value, Mapping):
        for key, sub in value.items():
            _record(prov, (*prefix, str(key)), sub, source)


def _merge(
    dst: dict[str, Any], src: Mapping[str, Any], source: str, prov: Provenance, at: tuple[str, ...]
) -> None:
    for key, value in src.items():
        path = (*at, str(key))
        if isinstance(value, Mapping) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, source, prov, path)
        else:
            dst[key] = copy.deepcopy(value)
            _record(prov, path, value, source)


def group_file(config_dir: Path, group: str, choice: str) -> Path:
    """``<config_dir>/<group>/<choice>.yaml``.

    Raises:
        ConfigError: no such file; the message lists the available choices.
    """
    path = config_dir / group / f"{choice}.yaml"
    if not choice or not path.is_file():
        known = sorted(p.stem for p in (config_dir / group).glob("*.yaml"))
        raise ConfigError(
            f"no {group} config named '{choice}' (looked for {path}); available: "
            f"{', '.join(known) or 'none'}"
        )
    return path


def _override_value(item: str, raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except (yaml.YAMLError, ValueError) as err:
        raise ConfigError(f"command line: {item!r}: the value is not valid YAML: {err}") from err


def _parse_overrides(
    kind: ConfigKind[Any], overrides: Sequence[str], config_dir: Path
) -> tuple[dict[str, str], list[tuple[str, Any]]]:
    choices: dict[str, str] = {}
    sets: list[tuple[str, Any]] = []
    fields = kind.model.model_fields
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"command line: override {item!r} must look like key=value (e.g. {kind.example})"
            )
        if key in kind.groups or key == PROJECT or (key == kind.folder and key not in fields):
            choices[key] = raw.strip()
        elif "." not in key and key not in fields and (config_dir / key).is_dir():
            raise ConfigError(
                f"command line: {item!r} chooses a file of {config_dir / key}/, which another "
                f"command reads; {kind.name} takes {_choices_hint(kind)} and dotted keys such "
                f"as {kind.example}"
            )
        else:
            sets.append((key, _override_value(item, raw)))
    return choices, sets


def _choices_hint(kind: ConfigKind[Any]) -> str:
    return ", ".join(f"{g}=<file in {g}/>" for g in (*kind.groups, kind.folder))


def _set_dotted(cfg: dict[str, Any], key: str, value: Any, prov: Provenance) -> None:
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:  # a missing or null section is created by the override
            child = node[part] = {}
            prov[tuple(parts[: i + 1])] = "command line"
        if not isinstance(child, dict):
            raise ConfigError(
                f"command line: cannot set '{key}': '{'.'.join(parts[: i + 1])}' is a value, "
                "not a section"
            )
        node = child
    node[parts[-1]] = value
    _record(prov, tuple(parts), value, "command line")


def _where(loc: tuple[str | int, ...], prov: Provenance) -> str:
    path = tuple(str(p) for p in loc)
    while path:
        if path in prov:
            return prov[path]
        path = path[:-1]
    return "defaults"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions and containers)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _fields_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The field names of the section at ``loc`` (best effort; empty when unknown)."""
    models = [model]
    for part in loc:
        if isinstance(part, int):
            continue
        nested = [
            m
            for current in models
            if part in current.model_fields
            for m in _models_in(current.model_fields[part].annotation)
        ]
        if not nested:
            break  # a free key (a variant name of dict[str, Model]) keeps the value's model
        models = nested
    return sorted({name for m in models for name in m.model_fields})


def explain(
    err: ValidationError, prov: Provenance, model: type[BaseModel] | None = None
) -> ConfigError:
    """One line per problem: where the value came from, the dotted key, what was expected.

    An unknown key names the closest valid one and lists the keys of its section.
    """
    lines = []
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = ".".join(str(p) for p in loc) or "(top level)"
        shown = loc and e["type"] != "missing" and "input" in e
        got = f" (got {e['input']!r})" if shown else ""
        message = str(e["msg"]).removeprefix("Value error, ")
        named = _NAMED_KEY.match(message)
        if e["type"] == "value_error" and named is not None:
            # A check across a section names its key itself ("data.path: ..."); its input is
            # the whole section, so it is not repeated.
            within = tuple(named.group(1).split("."))
            if within[: len(loc)] != tuple(str(p) for p in loc):
                within = (*(str(p) for p in loc), *within)
            lines.append(f"{_where(within, prov)}: {message}")
            continue
        if e["type"] == "extra_forbidden" and loc:
            got = ""
            valid = _fields_at(model, loc[:-1]) if model is not None else []
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            message = "unknown key" + (f" (did you mean '{close[0]}'?)" if close else "")
            if valid:
                message += f"; valid keys here: {', '.join(valid)}"
        lines.append(f"{_where(loc, prov)}: {key}: {message}{got}")
    return ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


def project_file(config_dir: Path, name: str) -> tuple[Path, dict[str, Any]]:
    """The project file ``<config_dir>/project/<name>.yaml`` and its mapping.

    Raises:
        ConfigError: no such project (the message lists them) or a key a project cannot hold.
    """
    path = group_file(config_dir, PROJECT, name)
    data = read_yaml(path)
    unknown = sorted(set(data) - {*PROJECT_SHARED, *PROJECT_SECTIONS})
    if unknown:
        raise ConfigError(
            f"{path}: {', '.join(unknown)}: a project file holds {', '.join(PROJECT_SHARED)} "
            f"(shared by every process) and a section per process: {', '.join(PROJECT_SECTIONS)}"
        )
    for key in PROJECT_SECTIONS:
        if not isinstance(data.get(key) or {}, dict):
            raise ConfigError(f"{path}: {key}: must be a mapping of that process's settings")
    return path, data


def resolve(
    kind: ConfigKind[Any], overrides: Sequence[str] = (), config_dir: Path = DEFAULT_CONFIG_DIR
) -> tuple[dict[str, Any], Provenance]:
    """Merge the YAML files and overrides of ``kind`` into one mapping, with where each key
    came from.

    Raises:
        ConfigError: a missing or invalid file, or a malformed override.
    """
    base_path = config_dir / "base.yaml"
    if not base_path.is_file():
        raise ConfigError(
            f"no base config at {base_path}; run from the project root or pass --config-dir"
        )
    base = read_yaml(base_path)
    choices, sets = _parse_overrides(kind, overrides, config_dir)
    top: dict[str, Any] = {}
    top_path: Path | None = None
    choice = choices.get(kind.folder, kind.default)
    if choice:
        top_path = group_file(config_dir, kind.folder, choice)
        top = read_yaml(top_path)
        _check_no_project_keys(top, top_path)
    top_defaults = dict(top.pop(DEFAULTS_KEY, None) or {})
    base_defaults = dict(base.pop(DEFAULTS_KEY, None) or {})
    project_name, project_from = _project_choice(choices, top_defaults, top_path, base_defaults)
    project: dict[str, Any] = {}
    project_path: Path | None = None
    if project_name:
        project_path, project = project_file(config_dir, project_name)
    own: dict[str, Any] = dict(project.get(kind.section) or {})
    own_defaults = dict(own.pop(DEFAULTS_KEY, None) or {})
    training = kind.section == "training"
    own_groups = {g: own.pop(g) for g in kind.groups if g in own}

    defaults: dict[str, Any] = {}
    if kind.groups:
        defaults.update(base_defaults)
        defaults.update(own_defaults)
        defaults.update(top_defaults)
        defaults.update({g: c for g, c in choices.items() if g in kind.groups})
        unknown = sorted(set(defaults) - set(kind.groups))
        if unknown:
            raise ConfigError(
                f"{DEFAULTS_KEY} name unknown groups {unknown}; groups: {', '.join(kind.groups)}"
            )
    elif own_defaults or top_defaults:
        where = f"{top_path}: " if top_defaults else f"{project_path}: {kind.section}."
        raise ConfigError(
            f"{where}{DEFAULTS_KEY}: {kind.name} has no file groups to choose; set its keys "
            "directly"
        )
    if kind.inherit is not None:
        base = {k: v for k, v in base.items() if k in kind.inherit}

    prov: Provenance = {}
    cfg: dict[str, Any] = {}
    _merge(cfg, base, str(base_path), prov, ())
    if project_path is not None:
        shared = {k: project[k] for k in PROJECT_SHARED if k in project}
        if kind.inherit is not None:
            shared = {k: v for k, v in shared.items() if k in kind.inherit}
        _merge(cfg, shared, str(project_path), prov, ())
        if training:  # the project's training section is part of its base
            _merge(cfg, own, str(project_path), prov, ())
    for group in kind.groups:
        if group in defaults:
            path = group_file(config_dir, group, str(defaults[group]))
            cfg[group] = {}
            prov[(group,)] = str(path)
            _merge(cfg[group], read_yaml(path), str(path), prov, (group,))
    if project_path is not None:  # the project's changes to its chosen group files
        _merge(cfg, own_groups, str(project_path), prov, ())
    if top_path is not None:
        _merge(cfg, top, str(top_path), prov, ())
    if project_path is not None and not training:
        _merge(cfg, own, str(project_path), prov, ())
    for key, value in sets:
        _set_dotted(cfg, key, value, prov)
    cfg[PROJECT] = project_name
    prov[(PROJECT,)] = project_from or str(base_path)
    return cfg, prov


def _check_no_project_keys(top: Mapping[str, Any], path: Path) -> None:
    """A process's own file cannot move a project's settings (every process must agree)."""
    found = [k for k in PROJECT_SHARED if k in top]
    if found:
        raise ConfigError(
            f"{path}: {', '.join(found)}: these are project settings that every command and flow "
            f"shares; set them in configs/{PROJECT}/<name>.yaml (and choose it with "
            f"{DEFAULTS_KEY}: {{{PROJECT}: <name>}} here, or lossflow --project <name>)"
        )


def _project_choice(
    choices: Mapping[str, str],
    top_defaults: dict[str, Any],
    top_path: Path | None,
    base_defaults: dict[str, Any],
) -> tuple[str | None, str | None]:
    """The project and where it was chosen: the command line, else the chosen file's
    ``defaults``, else ``base.yaml``'s.

    Raises:
        ConfigError: the command line and the chosen file name different projects.
    """
    from_file = top_defaults.pop(PROJECT, None)
    base_choice = base_defaults.pop(PROJECT, None)
    given = choices.get(PROJECT)
    if given is not None and from_file is not None and str(from_file) != given:
        raise ConfigError(
            f"{top_path} belongs to project {from_file!r} but project {given!r} was chosen "
            f"(lossflow --project or project=); run it with --project {from_file}"
        )
    if given is not None:
        return given, "command line"
    if from_file is not None:
        return str(from_file), str(top_path)
    return (None, None) if base_choice is None else (str(base_choice), None)


def load(
    kind: ConfigKind[Model], overrides: Sequence[str] = (), config_dir: Path = DEFAULT_CONFIG_DIR
) -> Model:
    """Read, merge and validate the configuration of one process.

    Raises:
        ConfigError: naming the file (or command line), the dotted key and what was expected.
    """
    cfg, prov = resolve(kind, overrides, config_dir)
    try:
        return kind.model.model_validate(cfg)
    except ValidationError as err:
        raise explain(err, prov, kind.model) from None


def load_from(
    kind: ConfigKind[Model],
    start: Mapping[str, Any],
    source: str,
    overrides: Sequence[str] = (),
    config_dir: Path = DEFAULT_CONFIG_DIR,
    changes: Mapping[str, Any] | None = None,
    changed_by: str = "changes",
) -> Model:
    """Validate a configuration that starts from ``start`` (a resolved configuration, such as a
    registered version's recipe) instead of the files: ``changes`` replace whole values (a loss
    spec, a section) first, then group choices (``loss=huber``: the section from its file,
    whole) and dotted overrides apply over it.

    Args:
        kind: the process.
        start: the resolved configuration to start from (not modified).
        source: what ``start`` is, named in errors (``lossflow-hotels v3's recipe``).
        overrides: ``group=<file>`` choices and ``a.b=c`` keys.
        config_dir: where the group files are.
        changes: dotted key -> value set before the overrides (a section is replaced whole).
        changed_by: what made the changes, named in errors (``retrain candidate huber``).

    Raises:
        ConfigError: an override that cannot apply (a project or top-level file choice: the
            start already has them), a missing group file, or an invalid value, naming where it
            came from.
    """
    choices, sets = _parse_overrides(kind, overrides, config_dir)
    refused = sorted(set(choices) - set(kind.groups))
    if refused:
        raise ConfigError(
            f"command line: {', '.join(f'{c}=' for c in refused)} cannot apply to {source}: it "
            "is already resolved; change its sections with "
            f"{', '.join(f'{g}=<file>' for g in kind.groups) or 'dotted keys'} and dotted keys"
        )
    prov: Provenance = {}
    cfg: dict[str, Any] = {}
    _merge(cfg, start, source, prov, ())
    for key, value in (changes or {}).items():
        _set_dotted(cfg, key, copy.deepcopy(value), prov)
        _record(prov, tuple(key.split(".")), value, changed_by)
    for group, choice in choices.items():
        path = group_file(config_dir, group, choice)
        cfg[group] = {}
        prov[(group,)] = str(path)
        _merge(cfg[group], read_yaml(path), str(path), prov, (group,))
    for key, value in sets:
        _set_dotted(cfg, key, value, prov)
    try:
        return kind.model.model_validate(cfg)
    except ValidationError as err:
        raise explain(err, prov, kind.model) from None
