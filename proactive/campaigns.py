"""Sends to many recipients under one key: progress and cancellation.

Table `sends`, partition = the key. Row `summary` holds the state
(running / cancelled) and when; rows `shard-0` .. `shard-7` hold counters
(queued, sent, failed, skipped and one count per reason). A result adds to a
random shard with an ETag-conditional write, O(1) whatever the audience size,
and spreading writers over eight rows keeps them from queueing on one.
Progress is the sum of the shards, readable at any time.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, Any

from . import tables

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

SHARDS = 8
RUNNING = "running"
CANCELLED = "cancelled"
# Reasons a recipient was passed over without a Connector call.
SKIP_REASONS = frozenset({"blocked", "uninstalled", "disabled", "cancelled"})


class Campaigns:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    async def start(self, key: str) -> dict[str, Any]:
        """The summary row, created if this is the key's first broadcast."""
        pk = tables.safe_key(key)
        entity = {"PartitionKey": pk, "RowKey": "summary", "key": key,
                  "state": RUNNING, "createdAt": tables.iso()}
        try:
            await tables.create(self.table, entity)
        except tables.Conflict:
            # A redelivered split, or more recipients under the same key.
            found = await tables.read(self.table, pk, "summary")
            return found[0] if found else entity
        return entity

    async def note(self, key: str, **fields: Any) -> None:
        await tables.merge(self.table, {"PartitionKey": tables.safe_key(key),
                                        "RowKey": "summary", **fields})

    async def cancel(self, key: str) -> bool:
        """Mark the send cancelled; False if there is no such send."""
        pk = tables.safe_key(key)
        if await tables.read(self.table, pk, "summary") is None:
            return False
        await tables.merge(self.table, {"PartitionKey": pk, "RowKey": "summary",
                                        "state": CANCELLED, "cancelledAt": tables.iso()})
        return True

    async def cancelled(self, key: str) -> bool:
        found = await tables.read(self.table, tables.safe_key(key), "summary")
        return bool(found) and found[0].get("state") == CANCELLED  # type: ignore[index]

    async def add(self, key: str, counts: Counter[str]) -> None:
        """Add to the counters (one shard, one conditional write)."""
        if not counts:
            return
        pk, rk = tables.safe_key(key), f"shard-{random.randrange(SHARDS)}"
        async for _ in tables.attempts(20):
            found = await tables.read(self.table, pk, rk)
            fresh: dict[str, Any] = {"PartitionKey": pk, "RowKey": rk}
            row, etag = found if found else (fresh, "")
            for name, n in counts.items():
                row[name] = int(row.get(name, 0)) + n
            try:
                await tables.write_if(self.table, row, etag)
            except tables.Conflict:
                continue
            return
        raise tables.Conflict(f"counters of {key} kept changing")

    async def progress(self, key: str) -> dict[str, Any] | None:
        summary: dict[str, Any] | None = None
        totals: Counter[str] = Counter()
        async for entity in self.table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": tables.safe_key(key)}):
            row = dict(entity)
            if row["RowKey"] == "summary":
                summary = {k: v for k, v in row.items() if k not in ("PartitionKey", "RowKey")}
            else:
                totals.update({k: int(v) for k, v in row.items()
                               if k not in ("PartitionKey", "RowKey")})
        if summary is None:
            return None
        return {**summary, "counts": dict(totals)}


def result_counts(reason: str) -> Counter[str]:
    """What one recipient's outcome adds to the counters."""
    if reason == "sent":
        return Counter(sent=1)
    kind = "skipped" if reason in SKIP_REASONS else "failed"
    # Table property names allow letters, digits and underscores.
    return Counter({kind: 1, f"{kind}_{reason.replace('-', '_')}": 1})
