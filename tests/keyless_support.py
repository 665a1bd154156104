"""Azurite over https with OAuth, what it recorded, and a token credential for the
test process itself (the app under test gets its tokens through azure-identity)."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken

from proactive_devtools.fake_aad import FakeAAD


class MintedCredential:
    """An AsyncTokenCredential whose storage tokens the fake Azure AD mints (real
    shape, `lifetime` seconds). Counts its calls; `gate`, when set, holds them."""

    def __init__(self, aad: FakeAAD, *, lifetime: int = 3600, client_id: str = "test",
                 clock: Callable[[], float] = time.time) -> None:
        """`clock`: the caller's clock, for the expiry it is told (the JWT itself
        is always minted on real time, for Azurite)."""
        self.aad, self.lifetime, self.client_id, self.clock = aad, lifetime, client_id, clock
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        now = int(time.time())
        token = self.aad.storage_token(self.client_id, now=now, lifetime=self.lifetime,
                                       serial=self.calls)
        return AccessToken(token, int(self.clock()) + self.lifetime)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> MintedCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def trust(cert: Path) -> None:
    """Make this process's https clients trust `cert` (Azurite's), the way
    SSL_CERT_FILE does for a child process: added to aiohttp's default verified
    context, which the SDKs' aiohttp transport and our REST session use. A trust
    anchor added, verification never turned off."""
    import aiohttp.connector

    context: ssl.SSLContext = aiohttp.connector._SSL_CONTEXT_VERIFIED
    context.load_verify_locations(cafile=str(cert))


@dataclass
class Request:
    id: str
    operation: str = ""
    method: str = ""
    headers: dict[str, Any] | None = None
    by_token: bool = False

    @property
    def authorization(self) -> str:
        return str((self.headers or {}).get("authorization", "")).split(" ")[0]


_LINE = re.compile(r"^\S+ (?P<id>[0-9a-f-]{36}) \w+: (?P<text>.*)$")


def recorded(debug_log: Path) -> dict[str, Request]:
    """Azurite's debug log, per request: its operation, method and headers, and
    whether a bearer token authorized it."""
    requests: dict[str, Request] = {}
    for line in debug_log.read_text(errors="replace").splitlines():
        found = _LINE.match(line)
        if not found:
            continue
        req = requests.setdefault(found["id"], Request(found["id"]))
        text = found["text"]
        if text.startswith("DispatchMiddleware: Operation="):
            req.operation = text.split("=", 1)[1].strip()
        elif "StorageContextMiddleware: RequestMethod=" in text and "RequestHeaders:" in text:
            req.method = text.split("RequestMethod=", 1)[1].split(" ", 1)[0]
            headers, _ = json.JSONDecoder().raw_decode(text.split("RequestHeaders:", 1)[1])
            req.headers = headers
        elif "TokenAuthenticator:authenticateBasic() Validation against token authentication " \
             "successfully" in text:
            req.by_token = True
    return {k: v for k, v in requests.items() if v.operation}


def rest_operation(req: Request) -> tuple[str, str]:
    """(service, Storage REST API operation name) of an Azurite request."""
    if_match = "if-match" in (req.headers or {})
    table = {
        "Table_Query": "Query Tables", "Table_Create": "Create Table",
        "Table_Delete": "Delete Table", "Table_Batch": "Entity Group Transaction",
        "Table_QueryEntities": "Query Entities",
        "Table_QueryEntitiesWithPartitionAndRowKey": "Query Entities",
        "Table_InsertEntity": "Insert Entity", "Table_DeleteEntity": "Delete Entity",
        "Table_UpdateEntity": "Update Entity" if if_match else "Insert Or Replace Entity",
        "Table_MergeEntity": "Merge Entity" if if_match else "Insert Or Merge Entity",
        "Table_MergeEntityWithMerge": "Merge Entity" if if_match else "Insert Or Merge Entity",
    }
    queue = {
        "Queue_Create": "Create Queue", "Queue_Delete": "Delete Queue",
        "Queue_GetProperties": "Get Queue Metadata", "Messages_Enqueue": "Put Message",
        "Messages_Dequeue": "Get Messages", "Messages_Peek": "Peek Messages",
        "MessageId_Delete": "Delete Message", "MessageId_Update": "Update Message",
        "Messages_Clear": "Clear Messages",
    }
    if req.operation in table:
        return "table", table[req.operation]
    if req.operation in queue:
        return "queue", queue[req.operation]
    return "other", req.operation


def rest_operations(requests: dict[str, Request]) -> Iterator[tuple[str, str]]:
    for req in requests.values():
        yield rest_operation(req)
