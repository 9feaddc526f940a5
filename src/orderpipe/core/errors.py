"""The one exception type a user sees: a domain failure with a one-line message.

The CLI turns it into a red line and exit code 1; `--debug` adds the traceback.
"""


class OrderpipeError(Exception):
    """A failure the user can act on; its message is one line that says what to do."""


class ConfigError(OrderpipeError):
    """A setting has a value orderpipe cannot use."""


class UsageError(OrderpipeError):
    """The command was given something it cannot use (a directory as input...): exit code 2."""


class DiskFull(OrderpipeError):
    """No space was left while writing an output (see `fileio.disk_full_as_error`)."""


class Terminated(OrderpipeError):
    """The command was asked to stop by SIGTERM, and stopped cleanly: exit code 143."""


def first_line(exc: BaseException, *, named: bool = False) -> str:
    """The first line of an exception's message, or its type's name when the message is empty.

    A wrapped database error (SQLAlchemy's `orig`) speaks through the driver's own message.
    `named=True` puts the type's name in front (once: not when the message already starts with
    it), for reasons read without the context that says what failed.
    """
    text = str(getattr(exc, "orig", None) or exc).strip()
    name = type(exc).__name__
    if not text:
        return name
    line = text.splitlines()[0]
    return f"{name}: {line}" if named and not line.startswith(name) else line
