"""The clients shared by every invocation in a process, created once.

Azure Functions runs a Python worker's async functions on one event loop, so
the async clients (storage, HTTP) are created lazily on first use, inside that
loop, and kept for the life of the process. Tests build their own Runtime.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from proactive.config import ConfigError, Settings

if TYPE_CHECKING:
    import aiohttp
    import httpx
    from azure.data.tables.aio import TableClient, TableServiceClient
    from azure.storage.queue.aio import QueueServiceClient

    from proactive.delivering.pacing import ConversationPacer, TenantPacer
    from proactive.receiving.auth import ActivityAuthenticator
    from proactive.storage.deliveries import DeliveryStore
    from proactive.storage.progress import Campaigns
    from proactive.storage.queues import Outbox
    from proactive.storage.references import ReferenceStore
    from proactive.storage.table_rest import RestTableClient
    from proactive.teams.clouds import Cloud
    from proactive.teams.connector import ConnectorClient

log = logging.getLogger(__name__)

REFERENCES_TABLE = "references"
DELIVERIES_TABLE = "deliveries"
ACTIVITIES_TABLE = "activities"
PACING_TABLE = "pacing"
SENDS_TABLE = "sends"
SCHEDULES_TABLE = "schedules"


@dataclass
class Runtime:
    settings: Settings
    cloud: Cloud
    http: httpx.AsyncClient
    table_service: TableServiceClient
    queue_service: QueueServiceClient
    references: ReferenceStore
    deliveries: DeliveryStore
    campaigns: Campaigns
    outbox: Outbox
    connector: ConnectorClient
    authenticator: ActivityAuthenticator
    tenant_pacer: TenantPacer
    conversation_pacer: ConversationPacer
    # The session of the hot-path tables' RestTableClients (None: they use the SDK).
    table_http: aiohttp.ClientSession | None = None

    @property
    def activities_table(self) -> TableClient:
        return self.table_service.get_table_client(self.settings.table_name(ACTIVITIES_TABLE))

    @property
    def schedules_table(self) -> TableClient:
        """Scheduled sends (`proactive.scheduling.timer`)."""
        return self.table_service.get_table_client(self.settings.table_name(SCHEDULES_TABLE))

    @classmethod
    async def create(cls, settings: Settings, *, http: httpx.AsyncClient | None = None) -> Runtime:
        import httpx
        from azure.data.tables.aio import TableServiceClient
        from azure.storage.queue.aio import QueueServiceClient
        from httpx_aiohttp import AiohttpTransport

        from proactive.delivering.pacing import ConversationPacer, TenantPacer
        from proactive.receiving.auth import build_authenticator
        from proactive.storage.deliveries import DeliveryStore
        from proactive.storage.progress import Campaigns
        from proactive.storage.queues import Outbox, ensure_queue
        from proactive.storage.references import ReferenceStore
        from proactive.storage.table_rest import (
            RestTableClient,
            new_session,
            parse_connection_string,
        )
        from proactive.teams.clouds import resolve_cloud
        from proactive.teams.connector import ConnectorClient
        from proactive.teams.credentials import shared_token_provider

        check_settings(settings)
        # The SDK logs every storage request at INFO; its URLs name users and tenants.
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(
            logging.WARNING)
        cloud = resolve_cloud(settings)
        if http is None:
            http = httpx.AsyncClient(transport=AiohttpTransport(),
                                     limits=httpx.Limits(max_connections=64))
        tokens = shared_token_provider(settings, cloud) if settings.has_credentials else None
        authenticator = build_authenticator(settings, cloud, http)
        table_service = TableServiceClient.from_connection_string(settings.storage_connection)
        queue_service = QueueServiceClient.from_connection_string(settings.storage_connection)
        for name in (REFERENCES_TABLE, DELIVERIES_TABLE, ACTIVITIES_TABLE, PACING_TABLE,
                     SENDS_TABLE, SCHEDULES_TABLE):
            await table_service.create_table_if_not_exists(settings.table_name(name))
        queue = queue_service.get_queue_client(settings.outbox_queue)
        poison = queue_service.get_queue_client(settings.poison_queue)
        for client in (queue, poison):
            await ensure_queue(client)
        # The tables every message touches go through the thin REST client
        # (proactive/table_rest.py: ~0.1 ms of CPU per request instead of ~0.7 ms).
        # It signs with the account key; other connection strings keep the SDK.
        # Campaigns needs entity-group transactions, which only the SDK has.
        try:
            parse_connection_string(settings.storage_connection)
            table_http = new_session()
        except ValueError:
            table_http = None

        def hot(name: str) -> TableClient | RestTableClient:
            if table_http is None:
                return table_service.get_table_client(settings.table_name(name))
            return RestTableClient.from_connection_string(
                settings.storage_connection, settings.table_name(name), session=table_http)

        return cls(
            settings=settings,
            cloud=cloud,
            http=http,
            table_service=table_service,
            queue_service=queue_service,
            references=ReferenceStore(hot(REFERENCES_TABLE)),
            deliveries=DeliveryStore(
                hot(DELIVERIES_TABLE),
                lease=timedelta(seconds=settings.claim_lease_seconds)),
            campaigns=Campaigns(
                table_service.get_table_client(settings.table_name(SENDS_TABLE))),
            outbox=Outbox(queue, poison),
            connector=ConnectorClient(http, tokens, cloud, local_dev=settings.local_dev),
            authenticator=authenticator,
            tenant_pacer=TenantPacer(hot(PACING_TABLE), rate=settings.tenant_rps),
            conversation_pacer=ConversationPacer(),
            table_http=table_http,
        )

    async def close(self) -> None:
        await self.http.aclose()
        await self.table_service.close()
        await self.queue_service.close()
        if self.table_http is not None:
            await self.table_http.close()


def check_settings(settings: Settings) -> None:
    """Refuse combinations that would weaken security or can't work."""
    if settings.cloud_override and os.environ.get("WEBSITE_INSTANCE_ID"):
        raise ConfigError("PROACTIVE_CLOUD_OVERRIDE is for tests only and is refused when "
                          "running in Azure")
    if settings.local_dev and settings.has_credentials:
        raise ConfigError(
            "PROACTIVE_LOCAL_DEV is on while bot credentials are configured: local "
            "development mode accepts unauthenticated activities and is refused with "
            "real credentials. Turn one of them off.")
    if not settings.local_dev and not settings.app_id:
        raise ConfigError("MicrosoftAppId is not set (or set PROACTIVE_LOCAL_DEV=true "
                          "for local development without credentials)")
    if settings.local_dev:
        log.warning("LOCAL DEVELOPMENT MODE: activities without a token are accepted from "
                    "loopback serviceUrls. Never enable this in Azure.")


_runtime: Runtime | None = None
_lock: asyncio.Lock | None = None


async def close_runtime() -> None:
    """Close the process's Runtime, if one was made (at host shutdown)."""
    global _runtime
    if _runtime is not None:
        await _runtime.close()
        _runtime = None


async def get_runtime() -> Runtime:
    """The process's Runtime, created on first call from the app settings."""
    global _runtime, _lock
    if _runtime is not None:
        return _runtime
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        if _runtime is None:
            _runtime = await Runtime.create(Settings.from_env())
    return _runtime
