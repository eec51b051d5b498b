"""The replay's one error."""

from lossflow.errors import UserError


class TrafficError(UserError, RuntimeError):
    """The service cannot be replayed against (unreachable, not lossflow, data does not fit)."""
