"""What a failure in the consumer's write path means: wait for the database, or not.

Content errors (the message's fault) are mostly found before the write, by the shared cleaning
(`stream.messages`); a write that fails is either transient (pause and retry) or not (the
consumer then tries the batch's rows one by one and dead-letters those the database refuses).
"""

from __future__ import annotations


def is_transient(exc: BaseException) -> bool:
    """Database errors worth waiting for (server down, connection lost, lock timeouts)."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def reason_of(exc: BaseException) -> str:
    """The driver's first line for a database error, the exception's otherwise."""
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__
