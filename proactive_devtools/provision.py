"""Create the tables and queues the app uses (`proactive.runtime.storage_names`),
for local development and tests. In Azure the deployment creates them; the app
itself never does at start (it only creates one it finds missing)."""

from __future__ import annotations

import contextlib

from azure.core.exceptions import ResourceExistsError
from azure.data.tables.aio import TableServiceClient
from azure.storage.queue.aio import QueueServiceClient

from proactive.config import Settings
from proactive.runtime import storage_names


async def provision(settings: Settings) -> None:
    """Create every table and queue of `settings` that does not exist yet."""
    conn = settings.storage_connection  # the SDK knows UseDevelopmentStorage=true
    names = storage_names(settings)
    async with TableServiceClient.from_connection_string(conn) as tables:
        for table in names.tables:
            await tables.create_table_if_not_exists(table)
    async with QueueServiceClient.from_connection_string(conn) as queues:
        for queue in names.queues:
            with contextlib.suppress(ResourceExistsError):
                await queues.create_queue(queue)
