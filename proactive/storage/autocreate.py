"""Tables and queues created when first found missing, not at every cold start.

The deployment (and, locally, `proactive_devtools.provision`) creates every
table and queue the app uses (`proactive.runtime.storage_names`). Should one be
missing anyway (a new table after an upgrade, Azurite wiped), the operation
that finds it missing (`TableNotFound` / `QueueNotFound`) creates it and is
retried once. This is the one place that happens: `on_demand` wraps a client
(the SDK's TableClient or QueueClient, or our RestTableClient) and everything
else uses the wrapped client as it would the original.

It is also where a storage outage becomes a member of proactive.errors: an
operation that fails for want of storage (`unavailable`) raises
`StorageUnavailable`, so the code above storage/ catches that, never an
azure-core exception.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

from azure.core.exceptions import HttpResponseError

from proactive.errors import StorageUnavailable

log = logging.getLogger(__name__)

MISSING = frozenset({"TableNotFound", "QueueNotFound"})

C = TypeVar("C")


def is_missing(exc: BaseException) -> bool:
    """The table or queue itself does not exist (not: the entity is absent).
    The SDK puts the service's error code on some errors only (not on
    create_entity's); the response header always has it."""
    if not isinstance(exc, HttpResponseError):
        return False
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # TableErrorCode is an enum
    if not code:
        code = (getattr(exc.response, "headers", None) or {}).get("x-ms-error-code")
    return code in MISSING


def unavailable(exc: BaseException) -> bool:
    """Whether a storage call failed for want of storage (no connection, a
    timeout, a 5xx after the client's own retries), rather than with an answer
    about the entity (404, 409, 412) or a bug of ours."""
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    if isinstance(exc, StorageUnavailable | ServiceRequestError | ServiceResponseError
                  | TimeoutError | OSError):
        return True
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        return status >= 500 or status in (408, 429)
    return False


def _translated(exc: Exception, name: str) -> Exception:
    """`exc` as the tree's StorageUnavailable when it is an outage (`exc`
    itself otherwise)."""
    if isinstance(exc, StorageUnavailable) or not unavailable(exc):
        return exc
    return StorageUnavailable(detail=f"{name}: {type(exc).__name__}")


class _OnDemand:
    def __init__(self, client: Any, create: Callable[[], Awaitable[None]], name: str) -> None:
        self._client = client
        self._create_fn = create
        self._name = name
        self._lock = asyncio.Lock()

    @property
    def wrapped(self) -> Any:
        return self._client

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._client, attr)
        if attr.startswith("_") or not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            result = value(*args, **kwargs)
            if inspect.isawaitable(result):
                return self._awaited(result, lambda: value(*args, **kwargs))
            if hasattr(result, "__aiter__"):  # query_entities, list_entities, receive_messages
                return self._iterated(result, lambda: value(*args, **kwargs))
            return result

        # Kept on the instance: the next lookup skips __getattr__ (hot path).
        self.__dict__[attr] = call
        return call

    async def _create(self) -> None:
        async with self._lock:  # concurrent callers that all found it missing: one create
            log.warning("%s does not exist: creating it", self._name)
            await self._create_fn()

    async def _awaited(self, first: Awaitable[Any], again: Callable[[], Awaitable[Any]]) -> Any:
        try:
            try:
                return await first
            except HttpResponseError as exc:  # TableTransactionError is not a ResourceNotFoundError
                if not is_missing(exc):
                    raise
            await self._create()
            return await again()
        except Exception as exc:
            translated = _translated(exc, self._name)
            if translated is exc:
                raise
            raise translated from exc

    async def _iterated(self, first: AsyncIterator[Any], again: Callable[[], AsyncIterator[Any]]
                        ) -> AsyncIterator[Any]:
        try:
            try:
                async for item in first:
                    yield item
                return
            except HttpResponseError as exc:
                # A missing table or queue fails the first page, before any item.
                if not is_missing(exc):
                    raise
            await self._create()
            async for item in again():
                yield item
        except Exception as exc:
            translated = _translated(exc, self._name)
            if translated is exc:
                raise
            raise translated from exc


def on_demand(client: C, create: Callable[[], Awaitable[None]], name: str) -> C:
    """`client`, whose operations create its table or queue (`create`) when they
    find it missing, then run once more. `name` is for the log line."""
    return cast(C, _OnDemand(client, create, name))


def unwrap(client: Any) -> Any:
    """The client `on_demand` wrapped (or `client` itself)."""
    return client.wrapped if isinstance(client, _OnDemand) else client
