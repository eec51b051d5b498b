"""``lossflow init``: a starting project from a team's CSV or Parquet file.

It reads the file, infers what each column is and writes two files under the config directory:
``data/<name>.yaml`` (the data section: source, path, columns, task, split) and
``project/<name>.yaml`` (the project: data directory, registered model, experiment names, and
the training settings that suit the data's size). Both are plain YAML to edit. It says what it
inferred and why, and refuses what it cannot decide with a question the user answers by a flag.

What is inferred (compare Ludwig's ``init_config``, which needs ``--target``, and AutoGluon's
``TabularPredictor``, which needs the label and infers the problem type from it):

- **target**: ``--target``, else the one column named ``target``, ``label``, ``class``,
  ``y``, ``outcome`` or ``response`` (any case); otherwise a question.
- **task**: ``--task``, else from the target: two values -> ``binary``; text with more ->
  ``multiclass`` (up to :data:`MAX_CLASSES`); numbers with a fraction, or integers with more
  than :data:`MAX_INT_CLASSES` values -> ``regression``; integers with 3 to
  :data:`MAX_INT_CLASSES` values could be either -> a question. ``ranking`` is never guessed:
  it needs ``--task ranking --group COLUMN``.
- **positive class** (binary): ``--positive-class``, else the obvious one (1, True, yes...);
  any other pair (``good``/``bad``) -> a question.
- **time column**: ``--time-column`` (``none`` for none), else the one column of dates (a
  datetime type, or text starting ``YYYY-MM-DD`` in every row); several -> a question. A
  numeric ``--time-column`` is read as Unix time.
- **features**: every other column (judged on the rows that have a target), numbers as
  ``numeric`` and text as ``categorical``, except columns ignored with a reason: empty,
  constant, a row number, an identifier or free text (text with a different value in most
  rows), another date column (lossflow derives no date features yet: add them to the file, e.g.
  month or weekday), and the group column.
- **rows without a target**: left out and counted (``missing_target: drop``).
- **split**: by time when there is a time column: the first 60% of the rows train, the next
  10% validate, the next 10% test, the last 20% are kept back as production traffic (for
  ``lossflow traffic`` and ``lossflow rehearse``), cut at month starts when the data spans at
  least :data:`MONTHLY_FROM_DAYS` days (else at days); without one, stratified (classification)
  or random fractions, 20% kept back as production.
- **training**: the task's default loss (``bce``, ``ce``, ``mse``, ``listmle``), a batch size
  of about a fiftieth of the training rows (32 to 2048) and enough epochs for about
  :data:`TARGET_STEPS` optimizer steps (early stopping ends it sooner).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, get_args

import pandas as pd
import yaml

from lossflow.config.common import Process
from lossflow.data.sources import parse_times
from lossflow.data.validation import DataValidationError, binary_classes, is_string_column
from lossflow.errors import UserError

TARGET_NAMES: Final = ("target", "label", "class", "y", "outcome", "response")
ID_NAMES: Final = re.compile(r"^(id|rownames|index|unnamed: ?0|row_?id|.*_id)$", re.IGNORECASE)
DATE_TEXT: Final = re.compile(r"^\d{4}-\d{2}-\d{2}")
MAX_CLASSES: Final = 100
MAX_INT_CLASSES: Final = 20
ID_SHARE: Final = 0.5
MONTHLY_FROM_DAYS: Final = 180
TARGET_STEPS: Final = 3000
PARTS: Final = (0.6, 0.7, 0.8)  # cumulative shares: train | val | test | production
# ListMLE (ranking) learns the order alone: ListNet's softmax of the relevance would depend on
# its unit (ratings 1-5 and counts in the hundreds give different targets).
DEFAULT_LOSS: Final = {"binary": "bce", "multiclass": "ce", "regression": "mse",
                       "ranking": "listmle"}  # fmt: skip
TASKS: Final = ("binary", "multiclass", "regression", "ranking")


class InitError(UserError):
    """``lossflow init`` cannot decide, or cannot read the file: the message asks the question
    and names the flag that answers it."""


@dataclass
class Column:
    """One column of the file: its role and why."""

    name: str
    role: str
    why: str


@dataclass
class Inferred:
    """What ``lossflow init`` inferred from a file (see the module)."""

    name: str
    path: Path
    source: str
    rows: int
    task: str
    target: str
    columns: list[Column]
    time: str | None
    group: str | None
    item: str | None
    positive_class: Any
    missing_target: int
    split: dict[str, Any]
    split_why: str
    trainer: dict[str, Any]
    trainer_why: str
    loss: str
    notes: list[str] = field(default_factory=list)

    def role(self, role: str) -> list[str]:
        """The columns of one role, in file order."""
        return [c.name for c in self.columns if c.role == role]

    def data_section(self) -> dict[str, Any]:
        """The ``data`` section (``configs/data/<name>.yaml``)."""
        columns: dict[str, Any] = {
            "numeric": self.role("numeric"),
            "categorical": self.role("categorical"),
            "target": self.target,
        }
        for key, value in (("time", self.time), ("group", self.group), ("item", self.item)):
            if value is not None:
                columns[key] = value
        ignored = self.role("ignore")
        if ignored:
            columns["ignore"] = ignored
        data: dict[str, Any] = {
            "source": self.source,
            "path": str(self.path),
            "task": self.task,
            "columns": columns,
            "split": self.split,
        }
        if self.task == "binary":  # written out even when obvious: the reader sees it
            data["positive_class"] = self.positive_class
        if self.missing_target:
            data["missing_target"] = "drop"
        return data

    def project_section(self) -> dict[str, Any]:
        """The project (``configs/project/<name>.yaml``)."""
        processes = get_args(Process)  # written out: the reader sees where each run goes
        return {
            "data_dir": f"data/{self.name}",
            "tracking": {
                "registered_model": self.name,
                "experiment": self.name,
                "experiments": {p: f"{self.name}-{p}" for p in processes},
            },
            "training": {
                "defaults": {"data": self.name, "loss": self.loss},
                "trainer": self.trainer,
            },
        }


def _read(path: Path) -> tuple[pd.DataFrame, str]:
    if not path.is_file():
        raise InitError(f"{path} does not exist; give the path of a CSV or Parquet file")
    suffixes = [s.lower() for s in path.suffixes]
    try:
        if suffixes[-1:] in ([".parquet"], [".pq"]):
            return pd.read_parquet(path), "parquet"
        if ".csv" in suffixes[-2:]:
            return pd.read_csv(path, low_memory=False), "csv"
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise InitError(f"{path} cannot be read ({type(err).__name__}: {err})") from err
    raise InitError(f"{path}: lossflow init reads .csv (or .csv.gz) and .parquet files")


def _name_of(path: Path, name: str | None) -> str:
    stem = name or path.name.split(".")[0]
    clean = re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-_")
    if not clean:
        raise InitError(f"cannot make a project name of {stem!r}; pass --name NAME")
    return clean


def _column(frame: pd.DataFrame, name: str, flag: str) -> str:
    if name not in frame.columns:
        raise InitError(
            f"{flag} {name}: no such column; the columns are {', '.join(map(str, frame.columns))}"
        )
    return name


def _target(frame: pd.DataFrame, target: str | None) -> tuple[str, str]:
    if target is not None:
        return _column(frame, target, "--target"), "given (--target)"
    named = [c for c in frame.columns if str(c).lower() in TARGET_NAMES]
    if len(named) == 1:
        return str(named[0]), f"the only column named like a target ({', '.join(TARGET_NAMES)})"
    raise InitError(
        "which column is the target (what the model predicts)? answer with --target COLUMN; "
        f"the columns are {', '.join(map(str, frame.columns))}"
    )


def _is_dates(series: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return True
    if not is_string_column(series):
        return False
    present = series.dropna().astype(str)
    return len(present) > 0 and bool(present.str.match(DATE_TEXT).all())


def _time(frame: pd.DataFrame, given: str | None, target: str) -> tuple[str | None, str]:
    if given is not None:
        if given.lower() == "none":
            return None, "none (--time-column none): the split draws rows at random"
        return _column(frame, given, "--time-column"), "given (--time-column)"
    dates = [str(c) for c in frame.columns if c != target and _is_dates(frame[c])]
    if len(dates) == 1:
        return dates[0], "the only column of dates"
    if dates:
        raise InitError(
            f"several columns hold dates ({', '.join(dates)}): which one orders the rows in "
            "time (the split and the replay follow it)? answer with --time-column COLUMN (or "
            "--time-column none)"
        )
    return None, "no column of dates: the split draws rows at random"


def _task(target: pd.Series, given: str | None) -> tuple[str, str]:
    values = target.dropna()
    distinct = values.nunique()
    if given is not None:
        if given not in TASKS:
            raise InitError(f"--task {given}: the tasks are {', '.join(TASKS)}")
        return given, "given (--task)"
    name = target.name
    if distinct < 2:
        raise InitError(f"the target {name!r} has {distinct} value(s): nothing to predict")
    if distinct == 2:
        return "binary", "the target has two values"
    if not pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        if distinct > MAX_CLASSES:
            raise InitError(
                f"the target {name!r} holds text with {distinct} values: too many classes for "
                f"multiclass (at most {MAX_CLASSES}); is it the right column (--target)?"
            )
        return "multiclass", f"the target holds text with {distinct} values"
    numbers = values.to_numpy(dtype="float64")
    if (numbers != numbers.round()).any():
        return "regression", "the target holds numbers with fractions"
    if distinct > MAX_INT_CLASSES:
        return "regression", f"the target holds {distinct} different whole numbers"
    raise InitError(
        f"the target {name!r} holds {distinct} different whole numbers: classes or amounts? "
        "answer with --task multiclass or --task regression"
    )


def _positive(target: pd.Series, given: str | None) -> tuple[Any, str]:
    labels = target.dropna()
    if given is not None:
        try:
            negative, positive = binary_classes(labels, given)
        except DataValidationError as err:
            raise InitError(f"--positive-class {given}: {err}") from None
        return positive, "given (--positive-class)"
    try:
        negative, positive = binary_classes(labels)
    except DataValidationError:
        a, b = (str(v) for v in pd.unique(labels)[:2])
        raise InitError(
            f"the target {target.name!r} has the values {a!r} and {b!r}: which one is the "
            "positive class (the one the model gives the probability of)? answer with "
            f"--positive-class {a} (or {b})"
        ) from None
    return positive, f"the obvious positive of {negative!r}/{positive!r}"


def _feature(frame: pd.DataFrame, name: str, rows: int) -> Column:
    series = frame[name]
    present = series.dropna()
    if present.empty:
        return Column(name, "ignore", "no value in any row")
    distinct = present.nunique()
    if distinct == 1:
        return Column(name, "ignore", f"one value ({present.iloc[0]!r}) in every row")
    if _is_dates(series):
        return Column(name, "ignore", "another date column: lossflow derives no date features "
                      "yet (add month or weekday columns to the file)")  # fmt: skip
    numeric = pd.api.types.is_numeric_dtype(series.dtype)
    if numeric and not pd.api.types.is_bool_dtype(series.dtype) and distinct == rows:
        values = series.to_numpy()
        steps = set(pd.Series(values).diff().dropna().tolist())
        if steps == {1} or ID_NAMES.match(str(name)):
            return Column(name, "ignore", "a row number (a different whole number in each row)")
    if not numeric and rows >= 100 and distinct > ID_SHARE * len(present):
        return Column(name, "ignore", f"text with a different value in most rows ({distinct} "
                      f"of {len(present)}): an identifier or free text")  # fmt: skip
    if not numeric and ID_NAMES.match(str(name)) and distinct == len(present):
        return Column(name, "ignore", "an identifier (named like one, unique per row)")
    if numeric:
        share = series.isna().mean()
        shown = f"{share:.0%}" if share >= 0.01 else "<1%"
        missing = f", {shown} missing (imputed)" if share > 0 else ""
        return Column(name, "numeric", f"numbers, {distinct} values{missing}")
    return Column(name, "categorical", f"text, {distinct} values")


def _boundaries(times: pd.Series) -> tuple[list[pd.Timestamp], str]:
    ordered = times.sort_values(ignore_index=True)
    span_days = (ordered.iloc[-1] - ordered.iloc[0]).days
    monthly = span_days >= MONTHLY_FROM_DAYS
    cuts: list[pd.Timestamp] = []
    for share in PARTS:
        at = ordered.iloc[min(len(ordered) - 1, int(share * len(ordered)))]
        cut = (at + pd.offsets.MonthBegin(0) if monthly else at.ceil("D")).normalize()
        if monthly and (cut - at).days > 15:  # nearer to the month's start than its end
            cut = (at - pd.offsets.MonthBegin(1)).normalize()
        if cuts and cut <= cuts[-1]:
            cut = cuts[-1] + (pd.offsets.MonthBegin(1) if monthly else pd.Timedelta(days=1))
        cuts.append(pd.Timestamp(cut))
    last = ordered.iloc[-1]
    if cuts[-1] > last or (ordered < cuts[0]).sum() < 10:
        raise InitError(
            f"the rows span {span_days} days, too few to split by time into train, validation, "
            "test and production; answer with --time-column none (a random split)"
        )
    unit = "month starts" if monthly else "days"
    return cuts, unit


def _split(
    frame: pd.DataFrame, task: str, time: str | None, group: str | None
) -> tuple[dict[str, Any], str]:
    if time is not None:
        times = parse_times(frame[time], f"time column {time!r}")
        cuts, unit = _boundaries(times)
        names = ("train_end", "val_end", "test_end")
        split = {
            "kind": "time",
            **{k: c.date().isoformat() for k, c in zip(names, cuts, strict=True)},
        }
        shares = [float((times < c).mean()) for c in cuts]
        why = (
            f"by {time}, cut at {unit}: train before {split['train_end']} ({shares[0]:.0%} of "
            f"the rows), validation to {split['val_end']}, test to {split['test_end']}, the "
            f"last {1 - shares[2]:.0%} kept back as production traffic"
        )
        return split, why
    kind = "stratified" if task in ("binary", "multiclass") and group is None else "random"
    split = {"kind": kind, "val_fraction": 0.1, "test_fraction": 0.1, "production_fraction": 0.2}
    why = f"{kind} fractions: 60% train, 10% validation, 10% test, 20% kept back as production"
    return split, why


def _trainer(train_rows: int, task: str) -> tuple[dict[str, Any], str]:
    units = max(1, train_rows)
    batch = int(min(2048, max(32, 2 ** round(math.log2(max(units / 50, 1))))))
    steps = max(1, math.ceil(units / batch))
    epochs = int(min(200, max(5, math.ceil(TARGET_STEPS / steps))))
    trainer = {"batch_size": batch, "max_epochs": epochs, "early_stopping": {"patience": 5}}
    what = "lists" if task == "ranking" else "rows"
    why = (
        f"batch_size {batch} (about a fiftieth of {units} training {what}), up to {epochs} "
        f"epochs (~{steps * epochs} steps; early stopping after 5 epochs without improvement)"
    )
    return trainer, why


def infer_project(
    path: Path,
    *,
    name: str | None = None,
    target: str | None = None,
    task: str | None = None,
    time_column: str | None = None,
    positive_class: str | None = None,
    group: str | None = None,
    item: str | None = None,
) -> Inferred:
    """What the project of ``path`` should be (see the module).

    Raises:
        InitError: something it cannot decide, asked as a question with its flag.
    """
    path = path.expanduser().absolute()
    frame, source = _read(path)
    if frame.empty:
        raise InitError(f"{path} has no rows")
    project = _name_of(path, name)
    target_name, target_why = _target(frame, target)
    time, time_why = _time(frame, time_column, target_name)
    group_name = None if group is None else _column(frame, group, "--group")
    item_name = None if item is None else _column(frame, item, "--item")
    if task == "ranking" and group_name is None:
        raise InitError(
            "a ranking task ranks the rows of each query: which column is the query (user, "
            "session)? answer with --group COLUMN"
        )
    if group_name is not None and task != "ranking":
        raise InitError(f"--group {group_name} is for ranking; add --task ranking")
    labels = frame[target_name]
    missing = int(labels.isna().sum())
    kind, task_why = _task(labels, task)
    positive, positive_why = (None, "")
    if kind == "binary":
        positive, positive_why = _positive(labels, positive_class)
    elif positive_class is not None:
        raise InitError(f"--positive-class is for binary targets; the task is {kind}")
    columns = [Column(target_name, "target", f"{target_why}; task {kind}: {task_why}")]
    if time is not None:
        columns.append(Column(time, "time", time_why))
    if group_name is not None:
        why = "given (--group): one list per value" + (
            " (per point in time: it is the time column too)" if group_name == time else ""
        )
        columns.append(Column(group_name, "group", why))
    labelled = frame[labels.notna()]  # what trains: features are judged on these rows
    for column in frame.columns:
        text = str(column)
        if text in (target_name, time, group_name):
            continue
        if text == item_name:
            columns.append(Column(text, "categorical", "given (--item): the items ranked, also "
                                  "a feature; popularity is the baseline"))  # fmt: skip
            continue
        columns.append(_feature(labelled, text, len(labelled)))
    if not any(c.role in ("numeric", "categorical") for c in columns):
        raise InitError(f"{path}: no column is left as a feature; check the file and --target")
    split, split_why = _split(labelled, kind, time, group_name)
    train_units = int(0.6 * (labelled[group_name].nunique() if group_name else len(labelled)))
    trainer, trainer_why = _trainer(train_units, kind)
    inferred = Inferred(
        name=project, path=path, source=source, rows=len(frame), task=kind, target=target_name,
        columns=columns, time=time, group=group_name, item=item_name,
        positive_class=positive,
        missing_target=missing, split=split, split_why=split_why, trainer=trainer,
        trainer_why=trainer_why, loss=DEFAULT_LOSS[kind],
    )  # fmt: skip
    if positive_why:
        inferred.notes.append(f"positive class {positive!r}: {positive_why}")
    if missing:
        inferred.notes.append(
            f"{missing} of {len(frame)} rows have no target: they are left out of training and "
            "counted "
            "(data.missing_target: drop)"
        )
    return inferred


def write_project(
    inferred: Inferred, config_dir: Path, *, force: bool = False
) -> tuple[Path, Path]:
    """Write ``data/<name>.yaml`` and ``project/<name>.yaml`` under ``config_dir``.

    Raises:
        InitError: ``config_dir`` is not a lossflow config directory, or a file exists and
            ``force`` is not set.
    """
    if not (config_dir / "base.yaml").is_file():
        raise InitError(
            f"{config_dir} is not a lossflow config directory (no base.yaml); run from the "
            "project root or pass --config-dir"
        )
    data_path = config_dir / "data" / f"{inferred.name}.yaml"
    project_path = config_dir / "project" / f"{inferred.name}.yaml"
    existing = [p for p in (data_path, project_path) if p.exists()]
    if existing and not force:
        raise InitError(
            f"{', '.join(map(str, existing))} already exist: choose another --name, or pass "
            "--force to replace them"
        )
    header = f"# Written by `lossflow init {inferred.path.name}`: what it inferred, to edit.\n"
    reasons = "".join(f"#   {c.name}: {c.role} ({c.why})\n" for c in inferred.columns)
    for path, body, lead in (
        (data_path, inferred.data_section(), header + "# Columns:\n" + reasons
         + f"# Split: {inferred.split_why}\n"),
        (project_path, inferred.project_section(), header + "# Training: "
         + inferred.trainer_why + "\n"),
    ):  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(lead + yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    return data_path, project_path
