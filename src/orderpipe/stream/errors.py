"""What a failure in the consumer's write path means, in one place: the error taxonomy, the
database's faults (`db.errors`) and Kafka's, and the fatal stop.

- content (value out of range or too long, CHECK/NOT NULL refused): dead-letter the message.
- transient (connection lost, server gone, lock timeout, deadlock, read-only during a
  failover, too many connections, a retriable Kafka error): pause, retry with capped backoff
  and jitter, commit nothing.
- fatal (permission denied, missing table, a bug, a model that fails, an unknown server
  error): stop, commit nothing, exit 1; a restart after the fix carries on with no loss.

Anything orderpipe cannot name is fatal: stopping loses nothing (the offsets stay uncommitted),
while guessing "content" would dead-letter good data and guessing "transient" would stall the
partitions forever.
"""

from __future__ import annotations

from orderpipe.core.errors import OrderpipeError
from orderpipe.db.errors import Fault, database_fault, is_database_error, reason_of


class StreamStopped(OrderpipeError):
    """A fatal fault: the consumer stopped and committed nothing of the batch it was storing."""

    @classmethod
    def because(cls, exc: BaseException, messages: int) -> StreamStopped:
        what = "database error" if is_database_error(exc) else type(exc).__name__
        return cls(
            f"stream consumer stopped on a {what} that retrying cannot fix: {reason_of(exc)}; "
            f"nothing of the failing batch ({messages:,} messages) was committed: fix the cause "
            "and restart, the consumer carries on from there"
        )


def classify(exc: BaseException) -> Fault:
    """The fault of a failure in the write path (database, DLQ producer, or our own code)."""
    fault = database_fault(exc)
    if fault is not None:
        return fault
    if _is_retriable_kafka_error(exc):
        return Fault.transient
    if isinstance(exc, OrderpipeError) and exc.__cause__ is not None:
        return classify(exc.__cause__)  # a driver error orderpipe put into words
    return Fault.fatal


def _is_retriable_kafka_error(exc: BaseException) -> bool:
    try:
        from aiokafka.errors import KafkaError, KafkaTimeoutError
    except ImportError:  # pragma: no cover - aiokafka is a dependency
        return False
    if isinstance(exc, KafkaTimeoutError):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))
