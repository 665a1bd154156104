"""The app's seal on what it enqueues for itself (SECURITY.md "Threat model").

Some contract fields are the app's own: `part`, `attempt`, `service` and
`to.continuation` (proactive.contract.APP_ONLY). A producer can write the
outbox queue directly, so a message carrying one is acted on only if the app
made it: `Outbox.put`, the one place every internal enqueue goes through,
adds `"signature": "<key id>.<HMAC-SHA256>"` over the message's canonical
JSON (keys sorted, no spaces, ASCII, without `signature`), and the worker
checks it before anything else happens. A message whose app-only field is
unsigned, or signed with a key the app does not hold, is parked in the poison
queue with reason `app-only-field`, after no Graph or Connector call.

The key: 32 random bytes in one row of the `pacing` table (PartitionKey
`App`, RowKey `SigningKeys`; a tenant's rows are lowercase, so they can't
meet it), created by the first instance that needs it (ETag-conditional:
racing instances end with the same key). The queue's send role (Storage
Queue Data Message Sender) reads no table, so a producer can't learn it.
Each process keeps the keys for CACHE_SECONDS, and reads the row again at
once when a message names a key id it does not know (another instance may
have rotated); an id still unknown after that read is not read for again
for REFRESH_SECONDS, so repeating a forged id costs no storage operation.

Rotation (`rotate`, `python -m proactive rotate-signing-key`) adds a new key
and makes it the one that signs; the older keys keep verifying for
KEEP_DAYS (a queue message waits at most 7 days), then are dropped. Deleting
the row instead invalidates every key at once (a key that leaked): internal
messages already queued are then parked with the reason, to be sent again.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from proactive.app_only import SIGNATURE, app_only_fields
from proactive.errors import InvalidMessage, Poison
from proactive.storage import tables

if TYPE_CHECKING:
    from proactive.storage.tables import Table

PK, RK = "App", "SigningKeys"
CACHE_SECONDS = 600.0
REFRESH_SECONDS = 10.0
KEEP_DAYS = 8
REASON = Poison.APP_ONLY_FIELD


def canonical(message: Mapping[str, Any]) -> bytes:
    """The bytes the signature covers: the message without its signature."""
    return json.dumps({k: v for k, v in message.items() if k != SIGNATURE}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True).encode()


def _mac(key: bytes, message: Mapping[str, Any]) -> str:
    digest = hmac.new(key, canonical(message), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class Seal:
    def __init__(self, table: Table, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.table = table
        self._clock = clock
        self._current = ""
        self._keys: dict[str, bytes] = {}
        self._read_at = float("-inf")
        self._unknown: set[str] = set()  # key ids the last read did not have
        self._lock = asyncio.Lock()

    # --- the key row ------------------------------------------------------

    async def _load(self) -> None:
        """Read the row (create it when absent) into the cache."""

        def made(found: dict[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
            if found is not None:  # (another instance made it first: theirs is used)
                return None, found
            kid, key = _new_key()
            entity = {"PartitionKey": PK, "RowKey": RK, "current": kid,
                      "keys": json.dumps({kid: {"key": key, "since": tables.iso()}})}
            return entity, entity

        entity = await tables.update(self.table, PK, RK, made, rounds=5, what="the seal's keys")
        keys = json.loads(entity["keys"])
        self._keys = {kid: base64.b64decode(v["key"]) for kid, v in keys.items()}
        self._current = str(entity["current"])
        self._read_at = self._clock()
        self._unknown = set()

    async def _ensure(self, *, kid: str = "") -> None:
        async with self._lock:
            age = self._clock() - self._read_at
            if not self._keys or age > CACHE_SECONDS or (
                    kid and kid not in self._keys
                    and (kid not in self._unknown or age > REFRESH_SECONDS)):
                await self._load()
            if kid and kid not in self._keys:
                self._unknown.add(kid)

    # --- signing and checking --------------------------------------------

    async def sign(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """The message with the app's signature, if it carries an app-only
        field (others are left as they are)."""
        out = {k: v for k, v in message.items() if k != SIGNATURE}
        if not app_only_fields(out):
            return out
        await self._ensure()
        out[SIGNATURE] = f"{self._current}.{_mac(self._keys[self._current], out)}"
        return out

    async def check(self, data: Mapping[str, Any]) -> None:
        """Raise InvalidMessage unless the app-only fields of `data` (a parsed
        queue message) carry a valid signature of the app."""
        fields = app_only_fields(data)
        if not fields:
            return
        named = ", ".join(repr(f) for f in fields)
        signature = data.get(SIGNATURE)
        if not isinstance(signature, str) or "." not in signature:
            raise InvalidMessage(REASON, f"{named} is set by the app only, and this message "
                                         f"is not signed by it: producers leave it out")
        kid, _, mac = signature.partition(".")
        await self._ensure(kid=kid)
        key = self._keys.get(kid)
        if key is None or not hmac.compare_digest(mac, _mac(key, data)):
            raise InvalidMessage(REASON, f"{named} is set by the app only, and this message's "
                                         f"signature does not verify: producers leave it out")

    async def rotate(self) -> str:
        """Sign with a new key from now on (every instance within
        CACHE_SECONDS); keys older than KEEP_DAYS are dropped. Returns its id."""
        def rotated(found: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
            keys: dict[str, Any] = json.loads(found["keys"]) if found else {}
            oldest = tables.iso(tables.now_utc() - timedelta(days=KEEP_DAYS))
            keys = {kid: v for kid, v in keys.items() if v.get("since", "") >= oldest}
            kid, key = _new_key()
            keys[kid] = {"key": key, "since": tables.iso()}
            return {"PartitionKey": PK, "RowKey": RK, "current": kid,
                    "keys": json.dumps(keys)}, kid

        kid = await tables.update(self.table, PK, RK, rotated, what="the seal's keys")
        self._read_at = float("-inf")  # this process signs with it at once
        return kid


def _new_key() -> tuple[str, str]:
    return secrets.token_hex(4), base64.b64encode(secrets.token_bytes(32)).decode()
