"""How the app reaches Table and Queue storage: one place builds every client.

Two styles, chosen by the settings (`proactive.config`, validated there):

* a connection string (`AzureWebJobsStorage`): local development and Azurite,
  or an account that still allows keys;
* identity-based (`AzureWebJobsStorage__*`, what infra/ sets in Azure, where the
  account's shared keys are off): the service URIs (or the account name) and an
  Entra ID token from azure-identity: `ManagedIdentityCredential(client_id=...)`
  when `__credential` is `managedidentity`, else `DefaultAzureCredential` (a
  person's `az login`, for the CLI).

With identity, a process holds ONE credential behind ONE `StorageTokens`: the SDK
clients take it as their credential and the hot-path `RestTableClient` asks it for
a bearer token, so every client shares one cached token, refreshed before it
expires by one caller at a time. azure-identity is imported only when a
credential is made (it is not needed with a connection string, nor at cold start).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp
    from azure.core.credentials import AccessToken
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.data.tables.aio import TableClient, TableServiceClient
    from azure.storage.queue.aio import QueueClient, QueueServiceClient

    from proactive.config import Settings
    from proactive.storage.table_rest import RestTableClient

log = logging.getLogger(__name__)

# Azure Storage's audience in every cloud; the SDKs ask for this scope too.
STORAGE_SCOPE = "https://storage.azure.com/.default"
REFRESH_MARGIN = 5 * 60.0  # refresh this long before expiry (half a short token's life)
RETRY_INTERVAL = 5.0  # after a failed refresh, callers get the error for this long
TOKEN_DEADLINE = 10.0  # the longest one token request may take (then: an error, retried)

# Every storage operation the app itself performs, per service, named as in the
# Storage REST API reference. The app's identity must be allowed each one:
# tests/test_keyless.py records the operations of a full run against Azurite
# (ops outside this list fail it) and maps each one to the role infra/app/rbac.bicep
# grants. The Functions host's own blob operations (deployment package, timer
# locks) are the platform's, under Storage Blob Data Owner.
OPERATIONS = MappingProxyType({
    "table": ("Create Table", "Query Entities", "Insert Entity", "Update Entity", "Merge Entity",
              "Insert Or Merge Entity", "Insert Or Replace Entity", "Delete Entity",
              "Entity Group Transaction"),
    "queue": ("Create Queue", "Put Message", "Get Messages", "Peek Messages", "Delete Message",
              "Update Message"),
})


class StorageTokens:
    """The process's storage token from one azure-identity credential: cached,
    refreshed `margin` before expiry (at half-life for short tokens) by one
    caller while the others go on with the still-valid token.

    It is itself an AsyncTokenCredential, so the SDK clients take it as theirs;
    `token()` is the REST client's bearer token. When a refresh fails, the
    current token is used while it lasts; without one, the credential's error
    (azure.core's ClientAuthenticationError, as the SDK clients raise) goes to
    the caller, and for `retry_interval` to the next callers without a new
    attempt (no storm of token requests while the identity endpoint is down).
    A request that gets no answer within `deadline` seconds is abandoned (one
    warning, a ClientAuthenticationError to the callers); the next attempt is
    a new request."""

    def __init__(self, credential: AsyncTokenCredential, *, clock: Callable[[], float] = time.time,
                 margin: float = REFRESH_MARGIN, retry_interval: float = RETRY_INTERVAL,
                 deadline: float = TOKEN_DEADLINE) -> None:
        self.credential = credential
        self._deadline = deadline
        self._clock, self._margin, self._retry_interval = clock, margin, retry_interval
        self._token: AccessToken | None = None
        self._due = 0.0  # when to refresh
        self._lock = asyncio.Lock()
        self._failed_at = 0.0
        self._failure: Exception | None = None
        self.refreshes = 0  # calls to the credential, for tests and metrics

    def __repr__(self) -> str:
        return f"StorageTokens({type(self.credential).__name__})"

    async def token(self) -> str:
        """A valid bearer token for Azure Storage."""
        return (await self._current()).token

    async def get_token(self, *scopes: str, claims: str | None = None,
                        tenant_id: str | None = None, **kwargs: Any) -> AccessToken:
        """AsyncTokenCredential: the shared token for the storage scope; anything
        else (another scope, a claims challenge) goes to the credential as asked."""
        if scopes == (STORAGE_SCOPE,) and not claims and not tenant_id:
            return await self._current()
        return await self.credential.get_token(*scopes, claims=claims, tenant_id=tenant_id,
                                               **kwargs)

    async def close(self) -> None:
        await self.credential.close()

    async def __aenter__(self) -> StorageTokens:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _current(self) -> AccessToken:
        token, now = self._token, self._clock()
        if token is not None and now < self._due:
            return token
        if token is not None and now < token.expires_on and self._lock.locked():
            return token  # another caller is refreshing; this one is still valid
        async with self._lock:
            token, now = self._token, self._clock()
            if token is not None and now < self._due:
                return token  # refreshed while this caller waited
            if self._failure is not None and now - self._failed_at < self._retry_interval:
                if token is not None and now < token.expires_on:
                    return token
                raise _failed(self._failure)
            return await self._refresh(token, now)

    async def _refresh(self, old: AccessToken | None, now: float) -> AccessToken:
        self.refreshes += 1
        try:
            new = await asyncio.wait_for(self.credential.get_token(STORAGE_SCOPE),
                                         self._deadline)
        except TimeoutError:
            from azure.core.exceptions import ClientAuthenticationError

            detail = (f"no answer from the identity endpoint ({_identity_host()}) within "
                      f"{self._deadline:g} s")
            self._failed_at, self._failure = now, ClientAuthenticationError(message=detail)
            log.warning("could not get a storage token: %s", detail)
            if old is not None and now < old.expires_on:
                return old
            raise _failed(self._failure) from None
        except Exception as exc:  # the identity endpoint refused or could not be reached
            self._failed_at, self._failure = now, exc
            if old is not None and now < old.expires_on:
                log.warning("could not refresh the storage token (%s); using the current one "
                            "until it expires", type(exc).__name__)
                return old
            log.error("could not get a storage token: %s: %s", type(exc).__name__,
                      str(exc).splitlines()[0][:300] if str(exc) else "")
            raise
        self._failure = None
        now = self._clock()
        self._token = new
        self._due = new.expires_on - min(self._margin, max(new.expires_on - now, 0.0) / 2)
        if old is not None and new.token == old.token:
            # The credential answered from its own cache (azure-identity asks its
            # endpoint at most every 30 s): ask again in a while, not on every call.
            self._due = min(now + self._retry_interval, float(new.expires_on))
        return new


def _identity_host() -> str:
    """The host azure-identity asks for a managed identity's token (App
    Service's IDENTITY_ENDPOINT, else the instance metadata service)."""
    from urllib.parse import urlsplit

    endpoint = os.environ.get("IDENTITY_ENDPOINT") or os.environ.get("MSI_ENDPOINT") or ""
    return urlsplit(endpoint).hostname or "169.254.169.254"


def _failed(cause: Exception) -> Exception:
    """A fresh error for a caller inside the retry interval (re-raising one
    exception object from many tasks would grow its traceback)."""
    from azure.core.exceptions import ClientAuthenticationError

    text = str(cause).splitlines()[0][:300] if str(cause) else type(cause).__name__
    return ClientAuthenticationError(message=f"no storage token (retried shortly): {text}")


def new_credential(settings: Settings) -> AsyncTokenCredential:
    """The azure-identity credential the identity settings name."""
    client_id = settings.storage_client_id or None
    if settings.storage_credential.lower() == "managedidentity":
        from azure.identity.aio import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=client_id)
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=client_id)


def storage_tokens(settings: Settings) -> StorageTokens | None:
    """The token source for `settings` (None with a connection string). Make one
    per process and pass it to every client below."""
    return StorageTokens(new_credential(settings)) if settings.storage_by_identity else None


def _need(tokens: StorageTokens | None) -> StorageTokens:
    if tokens is None:
        raise ValueError("identity-based storage needs the process's StorageTokens")
    return tokens


def table_service(settings: Settings, tokens: StorageTokens | None = None,
                  **options: Any) -> TableServiceClient:
    from azure.data.tables.aio import TableServiceClient

    if not settings.storage_by_identity:
        return TableServiceClient.from_connection_string(settings.storage_connection, **options)
    return TableServiceClient(endpoint=settings.storage_url("table"), credential=_need(tokens),
                              **options)


def table_client(settings: Settings, name: str, tokens: StorageTokens | None = None,
                 **options: Any) -> TableClient:
    """The SDK client of table `name` for the CLI and tools: it raises the
    tree's errors (a missing table: NotFound) and creates nothing."""
    from azure.data.tables.aio import TableClient

    from proactive.storage.autocreate import checked

    if not settings.storage_by_identity:
        client = TableClient.from_connection_string(settings.storage_connection, name, **options)
    else:
        client = TableClient(endpoint=settings.storage_url("table"), table_name=name,
                             credential=_need(tokens), **options)
    return checked(client, f"table {name}")


def queue_service(settings: Settings, tokens: StorageTokens | None = None,
                  **options: Any) -> QueueServiceClient:
    from azure.storage.queue.aio import QueueServiceClient

    if not settings.storage_by_identity:
        return QueueServiceClient.from_connection_string(settings.storage_connection, **options)
    return QueueServiceClient(account_url=settings.storage_url("queue"), credential=_need(tokens),
                              **options)


def queue_client(settings: Settings, name: str, tokens: StorageTokens | None = None,
                 **options: Any) -> QueueClient:
    """The SDK client of queue `name`, as `table_client`."""
    from azure.storage.queue.aio import QueueClient

    from proactive.storage.autocreate import checked

    if not settings.storage_by_identity:
        client = QueueClient.from_connection_string(settings.storage_connection, name, **options)
    else:
        client = QueueClient(account_url=settings.storage_url("queue"), queue_name=name,
                             credential=_need(tokens), **options)
    return checked(client, f"queue {name}")


def rest_table(settings: Settings, name: str, session: aiohttp.ClientSession,
               tokens: StorageTokens | None = None) -> RestTableClient | None:
    """The hot-path REST client of table `name`: signed with the account key or
    a bearer token; None when the connection string has neither (a SAS: the
    SDK client is used instead)."""
    from proactive.storage.table_rest import RestTableClient, parse_connection_string

    if settings.storage_by_identity:
        return RestTableClient.with_token(settings.storage_url("table"), name, _need(tokens),
                                          session=session)
    try:
        parse_connection_string(settings.storage_connection)
    except ValueError:
        return None
    return RestTableClient.from_connection_string(settings.storage_connection, name,
                                                  session=session)
