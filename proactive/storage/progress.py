"""Sends to many recipients under one key: progress and cancellation.

Table `sends`, partition = the key. Row `summary` holds the state
(running / cancelled) and when; rows `shard-0` .. `shard-7` hold counters
(queued, sent, failed, skipped and one count per reason). A result adds to a
random shard with an ETag-conditional write, O(1) whatever the audience size,
and spreading writers over eight rows keeps them from queueing on one; a
process's next count goes to the shard it wrote last, with that write's ETag
and no read (only a conflict makes it read one). Progress is the sum of the
shards, readable at any time.

Each recipient's result is counted once: with the shard write goes, in the
same entity-group transaction, a marker row `~<recipient>` that must not exist
yet. So a part redelivered after its worker died (whose recipients now find
their delivery rows final) can count what the dead worker never did, and
nothing is counted twice. Markers sort after the counter rows, so reading
progress never scans them.

A send reaches a final state by itself: once its audience is split (a
`split-*` row) and every queued recipient is counted (sent + failed + skipped
== queued), the summary turns `done` (a cancelled send stays `cancelled`)
with `finishedAt`, `durationSeconds` and the totals. `settle` checks that after
each part is counted, and every progress read does it too, so a worker dying
between its count and its check leaves the flip to the next reader. The flip
is an ETag-conditional replace of the summary: exactly one writer makes it.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from proactive.storage import tables
from proactive.storage.send_index import SendIndexRow, SendState

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

SHARDS = 8
# Entries counted in one entity-group transaction: at most 100 operations, a
# marker per entry and the shard.
PER_TRANSACTION = 99
# Keys whose last-written shard a process remembers (then it forgets them all).
REMEMBERED_KEYS = 1024
RUNNING = "running"
CANCELLED = "cancelled"
DONE = "done"
# Reasons a recipient was passed over without a Connector call.
SKIP_REASONS = frozenset({"blocked", "uninstalled", "disabled", "cancelled", "opted-out"})
# Row keys of the per-recipient markers start with this; it sorts after
# "shard-*", "split-*" and "summary", so `RowKey lt MARKER` skips the markers.
MARKER = "~"
# Counters of recipients with a result (an `install` op counts its own two).
FINISHED = ("sent", "failed", "skipped", "installed", "already_installed")


class Campaigns:
    def __init__(self, table: TableClient) -> None:
        self.table = table
        # Per key, the shard this process last wrote and its ETag: the next
        # count writes it back optimistically, without reading it first (as
        # the tenant pacer does its budget row); a conflict means another
        # process wrote that shard meanwhile, and only then is one read.
        self._shard_written: dict[str, tuple[dict[str, Any], str]] = {}

    async def start(self, key: str, *, expected: bool = False,
                    listed: SendIndexRow | None = None) -> tuple[dict[str, Any], bool]:
        """The summary row, created if this is the key's first broadcast, and
        whether this call created it. `expected`: it almost surely exists (a
        part of a split send), so it is read first: one request instead of a
        refused insert and a read. `listed`: what the send index shows of it,
        written once, by the call that created the summary."""
        pk = tables.safe_key(key)
        if expected:
            found = await tables.read(self.table, pk, "summary")
            if found:
                return found[0], False
        created = tables.iso()
        index = replace(listed or SendIndexRow(key=key, created_at=created), key=key,
                        created_at=created)
        entity = {"PartitionKey": pk, "RowKey": "summary", "key": key,
                  "state": RUNNING, "createdAt": created, "indexRow": index.row_key}
        try:
            await tables.create(self.table, entity)
        except tables.Conflict:
            # A redelivered split, or more recipients under the same key.
            found = await tables.read(self.table, pk, "summary")
            return (found[0] if found else entity), False
        # After the summary: a crash between the two leaves a send unlisted
        # (still readable by key), never a listed key without a send.
        await tables.merge(self.table, index.to_entity())
        return entity, True

    async def _list_state(self, summary: Mapping[str, Any], state: str) -> None:
        """Copy a final state to the send's index row (if it has one)."""
        if summary.get("indexRow"):
            await tables.merge(self.table, {"PartitionKey": SendIndexRow.partition(),
                                            "RowKey": summary["indexRow"],
                                            "state": str(SendState(state))})

    async def was_split(self, key: str, audience: str) -> bool:
        found = await tables.read(self.table, tables.safe_key(key), f"split-{audience}")
        return found is not None

    async def mark_split(self, key: str, audience: str) -> None:
        """After every part is queued: a crash before this re-splits (each user
        is still delivered once), one after it does not."""
        await tables.merge(self.table, {"PartitionKey": tables.safe_key(key),
                                        "RowKey": f"split-{audience}", "at": tables.iso()})

    async def cancel(self, key: str) -> bool:
        """Mark the send cancelled; False if there is no such send."""
        pk = tables.safe_key(key)
        found = await tables.read(self.table, pk, "summary")
        if found is None:
            return False
        await tables.merge(self.table, {"PartitionKey": pk, "RowKey": "summary",
                                        "state": CANCELLED, "cancelledAt": tables.iso()})
        await self._list_state(found[0], CANCELLED)
        return True

    async def cancelled(self, key: str) -> bool:
        found = await tables.read(self.table, tables.safe_key(key), "summary")
        return bool(found) and found[0].get("state") == CANCELLED  # type: ignore[index]

    async def count(self, key: str, results: Mapping[str, Counter[str]]) -> None:
        """Add to the counters, each entry (a recipient's result, a part's
        queued users) once however often it is reported: one transaction
        writes a shard and a marker per entry, for up to PER_TRANSACTION
        entries at a time."""
        entries = list(results.items())
        for start in range(0, len(entries), PER_TRANSACTION):
            await self._count(key, dict(entries[start:start + PER_TRANSACTION]))

    async def _count(self, key: str, results: Mapping[str, Counter[str]]) -> None:
        from azure.core import MatchConditions
        from azure.data.tables import TableTransactionError, UpdateMode

        pk, pending, recheck = tables.safe_key(key), dict(results), False
        async for attempt in tables.attempts(20):
            if recheck:  # a marker existed (or the answer did not say which row failed)
                pending = {who: why for who, why in pending.items()
                           if await tables.read(self.table, pk, _marker(who)) is None}
            if not pending:
                return
            written = self._shard_written.pop(pk, None) if attempt == 0 else None
            row, etag = written or await self._any_shard(pk)
            row = dict(row)
            for counts in pending.values():
                for name, n in counts.items():
                    row[name] = int(row.get(name, 0)) + n
            ops: list[Any] = [("create", {"PartitionKey": pk, "RowKey": _marker(who),
                                          "counts": json.dumps(counts),
                                          "countedAt": tables.iso()})
                              for who, counts in pending.items()]
            ops.append(("update", row, {"mode": UpdateMode.REPLACE, "etag": etag,
                                        "match_condition": MatchConditions.IfNotModified})
                       if etag else ("create", row))
            try:
                answers = await self.table.submit_transaction(ops)
            except TableTransactionError as exc:
                if exc.status_code not in (404, 409, 412):
                    raise
                # The shard is the last operation: only it failing means the
                # markers are still free.
                recheck = exc.index != len(ops) - 1
                continue
            if len(self._shard_written) >= REMEMBERED_KEYS:
                self._shard_written.clear()
            self._shard_written[pk] = row, str(answers[-1].get("etag") or "")
            return
        raise tables.Conflict(f"counters of {key} kept changing")

    async def _any_shard(self, pk: str) -> tuple[dict[str, Any], str]:
        rk = f"shard-{random.randrange(SHARDS)}"
        found = await tables.read(self.table, pk, rk)
        return found if found else ({"PartitionKey": pk, "RowKey": rk}, "")

    async def progress(self, key: str) -> dict[str, Any] | None:
        """The summary with the summed counters; settled first if it can be."""
        read = await self._read(key)
        if read is None:
            return None
        summary, etag, totals, split = read
        if split and not summary.get("finishedAt") and _settled(totals):
            summary = await self._finish(summary, etag, totals) or summary
        return {k: v for k, v in summary.items() if k not in ("PartitionKey", "RowKey")} | {
            "counts": dict(totals)}

    async def settle(self, key: str) -> bool:
        """Turn the send final if every recipient is counted; True if this
        call did it."""
        read = await self._read(key)
        if read is None:
            return False
        summary, etag, totals, split = read
        if not split or summary.get("finishedAt") or not _settled(totals):
            return False
        return await self._finish(summary, etag, totals) is not None

    async def _read(self, key: str) -> tuple[dict[str, Any], str, Counter[str], bool] | None:
        summary: tuple[dict[str, Any], str] | None = None
        totals: Counter[str] = Counter()
        split = False
        async for entity in self.table.query_entities(
                "PartitionKey eq @pk and RowKey lt @marker",
                parameters={"pk": tables.safe_key(key), "marker": MARKER}):
            row = dict(entity)
            if row["RowKey"] == "summary":
                summary = row, str(entity.metadata["etag"])
            elif row["RowKey"].startswith("shard-"):
                totals.update({k: int(v) for k, v in row.items()
                               if k not in ("PartitionKey", "RowKey")})
            elif row["RowKey"].startswith("split-"):
                split = True
        if summary is None:
            return None
        return summary[0], summary[1], totals, split

    async def _finish(self, summary: dict[str, Any], etag: str,
                      totals: Counter[str]) -> dict[str, Any] | None:
        from datetime import datetime

        now = tables.now_utc()
        try:
            started = datetime.fromisoformat(str(summary.get("createdAt", "")))
            duration = round((now - started).total_seconds(), 3)
        except ValueError:
            duration = 0.0
        final = {**summary, "state": DONE if summary.get("state") == RUNNING
                 else summary.get("state"), "finishedAt": tables.iso(now),
                 "durationSeconds": duration,
                 **{f"total_{name}": totals.get(name, 0)
                    for name in ("queued", "sent", "failed", "skipped")},
                 **{f"total_{name}": totals[name] for name in FINISHED if totals.get(name)}}
        try:
            await tables.replace_if(self.table, final, etag)
        except tables.Conflict:
            return None  # another writer changed it first (finished it, or cancelled)
        await self._list_state(final, str(final["state"]))
        return final


def _settled(totals: Counter[str]) -> bool:
    queued = totals.get("queued", 0)
    return queued > 0 and sum(totals.get(name, 0) for name in FINISHED) >= queued


def _marker(recipient: str) -> str:
    return MARKER + tables.safe_key(recipient)


def result_counts(reason: str) -> Counter[str]:
    """What one recipient's outcome adds to the counters."""
    if reason in ("sent", "installed", "already-installed"):
        return Counter({reason.replace("-", "_"): 1})
    kind = "skipped" if reason in SKIP_REASONS else "failed"
    # Table property names allow letters, digits and underscores.
    return Counter({kind: 1, f"{kind}_{reason.replace('-', '_')}": 1})
