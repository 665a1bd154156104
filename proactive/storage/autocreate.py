"""Tables and queues created when first found missing, not at every cold start.

The deployment (and, locally, `proactive_devtools.provision`) creates every
table and queue the app uses (`proactive.runtime.storage_names`). Should one be
missing anyway (a new table after an upgrade, Azurite wiped), the operation
that finds it missing (`TableNotFound` / `QueueNotFound`) creates it and is
retried once. This is the one place that happens: `on_demand` wraps a client
(the SDK's TableClient or QueueClient, or our RestTableClient) and everything
else uses the wrapped client as it would the original.

It is also where storage's errors become members of proactive.errors
(`proactive.storage.faults.translate`: StorageUnavailable, NotFound, Conflict
…), so the code above storage/ catches those, never an azure-core exception.
`checked` wraps a client the same way without creating anything: a table or
queue that is missing is a NotFound (a listing of nothing, for a report).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

from azure.core.exceptions import HttpResponseError

from proactive.storage import faults
from proactive.storage.faults import translate

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


class _OnDemand:
    def __init__(self, client: Any, create: Callable[[], Awaitable[None]] | None,
                 name: str) -> None:
        self._client = client
        self._create_fn = create
        self._name = name
        self._lock = asyncio.Lock()

    @property
    def wrapped(self) -> Any:
        return self._client

    async def __aenter__(self) -> Any:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.__aexit__(*exc)

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._client, attr)
        if attr.startswith("_") or not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            result = value(*args, **kwargs)
            if inspect.isawaitable(result):
                return self._awaited(result, lambda: value(*args, **kwargs))
            if hasattr(result, "by_page"):  # the SDK's pagers: iterated, or page by page
                return _Paged(self, result, lambda: value(*args, **kwargs))
            if hasattr(result, "__aiter__"):  # our REST client's query_entities
                return self._iterated(result, lambda: value(*args, **kwargs))
            return result

        # Kept on the instance: the next lookup skips __getattr__ (hot path).
        self.__dict__[attr] = call
        return call

    async def _create(self) -> bool:
        """Create the missing table or queue; False when this client doesn't."""
        if self._create_fn is None:
            return False
        async with self._lock:  # concurrent callers that all found it missing: one create
            log.warning("%s does not exist: creating it", self._name)
            await self._create_fn()
        return True

    async def _awaited(self, first: Awaitable[Any], again: Callable[[], Awaitable[Any]]) -> Any:
        try:
            try:
                return await first
            except HttpResponseError as exc:  # TableTransactionError is not a ResourceNotFoundError
                if not is_missing(exc) or not await self._create():
                    raise
            return await again()
        except Exception as exc:
            translated = translate(exc, self._name)
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
                if not is_missing(exc) or not await self._create():
                    raise
            async for item in again():
                yield item
        except Exception as exc:
            translated = translate(exc, self._name)
            if translated is exc:
                raise
            raise translated from exc

    async def _pages(self, pages: Any) -> AsyncIterator[Any]:
        """The pages of `pages` (an SDK pager's by_page()), each iterated as
        the SDK's; errors translated, nothing created."""
        with faults.translated(self._name):
            async for page in pages:
                yield self._page(page)

    async def _page(self, page: AsyncIterator[Any]) -> AsyncIterator[Any]:
        with faults.translated(self._name):
            async for item in page:
                yield item


class _Paged:
    """An SDK pager (AsyncItemPaged) of a wrapped client: iterated as the
    client's other results are, or `by_page(continuation_token)` as the SDK's,
    with `continuation_token` read from what by_page returned."""

    def __init__(self, owner: _OnDemand, first: Any, again: Callable[[], Any]) -> None:
        self._owner, self._first, self._again = owner, first, again

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._owner._iterated(self._first, self._again)

    def by_page(self, continuation_token: Any = None) -> _Pages:
        return _Pages(self._owner, self._first.by_page(continuation_token=continuation_token))


class _Pages:
    def __init__(self, owner: _OnDemand, pages: Any) -> None:
        self._owner, self._pages = owner, pages

    @property
    def continuation_token(self) -> Any:
        return getattr(self._pages, "continuation_token", None)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._owner._pages(self._pages)


def on_demand(client: C, create: Callable[[], Awaitable[None]], name: str) -> C:
    """`client`, whose operations create its table or queue (`create`) when they
    find it missing, then run once more. `name` is for the log line."""
    return cast(C, _OnDemand(client, create, name))


def checked(client: C, name: str) -> C:
    """`client`, raising the tree's errors (proactive.storage.faults) but
    creating nothing: a missing table or queue is a NotFound."""
    return cast(C, _OnDemand(client, None, name))


def unwrap(client: Any) -> Any:
    """The client `on_demand` wrapped (or `client` itself)."""
    return client.wrapped if isinstance(client, _OnDemand) else client
