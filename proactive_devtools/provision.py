"""Create the tables and queues the app uses (`proactive.runtime.storage_names`),
for local development and tests. In Azure the deployment creates them; the app
itself never does at start (it only creates one it finds missing)."""

from __future__ import annotations

import contextlib

from azure.core.exceptions import ResourceExistsError

from proactive.config import Settings
from proactive.runtime import storage_names
from proactive.storage import credentials
from proactive.storage.credentials import StorageTokens


async def provision(settings: Settings, tokens: StorageTokens | None = None) -> None:
    """Create every table and queue of `settings` that does not exist yet.
    `tokens`: the process's token source when storage is identity-based."""
    names = storage_names(settings)  # the SDK knows UseDevelopmentStorage=true
    async with credentials.table_service(settings, tokens) as tables:
        for table in names.tables:
            await tables.create_table_if_not_exists(table)
    async with credentials.queue_service(settings, tokens) as queues:
        for queue in names.queues:
            with contextlib.suppress(ResourceExistsError):
                await queues.create_queue(queue)
