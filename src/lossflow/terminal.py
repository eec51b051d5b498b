"""How lossflow's commands talk to a terminal: a user's mistake is one message, its traceback goes
to the log file; a bug keeps its traceback.

A :class:`~lossflow.errors.UserError` raised anywhere under a command (inside a Prefect task, in
the service's startup) reaches the terminal once, as its message. Prefect and uvicorn log the
same exception with its traceback on their own; :func:`quiet_user_errors` filters those records
out of the console handlers (Prefect's API handler still sends them to the Prefect UI), and
:func:`report` appends the full traceback to :func:`log_file`.
"""

from __future__ import annotations

import logging
import os
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from lossflow.errors import UserError

LOG_FILE_ENV: Final = "LOSSFLOW_LOG_FILE"
DEBUG_ENV: Final = "LOSSFLOW_DEBUG"


def log_file() -> Path:
    """Where tracebacks of user errors go: ``$LOSSFLOW_LOG_FILE``, else
    ``$XDG_STATE_HOME/lossflow/lossflow.log`` (``~/.local/state/lossflow/lossflow.log``)."""
    configured = os.environ.get(LOG_FILE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    state = os.environ.get("XDG_STATE_HOME", "").strip() or str(Path.home() / ".local" / "state")
    return Path(state) / "lossflow" / "lossflow.log"


def debug_enabled() -> bool:
    """Whether ``--debug`` (or ``LOSSFLOW_DEBUG=1``) asked for tracebacks on the terminal."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


def user_error_in(exc: BaseException | None) -> UserError | None:
    """The :class:`UserError` that ``exc`` is or was raised from, if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def report(err: BaseException, command: str) -> Path | None:
    """Append ``err``'s traceback to the log file; return the file (``None`` if unwritable)."""
    path = log_file()
    text = "".join(traceback.format_exception(err))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"--- {datetime.now(UTC).isoformat()} lossflow {command}\n{text}\n")
    except OSError:
        return None
    return path


KEEP: Final = "user_error_message"
"""``extra={KEEP: True}`` on a record carrying a user error keeps it, without its traceback."""


class QuietUserErrors(logging.Filter):
    """Keeps records about a :class:`UserError` off the console: those carrying one as
    ``exc_info`` (unless marked with :data:`KEEP`: then only the traceback goes) and later records
    that repeat its message (Prefect's "Finished in state Failed(...)", uvicorn's traceback).

    Args:
        strip_only: keep every record, only without the traceback: for processes that go on
            after the error (a scheduler whose run failed), where nothing else reports it.
    """

    def __init__(self, strip_only: bool = False) -> None:
        super().__init__()
        self.strip_only = strip_only
        self.messages: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        """``False`` for records about a user error already (or now) seen."""
        err = user_error_in(record.exc_info[1] if record.exc_info else None)
        if err is not None:
            self.messages.add(str(err))
            if getattr(record, KEEP, False) or self.strip_only:
                record.exc_info = None
                record.exc_text = None
                return True
            return False
        if self.messages and not self.strip_only:
            text = record.getMessage()
            return not any(message in text for message in self.messages)
        return True


def quiet_user_errors(
    logger: logging.Logger | None = None, *, strip_only: bool = False
) -> QuietUserErrors:
    """Attach one :class:`QuietUserErrors` to every handler of ``logger`` (default: root)."""
    quiet = QuietUserErrors(strip_only)
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, QuietUserErrors) for f in handler.filters):
            handler.addFilter(quiet)
    return quiet


def quiet_console(*names: str, level: int = logging.WARNING) -> None:
    """Show only ``level`` and above of the ``names`` loggers on the terminal; what they send
    elsewhere (Prefect's API handler: the UI's run logs) is unchanged."""
    for name in names:
        logger = logging.getLogger(name)
        for candidate in (logger, logging.getLogger()):
            for handler in candidate.handlers:
                if isinstance(handler, logging.StreamHandler) and not isinstance(
                    handler, logging.FileHandler
                ):
                    handler.addFilter(_BelowFrom(name, level))


class _BelowFrom(logging.Filter):
    def __init__(self, prefix: str, level: int) -> None:
        super().__init__()
        self.prefix = prefix
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        from_it = record.name == self.prefix or record.name.startswith(self.prefix + ".")
        return not from_it or record.levelno >= self.level
