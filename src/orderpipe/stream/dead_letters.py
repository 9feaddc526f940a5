"""The dead letters as the report reads them: `<topic>.dlq`'s size and its letters by reason,
asked of the configured broker (reads only: no group joined, no offset committed).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from orderpipe.core.errors import OrderpipeError, first_line
from orderpipe.stream.admin import collect_status
from orderpipe.stream.kafka import KafkaEndpoint, cluster_metadata

if TYPE_CHECKING:
    from orderpipe.core.settings import Settings
    from orderpipe.stream.admin import DlqSummary


def read_dead_letters(settings: Settings) -> DlqSummary:
    """The DLQ of the configured topic, counted by reason; an OrderpipeError (the reason, with
    its type's name) when the broker does not answer."""
    from aiokafka.errors import KafkaError

    endpoint = KafkaEndpoint.from_settings(settings)

    async def read() -> Any:
        await cluster_metadata(endpoint, 3.0)
        return await asyncio.wait_for(
            collect_status(endpoint, settings.kafka_topic, settings.kafka_group_id), 20
        )

    try:
        status = asyncio.run(read())
    except (KafkaError, OSError, TimeoutError, OrderpipeError) as exc:
        raise OrderpipeError(first_line(exc, named=True)) from None
    return status.dlq
