"""Delivery records: one row per (key, recipient) in Table Storage.

They are both the status producers read and the guard that makes a send
happen once: a worker must *claim* the row (an insert, or an ETag-conditional
replace) before it calls Teams, and only the claim's holder may complete it.
A redelivered queue message finds the row `sent` and stops; a second worker
holding a copy finds a fresh claim and backs off.

States: sending (claimed, lease running) -> sent | failed | retrying |
cancelled; sent -> deleted. `reason` says why for failed and retrying rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from proactive.delivering.outcomes import DeliveryState
from proactive.errors import Busy
from proactive.storage import tables

if TYPE_CHECKING:
    from proactive.storage.tables import Table

# The states are defined once, with what becomes of a message.
SENDING, SENT, FAILED, RETRYING, DELETED, CANCELLED = (
    DeliveryState.SENDING, DeliveryState.SENT, DeliveryState.FAILED, DeliveryState.RETRYING,
    DeliveryState.DELETED, DeliveryState.CANCELLED)
FINAL = frozenset({SENT, FAILED, DELETED, CANCELLED})


@dataclass
class Claim:
    entity: dict[str, Any]
    etag: str

    @property
    def attempts(self) -> int:
        return int(self.entity.get("attempts", 1))


class DeliveryStore:
    def __init__(self, table: Table, *, lease: timedelta = timedelta(seconds=30)) -> None:
        self.table = table
        self.lease = lease

    async def claim(self, key: str, recipient: str) -> Claim | dict[str, Any]:
        """A Claim to go ahead, or the finished row (sent/failed/deleted) to
        report instead. Raises Busy while another worker's claim is live."""
        now = tables.now_utc()
        pk, rk = tables.safe_key(key), tables.safe_key(recipient)
        fresh = {
            "PartitionKey": pk, "RowKey": rk, "key": key, "recipient": recipient,
            "state": SENDING, "attempts": 1, "createdAt": tables.iso(now),
            "updatedAt": tables.iso(now), "leaseUntil": tables.iso(now + self.lease),
        }
        try:
            return Claim(fresh, await tables.create(self.table, fresh))
        except tables.Conflict:
            pass
        found = await tables.read(self.table, pk, rk)
        if found is None:
            raise Busy  # deleted under us: let the queue bring the message back
        entity, etag = found
        if entity.get("state") in FINAL:
            return entity
        if entity.get("state") == SENDING and entity.get("leaseUntil", "") > tables.iso(now):
            raise Busy
        entity.update(state=SENDING, attempts=int(entity.get("attempts", 0)) + 1,
                      updatedAt=tables.iso(now), leaseUntil=tables.iso(now + self.lease))
        try:
            return Claim(entity, await tables.replace_if(self.table, entity, etag))
        except tables.Conflict as exc:
            raise Busy from exc

    async def finish(self, claim: Claim, state: str, **fields: Any) -> None:
        """Record the outcome of a claimed attempt (only the holder may)."""
        now = tables.iso()
        claim.entity.update(fields, state=state, updatedAt=now, leaseUntil="")
        if state == SENT:
            claim.entity["sentAt"] = now
            claim.entity.pop("reason", None)
        claim.etag = await tables.replace_if(self.table, claim.entity, claim.etag)

    async def by_key(self, key: str) -> list[tuple[dict[str, Any], str]]:
        rows = []
        async for entity in self.table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": tables.safe_key(key)}
        ):
            rows.append((dict(entity), str(entity.metadata["etag"])))
        return rows

    async def save(self, entity: dict[str, Any], etag: str) -> str:
        entity["updatedAt"] = tables.iso()
        return await tables.replace_if(self.table, entity, etag)
