"""A thin Table Storage REST client for the per-message hot path.

A request through `azure.data.tables.aio` costs about 0.7 ms of CPU (azure-core's
pipeline and the SDK's serializers); signed here (SharedKeyLite, or an Entra ID
bearer token from the process's `StorageTokens`) and sent over one shared aiohttp
session, it costs about 0.1 ms. `RestTableClient` has the subset of
`TableClient` the stores use, with the same names, arguments and azure.core
exceptions, so callers work unchanged.

Values: str, bool, int (Edm.Int32; Edm.Int64 beyond), float (Edm.Double); None is
skipped. They read back as plain values (Int64 as int, not the SDK's EntityProperty;
metadata["timestamp"] as a string). DateTime, Guid and Binary properties read back
as strings and cannot be written. No batch transactions, no SAS.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import time
from collections.abc import AsyncIterator, Mapping
from email.utils import formatdate
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import aiohttp
from azure.core import MatchConditions
from azure.core import exceptions as az
from yarl import URL

from proactive.config import DEV_ACCOUNT, DEV_KEY


class TokenSource(Protocol):
    """Where the bearer token comes from (proactive.storage.credentials.StorageTokens)."""

    async def token(self) -> str: ...

VERSION = "2019-02-02"  # bearer tokens need 2017-11-09 or later
# The SDK's exception classes by status, so callers' `except`s keep working.
_ERRORS: dict[int, type[az.HttpResponseError]] = {
    404: az.ResourceNotFoundError, 409: az.ResourceExistsError, 412: az.ResourceModifiedError}
# The transient answers azure-core retries too: 3 retries, 0.1 / 0.4 / 1.6 s apart.
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_RETRIES = 3
# What yarl (so the SDK's aiohttp transport) leaves unescaped in a path: same bytes on the wire.
_KEY_SAFE = "!$&'()*,;=:@"
_HEADERS = {"x-ms-version": VERSION, "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            # minimalmetadata: each entity comes with odata.etag and its type annotations.
            "Accept": "application/json;odata=minimalmetadata"}


class Entity(dict[str, Any]):
    """An entity's properties, with `.metadata` (etag, timestamp) as the SDK's TableEntity."""

    __slots__ = ("metadata",)
    metadata: dict[str, Any]


def new_session(total: float = 60, connect: float = 20) -> aiohttp.ClientSession:
    """One per process (made inside its event loop), shared by every RestTableClient;
    `total` and `connect`: each request's timeouts, in seconds."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=total, sock_connect=connect))


def parse_connection_string(conn: str) -> tuple[str, bytes, str]:
    """(account, key, table endpoint); ValueError without an account key."""
    parts = {k.strip().lower(): v.strip() for k, _, v in
             (p.partition("=") for p in conn.split(";")) if k.strip()}
    if parts.get("usedevelopmentstorage", "").lower() == "true":  # Azurite's defaults
        parts = {"accountname": DEV_ACCOUNT, "accountkey": DEV_KEY,
                 "tableendpoint": f"http://127.0.0.1:10002/{DEV_ACCOUNT}", **parts}
    account, key = parts.get("accountname"), parts.get("accountkey")
    if not account or not key:
        raise ValueError("the connection string has no AccountName/AccountKey")
    endpoint = parts.get("tableendpoint") or (
        f"{parts.get('defaultendpointsprotocol', 'https')}://{account}.table."
        f"{parts.get('endpointsuffix', 'core.windows.net')}")
    return account, base64.b64decode(key), endpoint.rstrip("/")


class RestTableClient:
    def __init__(self, account: str, key: bytes, endpoint: str, table_name: str,
                 session: aiohttp.ClientSession | None = None, *,
                 tokens: TokenSource | None = None) -> None:
        """Signed with `key` (SharedKeyLite), or with `tokens`' bearer token
        (`with_token`): then `endpoint` must be https, as the SDK insists too."""
        self.account_name, self.table_name, self._key = account, table_name, key
        self._tokens = tokens
        self.retries = _RETRIES  # of a transient failure (fewer on the HTTP API's path)
        url = URL(endpoint)
        if tokens is not None and url.scheme != "https":
            raise ValueError(f"a bearer token is only sent over https, not to {endpoint!r}")
        self._origin = str(url.origin())
        self._base = url.raw_path.rstrip("/")  # Azurite's path-style "/devstoreaccount1"
        self._own_session = session is None
        self._session = session or new_session()
        self._date = (0, "")

    @classmethod
    def with_token(cls, endpoint: str, table_name: str, tokens: TokenSource, *,
                   session: aiohttp.ClientSession | None = None) -> RestTableClient:
        """Signed with an Entra ID bearer token (no account key)."""
        url = URL(endpoint)
        # Azurite's path-style endpoints name the account in the path; Azure's, in the host.
        account = url.raw_path.strip("/").split("/")[0] or (url.host or "").split(".")[0]
        return cls(account, b"", endpoint, table_name, session, tokens=tokens)

    @classmethod
    def from_connection_string(cls, conn: str, table_name: str, *,
                               session: aiohttp.ClientSession | None = None) -> RestTableClient:
        return cls(*parse_connection_string(conn), table_name, session)

    async def close(self) -> None:
        if self._own_session:  # a shared session belongs to whoever passed it in
            await self._session.close()

    async def __aenter__(self) -> RestTableClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def get_entity(self, partition_key: str, row_key: str) -> Entity:
        headers, body = await self._send("GET", self._path(partition_key, row_key))
        entity = _entity(json.loads(body))
        entity.metadata["etag"] = entity.metadata["etag"] or headers.get("ETag")
        return entity

    async def create_entity(self, entity: Mapping[str, Any]) -> dict[str, Any]:
        # No body back: the new ETag is in the headers.
        return _meta(await self._send("POST", f"/{self.table_name}", body=_properties(entity),
                                      headers={"Prefer": "return-no-content"}))

    async def update_entity(self, entity: Mapping[str, Any], mode: str = "merge", *,
                            etag: str | None = None,
                            match_condition: MatchConditions | None = None) -> dict[str, Any]:
        if match_condition == MatchConditions.IfNotModified:
            etag = etag or getattr(entity, "metadata", {}).get("etag")
            if not etag:
                raise ValueError("IfNotModified must be specified with etag.")
        # If-Match "*": only an existing entity (without If-Match, it would be an upsert).
        return await self._write(entity, mode, etag or "*")

    async def upsert_entity(self, entity: Mapping[str, Any], mode: str = "merge"
                            ) -> dict[str, Any]:
        return await self._write(entity, mode, None)

    async def delete_entity(self, partition_key: str, row_key: str, *,
                            etag: str | None = None) -> None:
        with contextlib.suppress(az.ResourceNotFoundError):  # as the SDK: absent is no error
            await self._send("DELETE", self._path(partition_key, row_key),
                             headers={"If-Match": etag or "*"})

    async def query_entities(self, query_filter: str, *,
                             parameters: Mapping[str, Any] | None = None,
                             select: str | list[str] | None = None,
                             results_per_page: int | None = None) -> AsyncIterator[Entity]:
        query: dict[str, str] = {}
        if query_filter:
            query["$filter"] = _substitute(query_filter, parameters or {})
        if select:
            query["$select"] = select if isinstance(select, str) else ",".join(select)
        if results_per_page:
            query["$top"] = str(results_per_page)
        while True:
            headers, body = await self._send("GET", f"/{self.table_name}()", query)
            for raw in json.loads(body)["value"]:
                yield _entity(raw)
            # A page may end early (size, time, partition boundary): follow the token.
            if not headers.get("x-ms-continuation-NextPartitionKey"):
                return
            query["NextPartitionKey"] = headers["x-ms-continuation-NextPartitionKey"]
            query["NextRowKey"] = headers.get("x-ms-continuation-NextRowKey", "")

    def list_entities(self, *, select: str | list[str] | None = None,
                      results_per_page: int | None = None) -> AsyncIterator[Entity]:
        return self.query_entities("", select=select, results_per_page=results_per_page)

    def _path(self, pk: str, rk: str) -> str:
        return f"/{self.table_name}(PartitionKey='{_key(pk)}',RowKey='{_key(rk)}')"

    async def _write(self, entity: Mapping[str, Any], mode: str, if_match: str | None
                     ) -> dict[str, Any]:
        if mode not in ("merge", "replace"):  # UpdateMode is a str enum of these
            raise ValueError(f"Mode type '{mode}' is not supported.")
        return _meta(await self._send(
            "PUT" if mode == "replace" else "PATCH",
            self._path(entity["PartitionKey"], entity["RowKey"]), body=_properties(entity),
            headers={"If-Match": if_match} if if_match else None))

    async def _send(self, method: str, path: str, query: Mapping[str, str] | None = None,
                    body: Any = None, headers: Mapping[str, str] | None = None
                    ) -> tuple[Mapping[str, str], bytes]:
        """The answer's headers and body, retrying transient failures; else the SDK's error."""
        data = None if body is None else json.dumps(body).encode()
        sent = {**_HEADERS, **(headers or {})}
        if data is not None:
            sent["Content-Type"] = "application/json"
        query_string = urlencode(query, quote_via=quote) if query else ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(0.1 * 4 ** (attempt - 1))
            try:
                status, reason, answer, content = await self._request(
                    method, path, query_string, data, sent)
            except (aiohttp.ClientError, TimeoutError) as exc:
                # A dropped keep-alive connection, a timeout: retried, as azure-core does.
                if attempt == self.retries:
                    raise az.ServiceRequestError(f"{method} {self.table_name}: {exc!r}") from exc
                continue
            if status < 300:
                return answer, content
            if status not in _RETRY_STATUSES or attempt == self.retries:
                raise _error(status, reason, answer, content)
        raise AssertionError("unreachable")

    async def _request(self, method: str, path: str, query_string: str, data: bytes | None,
                       headers: dict[str, str]) -> tuple[int, str, Mapping[str, str], bytes]:
        """One signed HTTP request (benchmarks/_worker.py counts these)."""
        now = int(time.time())
        if now != self._date[0]:  # the date is formatted once a second, not per request
            self._date = (now, formatdate(now, usegmt=True))
        raw_path = self._base + path
        headers["x-ms-date"] = self._date[1]
        if self._tokens is not None:
            # Cached: an await that returns at once, except when a refresh is due.
            headers["Authorization"] = f"Bearer {await self._tokens.token()}"
        else:
            # SharedKeyLite for Table: StringToSign = x-ms-date + "\n" + "/account/path".
            mac = hmac.new(self._key, f"{self._date[1]}\n/{self.account_name}{raw_path}"
                           .encode(), hashlib.sha256).digest()
            headers["Authorization"] = f"SharedKeyLite {self.account_name}:" \
                                       f"{base64.b64encode(mac).decode()}"
        # encoded=True: the path goes out byte for byte as signed.
        url = URL(f"{self._origin}{raw_path}?{query_string}" if query_string
                  else self._origin + raw_path, encoded=True)
        async with self._session.request(method, url, data=data, headers=headers) as response:
            return response.status, response.reason or "", response.headers, \
                await response.read()


def _key(value: str) -> str:
    """Quotes doubled (OData), then percent-encoded as the SDK's request ends up."""
    return quote(value.replace("'", "''"), _KEY_SAFE)


def _properties(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body: Int64 and Double carry their type, so 1.0 stays a float."""
    out: dict[str, Any] = {}
    for name, value in entity.items():
        if value is None:
            continue
        if isinstance(value, bool | str):
            out[name] = value
        elif isinstance(value, int):
            if -2**31 <= value < 2**31:
                out[name] = value
            else:
                out[name], out[f"{name}@odata.type"] = str(value), "Edm.Int64"
        elif isinstance(value, float):
            # JSON has no NaN/Infinity: the service takes them as strings, as the SDK sends.
            out[name] = value if math.isfinite(value) else \
                "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
            out[f"{name}@odata.type"] = "Edm.Double"
        else:
            raise TypeError(f"{name}: {type(value).__name__} values are not supported")
    return out


def _entity(raw: Mapping[str, Any]) -> Entity:
    entity = Entity()
    for name, value in raw.items():
        if name.startswith("odata.") or name.endswith("@odata.type") or name == "Timestamp":
            continue
        kind = raw.get(f"{name}@odata.type")
        entity[name] = int(value) if kind == "Edm.Int64" else \
            float(value) if kind == "Edm.Double" else value
    stamp = raw.get("Timestamp")
    # The SDK's fallback when the service sends no etag: one made from the timestamp.
    etag = raw.get("odata.etag") or (stamp and f"W/\"datetime'{quote(stamp)}'\"")
    entity.metadata = {"etag": etag, "timestamp": stamp}
    return entity


def _meta(answer: tuple[Mapping[str, str], bytes]) -> dict[str, Any]:
    return {"etag": answer[0].get("ETag"), "date": answer[0].get("Date")}


def _substitute(query_filter: str, parameters: Mapping[str, Any]) -> str:
    """`@name` words replaced by their OData literals, as the SDK does."""
    if not parameters:
        return query_filter
    words = query_filter.split(" ")
    for i, word in enumerate(words):
        if word[:1] != "@":
            continue
        value = parameters[word[1:]]
        if isinstance(value, bool):
            words[i] = str(value).lower()
        elif isinstance(value, int):
            words[i] = f"{value}L" if value.bit_length() > 32 else str(value)
        elif isinstance(value, float):
            words[i] = str(value)
        elif isinstance(value, str):
            words[i] = "'{}'".format(value.replace("'", "''"))
        else:
            raise TypeError(f"@{word[1:]}: {type(value).__name__} values are not supported")
    return " ".join(words)


def _error(status: int, reason: str, headers: Mapping[str, str], body: bytes
           ) -> az.HttpResponseError:
    code, message = headers.get("x-ms-error-code"), reason
    with contextlib.suppress(ValueError, KeyError, TypeError):
        detail = json.loads(body)["odata.error"]
        code, message = detail.get("code", code), detail["message"]["value"]
    error = _ERRORS.get(status, az.HttpResponseError)(message=f"{message}\nErrorCode:{code}")
    error.status_code, error.reason = status, reason
    error.error_code = code  # type: ignore[attr-defined]  # as the SDK's errors have
    return error
