"""What every flow's tasks share: retries of what may be briefly unreachable (MLflow, the log
database), never of a user's mistake."""

from __future__ import annotations

from typing import Any, Final

from lossflow.errors import UserError

RETRIES: Final = 2
RETRY_DELAY_S: Final = 3


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a failed task unless it failed on a :class:`UserError` (that does not go away)."""
    return not isinstance(state.result(raise_on_failure=False), UserError)


# ``@task(**RETRYING)``: the retry settings of a task that talks to MLflow or the log.
RETRYING: Final[dict[str, Any]] = {
    "retries": RETRIES,
    "retry_delay_seconds": RETRY_DELAY_S,
    "retry_condition_fn": retry_unless_user_error,
}


def tag_flow_run(tags: list[str]) -> None:
    """Add ``tags`` to the flow run this is called in (the Prefect UI filters runs by them);
    nothing outside a flow run."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    run_id = flow_run.id
    if not run_id:
        return
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(run_id)
        client.update_flow_run(run_id, tags=sorted({*current.tags, *tags}))


def flow_run_label() -> str | None:
    """``prefect flow run NAME ID`` of the flow run this is called in; ``None`` outside one."""
    from prefect.runtime import flow_run

    return f"prefect flow run {flow_run.name} {flow_run.id}" if flow_run.id else None
