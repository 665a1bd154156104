"""The clients shared by every invocation in a process, created once.

Azure Functions runs a Python worker's async functions on one event loop, so
the async clients (storage, HTTP) are created lazily on first use, inside that
loop, and kept for the life of the process. Tests build their own Runtime.

The Runtime builds; it doesn't decide. It makes no storage call: the tables and
queues (`storage_names`) are created by the deployment or the local tools, and
otherwise on first use (`proactive.storage.autocreate`). Settings are checked
once, by `proactive.config` (`load_settings`); when they can't be used,
`get_runtime` raises the same ConfigError at every call and the triggers say
so instead of running.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from proactive.config import Settings, load_settings
from proactive.errors import ConfigError

if TYPE_CHECKING:
    import aiohttp
    import httpx
    from azure.data.tables.aio import TableClient, TableServiceClient
    from azure.storage.queue.aio import QueueServiceClient

    from proactive.delivering.conversation_pacing import ConversationPacer
    from proactive.delivering.optouts import OptOuts
    from proactive.delivering.pacing import TenantPacer
    from proactive.receiving.auth import ActivityAuthenticator
    from proactive.storage.credentials import StorageTokens
    from proactive.storage.deliveries import DeliveryStore
    from proactive.storage.preferences import PreferenceStore
    from proactive.storage.progress import Campaigns
    from proactive.storage.queues import Outbox
    from proactive.storage.references import ReferenceStore
    from proactive.storage.table_rest import RestTableClient
    from proactive.teams.clouds import Cloud
    from proactive.teams.connector import ConnectorClient
    from proactive.teams.graph import GraphClient

log = logging.getLogger(__name__)

REFERENCES_TABLE = "references"
DELIVERIES_TABLE = "deliveries"
ACTIVITIES_TABLE = "activities"
PACING_TABLE = "pacing"
SENDS_TABLE = "sends"
SCHEDULES_TABLE = "schedules"
PREFERENCES_TABLE = "preferences"
TABLES = (REFERENCES_TABLE, DELIVERIES_TABLE, ACTIVITIES_TABLE, PACING_TABLE, SENDS_TABLE,
          SCHEDULES_TABLE, PREFERENCES_TABLE)


@dataclass(frozen=True)
class StorageNames:
    tables: tuple[str, ...]
    queues: tuple[str, ...]


def storage_names(settings: Settings) -> StorageNames:
    """Every table and queue the app uses, as named by `settings`: what the
    deployment and the local tools create, and what checks of them compare."""
    return StorageNames(
        tables=tuple(settings.table_name(base) for base in TABLES),
        queues=(settings.outbox_queue, settings.poison_queue),
    )


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
    # Who stopped what: changes and the send path's check (delivering/optouts.py).
    opt_outs: OptOuts
    # The session of the hot-path tables' RestTableClients (None: they use the SDK).
    table_http: aiohttp.ClientSession | None = None
    # The Connector calls' own session (None: they go through `http`).
    connector_http: aiohttp.ClientSession | None = None
    # Identity-based storage: the one credential and token every storage client
    # shares (None with a connection string).
    storage_tokens: StorageTokens | None = None
    # Microsoft Graph (group audiences, UPNs, proactive install), paced per
    # tenant in rows of its own: None without credentials outside local dev.
    graph: GraphClient | None = None
    graph_pacer: TenantPacer | None = None
    # Per tenant: this process's deliveries between claim and record (send.py).
    _in_flight: dict[str, asyncio.Semaphore] = field(default_factory=dict, repr=False)

    def in_flight(self, tenant: str) -> asyncio.Semaphore:
        """The bound on the tenant's deliveries in flight in this process
        (PROACTIVE_MAX_CALLS_IN_FLIGHT): what a crash can leave unknown."""
        gate = self._in_flight.get(tenant)
        if gate is None:
            gate = self._in_flight[tenant] = asyncio.Semaphore(
                max(1, self.settings.max_calls_in_flight))
        return gate

    @property
    def activities_table(self) -> TableClient:
        return self.sdk_table(ACTIVITIES_TABLE)

    @property
    def schedules_table(self) -> TableClient:
        """Scheduled sends (`proactive.scheduling.timer`)."""
        return self.sdk_table(SCHEDULES_TABLE)

    @property
    def preferences(self) -> PreferenceStore:
        """Users' opt-outs as stored (`proactive.storage.preferences`); change
        them through `opt_outs`, which tells the other instances."""
        return self.opt_outs.store

    def sdk_table(self, base: str, *, create: bool = True) -> TableClient:
        """The SDK client of table `base` (prefixed), created on first use if
        missing (`create` off: a missing table is a NotFound, for a listing)."""
        if create:
            return _sdk_table(self.table_service, self.settings.table_name(base))
        from proactive.storage.autocreate import checked

        name = self.settings.table_name(base)
        return checked(self.table_service.get_table_client(name), f"table {name}")

    @classmethod
    async def create(cls, settings: Settings, *, http: httpx.AsyncClient | None = None,
                     storage_tokens: StorageTokens | None = None,
                     request_path: bool = False,
                     connector_http: aiohttp.ClientSession | None = None) -> Runtime:
        """`storage_tokens`: identity-based storage's token source (default: made
        from the settings' credential; tests pass one of their own).
        `request_path`: the HTTP API's Runtime, whose storage clients give up
        soon (REQUEST_PATH_STORAGE): a producer's HTTP client waits seconds, not
        the minutes the SDKs' retries take while storage is unreachable.
        `connector_http`: the session the Connector calls go over (default: made
        by `connector_session` when `http` is not given); the Runtime closes it."""
        import httpx
        from httpx_aiohttp import AiohttpTransport

        from proactive.delivering.conversation_pacing import ConversationPacer
        from proactive.delivering.optouts import OptOuts
        from proactive.delivering.pacing import TenantPacer
        from proactive.receiving.auth import build_authenticator
        from proactive.storage import credentials as storage
        from proactive.storage.autocreate import on_demand
        from proactive.storage.deliveries import DeliveryStore
        from proactive.storage.preferences import PreferenceStore
        from proactive.storage.progress import Campaigns
        from proactive.storage.queues import Outbox, ensure_queue
        from proactive.storage.references import ReferenceStore
        from proactive.storage.seal import Seal
        from proactive.storage.table_rest import new_session
        from proactive.teams.clouds import resolve_cloud
        from proactive.teams.connector import ConnectorClient
        from proactive.teams.credentials import shared_token_provider

        settings.validate()
        if settings.local_dev:
            log.warning("LOCAL DEVELOPMENT MODE: activities without a token are accepted "
                        "from loopback serviceUrls. Never enable this in Azure.")
        # Libraries log every request at INFO, whole URLs that name users and
        # conversations: WARNING for them (README "Logs").
        from proactive.telemetry import quiet_libraries

        quiet_libraries()
        cloud = resolve_cloud(settings)
        if http is None:
            http = httpx.AsyncClient(transport=AiohttpTransport(),
                                     limits=httpx.Limits(max_connections=64))
            # The Connector calls over aiohttp itself: a third of httpx's CPU per call.
            if connector_http is None:
                connector_http = connector_session()
        tokens = shared_token_provider(settings, cloud) if settings.has_credentials else None
        authenticator = build_authenticator(settings, cloud, http)
        if settings.storage_by_identity and storage_tokens is None:
            storage_tokens = storage.storage_tokens(settings)
        # use_env_settings=False: azure-core's aiohttp session otherwise runs with
        # trust_env=True, which looks up ~/.netrc in a thread on every request
        # (about half the CPU of a queue send). The app never goes through a proxy.
        table_options, queue_options = _storage_options(request_path)
        table_service = storage.table_service(settings, storage_tokens, use_env_settings=False,
                                              **table_options)
        queue_service = storage.queue_service(settings, storage_tokens, use_env_settings=False,
                                              **queue_options)
        queues = []
        for name in (settings.outbox_queue, settings.poison_queue):
            client = queue_service.get_queue_client(name)
            queues.append(on_demand(client, functools.partial(ensure_queue, client),
                                    f"queue {name}"))
        queue, poison = queues
        # The tables every message touches go through the thin REST client
        # (proactive/table_rest.py: ~0.1 ms of CPU per request instead of ~0.7 ms).
        # It signs with the account key or the shared bearer token; a SAS
        # connection string keeps the SDK. Campaigns needs entity-group
        # transactions, which only the SDK has.
        table_http = new_session(**REQUEST_PATH_SESSION) if request_path else new_session()

        def hot(base: str) -> TableClient | RestTableClient:
            name = settings.table_name(base)
            client = storage.rest_table(settings, name, table_http, storage_tokens)
            if client is None:
                return _sdk_table(table_service, name)
            if request_path:
                client.retries = REQUEST_PATH_RETRIES
            return on_demand(client, lambda: _create_table(table_service, name), f"table {name}")

        tenant_pacer = TenantPacer(hot(PACING_TABLE), rate=settings.tenant_rps)
        preferences = PreferenceStore(_sdk_table(table_service,
                                                 settings.table_name(PREFERENCES_TABLE)))
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
            campaigns=Campaigns(_sdk_table(table_service, settings.table_name(SENDS_TABLE))),
            outbox=Outbox(queue, poison, Seal(hot(PACING_TABLE))),
            connector=ConnectorClient(http, tokens, cloud, local_dev=settings.local_dev,
                                      local_connectors=settings.local_connectors,
                                      session=connector_http),
            authenticator=authenticator,
            tenant_pacer=tenant_pacer,
            conversation_pacer=ConversationPacer(),
            opt_outs=OptOuts(preferences, tenant_pacer),
            table_http=table_http,
            connector_http=connector_http,
            storage_tokens=storage_tokens,
            graph=_graph(settings, cloud, http),
            graph_pacer=TenantPacer(hot(PACING_TABLE), rate=settings.graph_rps),
        )

    async def close(self) -> None:
        await self.http.aclose()
        await self.table_service.close()
        await self.queue_service.close()
        if self.table_http is not None:
            await self.table_http.close()
        if self.connector_http is not None:
            await self.connector_http.close()
        if self.storage_tokens is not None:
            await self.storage_tokens.close()


# The HTTP API's storage clients (Runtime.create(request_path=True)): one retry
# after a second or less, 3 s to connect, 5 s to answer. An operation so gives up
# within ~10 s even when storage does not answer at all, and within ~1 s when it
# refuses the connection; routes/_serve bounds the whole answer on top
# (api.routes.API_DEADLINE). The worker keeps the SDKs' defaults.
REQUEST_PATH_RETRIES = 1
REQUEST_PATH_TIMEOUTS = {"connection_timeout": 3, "read_timeout": 5}
REQUEST_PATH_SESSION = {"total": 8.0, "connect": 3.0}


def _storage_options(request_path: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The table and queue service clients' options (azure-core retry and
    transport settings): none for the worker, short ones on the request path."""
    if not request_path:
        return {}, {}
    tables = {"retry_total": REQUEST_PATH_RETRIES, "retry_backoff_factor": 0.5,
              "retry_backoff_max": 1, **REQUEST_PATH_TIMEOUTS}
    # The queue clients' own ExponentialRetry takes these (defaults: 15 s, then 18, 24).
    queues = {"retry_total": REQUEST_PATH_RETRIES, "initial_backoff": 1, "increment_base": 2,
              "random_jitter_range": 0, **REQUEST_PATH_TIMEOUTS}
    return tables, queues


def _graph(settings: Settings, cloud: Cloud, http: httpx.AsyncClient) -> GraphClient | None:
    from proactive.teams.credentials import graph_token_provider
    from proactive.teams.graph import GraphClient

    if not settings.has_credentials and not settings.local_dev:
        return None
    tokens = graph_token_provider(settings, cloud) if settings.has_credentials else None
    return GraphClient(http, tokens, cloud, local_dev=settings.local_dev)


def connector_session(connector: aiohttp.TCPConnector | None = None) -> aiohttp.ClientSession:
    """The aiohttp session the Connector calls go over. `connector`: the pool
    (default: 64 connections; the security tests pass one that trusts their TLS
    emulator and records every request, so they prove this very path)."""
    import aiohttp

    return aiohttp.ClientSession(connector=connector or aiohttp.TCPConnector(limit=64))


async def _create_table(service: TableServiceClient, name: str) -> None:
    await service.create_table_if_not_exists(name)


def _sdk_table(service: TableServiceClient, name: str) -> TableClient:
    from proactive.storage.autocreate import on_demand

    return on_demand(service.get_table_client(name), lambda: _create_table(service, name),
                     f"table {name}")


_runtime: Runtime | None = None
_api_runtime: Runtime | None = None
_config_error: ConfigError | None = None
_lock: asyncio.Lock | None = None


async def close_runtime() -> None:
    """Close the process's Runtimes, if any were made (at host shutdown)."""
    global _runtime, _api_runtime
    if _api_runtime is not None:
        _api_runtime.storage_tokens = None  # the process Runtime's, closed with it
        await _api_runtime.close()
        _api_runtime = None
    if _runtime is not None:
        await _runtime.close()
        _runtime = None


async def get_api_runtime() -> Runtime:
    """The HTTP API's Runtime: the process's settings, storage clients that
    give up soon (Runtime.create's `request_path`). Made on first call, after
    the process's Runtime (so with the same settings and their checks)."""
    global _api_runtime, _lock
    if _api_runtime is not None:
        return _api_runtime
    rt = await get_runtime()
    if _api_runtime is None:
        if _lock is None:
            _lock = asyncio.Lock()
        async with _lock:
            if _api_runtime is None:
                _api_runtime = await Runtime.create(rt.settings,
                                                    storage_tokens=rt.storage_tokens,
                                                    request_path=True)
    return _api_runtime


async def get_runtime() -> Runtime:
    """The process's Runtime, created on first call from the app settings.

    When the settings can't be used, raises ConfigError (the same one at every
    call: settings only change with a restart) and builds nothing.
    """
    global _runtime, _config_error, _lock
    if _runtime is not None:
        return _runtime
    if _config_error is not None:
        # A fresh exception each time: re-raising one would grow its traceback.
        raise ConfigError(*_config_error.problems)
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        if _runtime is None and _config_error is None:
            try:
                settings = load_settings()
                from proactive import telemetry

                telemetry.setup()  # Application Insights only when configured (cold start)
                _runtime = await Runtime.create(settings)
            except ConfigError as exc:
                _config_error = exc
                raise
        if _config_error is not None:
            raise ConfigError(*_config_error.problems)
    assert _runtime is not None
    return _runtime
