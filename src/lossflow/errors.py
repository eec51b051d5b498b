"""The one base class of the mistakes a user can fix.

Library code raises a subclass (``ConfigError``, ``DataValidationError``, ``ModelLoadError``...)
whose message says what is wrong and what to do. The composition roots (the CLI, the flows, the
service) show such an error as that message alone and keep its traceback for the log; any
other exception is a bug and keeps its traceback on the terminal.
"""


class UserError(Exception):
    """A mistake the user can fix: a config value, a data file, a missing model, a bad request."""
