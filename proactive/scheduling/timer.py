"""The timer tick: every minute, put each item due by now + LOOKAHEAD on the
outbox queue, once, and move it to its next occurrence.

Firing: the tick *claims* an item (ETag-conditional write: scheduled ->
dispatching, with a lease) before it enqueues the ordinary outbox `send`, so
racing ticks dispatch an item once. The send's key is deterministic (the key,
or for a series `key:2026-12-01T08:00Z`), so a tick that dies after enqueuing
and is redone after the lease only repeats a send the delivery record drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from proactive import telemetry
from proactive.contract.schedule.zones import iso_instant
from proactive.scheduling.placing import LOOKAHEAD, dispatch, forget, place, plan_of
from proactive.scheduling.recurrence import lateness
from proactive.scheduling.store import SHARDS, ScheduleItem, ScheduleStore, State
from proactive.storage import tables
from proactive.telemetry import log_id

if TYPE_CHECKING:
    from collections.abc import Mapping

    from azure.data.tables.aio import TableClient

    from proactive.runtime import Runtime

log = logging.getLogger(__name__)

# A claim older than this was abandoned (the work it covers takes milliseconds):
# shorter than the timer's minute, so the next tick fires it again.
LEASE = timedelta(seconds=50)
BUDGET = 45.0  # seconds a tick starts new work for; the rest waits for the next tick
CONCURRENCY = 16
# The row each finished tick upserts in the schedules table (one write a minute,
# in a partition no schedule query reads): `python -m proactive doctor` reads
# `at` to tell whether the timer runs.
HEARTBEAT = ("timer", "heartbeat")


@dataclass
class TickReport:
    now: datetime
    read: int = 0  # entities read (due rows, items, references)
    due: int = 0  # due rows found
    dispatched: int = 0  # occurrences put on the queue
    skipped: int = 0  # occurrences cancelled on their own
    busy: int = 0  # claimed by another tick meanwhile
    orphans: int = 0  # due rows without a live item, removed
    deferred: bool = False  # the budget ran out; the next tick goes on
    seconds: float = 0.0
    late: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"now": tables.iso(self.now), "read": self.read, "due": self.due,
                "dispatched": self.dispatched, "skipped": self.skipped, "busy": self.busy,
                "orphans": self.orphans, "deferred": self.deferred,
                "seconds": round(self.seconds, 3),
                "maxLateness": max(self.late, default=0.0)}


async def tick(rt: Runtime, now: datetime | None = None, *, budget: float = BUDGET,
               concurrency: int = CONCURRENCY) -> TickReport:
    """Dispatch every item due by `now` + LOOKAHEAD, once. Safe to run twice,
    or on two instances at once."""
    now = now or tables.now_utc()
    report = TickReport(now)
    started = time.monotonic()
    table = rt.schedules_table
    store = ScheduleStore(table)
    hi = f"d|{iso_instant(now + LOOKAHEAD)}|~"
    slots = asyncio.Semaphore(concurrency)

    async def fire(row: dict[str, Any], etag: str) -> None:
        try:
            await _fire(rt, store, row, etag, now, report)
        except Exception:
            log.exception("schedule %s -> %s: dispatch failed; retried next tick",
                          row.get("key"), log_id(str(row.get("recipient"))))
        finally:
            slots.release()

    async def run(pk: str) -> None:
        tasks = []
        async for row in table.query_entities(
                "PartitionKey eq @pk and RowKey gt 'd|' and RowKey le @hi",
                parameters={"pk": pk, "hi": hi}):
            report.read += 1
            report.due += 1
            if time.monotonic() - started > budget:
                report.deferred = True
                break
            await slots.acquire()
            tasks.append(asyncio.create_task(fire(dict(row), str(row.metadata["etag"]))))
        await asyncio.gather(*tasks)

    await asyncio.gather(*(run(f"s{n}") for n in range(SHARDS)))
    report.seconds = time.monotonic() - started
    await tables.merge(table, {"PartitionKey": HEARTBEAT[0], "RowKey": HEARTBEAT[1],
                               "at": tables.iso(now), "due": report.due,
                               "deferred": report.deferred})
    return report


async def _drop_due_row(table: TableClient, row: Mapping[str, Any], etag: str) -> None:
    """Delete a leftover due row, unless it was written again since it was read."""
    with contextlib.suppress(tables.Conflict):
        await tables.delete_if(table, row["PartitionKey"], row["RowKey"], etag)


async def _claim(store: ScheduleStore, row: dict[str, Any], row_etag: str, now: datetime,
                 report: TickReport) -> tuple[ScheduleItem, str] | None:
    """The item of a due row, claimed for this tick (None: nothing to do)."""
    pk = row["PartitionKey"]
    async for _ in tables.attempts(4):
        found = await store.read(pk, row["item"])
        report.read += 1
        if found is None or found[0].due_row != row["RowKey"] or not found[0].state.active:
            # Left over (can't happen with transactions, but never let one be
            # read on every tick): remove it.
            report.orphans += 1
            await _drop_due_row(store.table, row, row_etag)
            return None
        item, etag = found
        if item.state == State.DISPATCHING and item.lease_until > tables.iso(now):
            report.busy += 1
            return None
        item.state, item.lease_until = State.DISPATCHING, tables.iso(now + LEASE)
        item.claimed_at = item.updated_at = tables.iso(now)
        try:
            return item, await store.replace(item, etag)
        except tables.Conflict:
            continue  # changed meanwhile (an update, or another tick): look again
    report.busy += 1
    return None


async def _fire(rt: Runtime, store: ScheduleStore, row: dict[str, Any], row_etag: str,
                now: datetime, report: TickReport) -> None:
    claimed = await _claim(store, row, row_etag, now, report)
    if claimed is None:
        return
    # Claimed: this tick alone dispatches the occurrence.
    item, etag = claimed
    occ = item.next
    assert occ is not None
    plan, read = await plan_of(rt, item)
    report.read += read
    fired = await dispatch(rt, item, occ, now)
    report.dispatched += fired
    report.skipped += not fired
    if fired:
        report.late.append(lateness(occ.instant, now))
        telemetry.record("proactive.scheduler.lateness", report.late[-1])
    record = {name: getattr(item, name) for name in _RECORD}
    nxt = plan.after(occ, now)
    async for _ in tables.attempts(6):
        try:
            await place(rt, store, item, etag, plan, nxt, now)
            return
        except tables.Conflict:
            pass
        # Changed since the claim: the content was updated, or it was cancelled.
        found = await store.read(row["PartitionKey"], row["item"])
        report.read += 1
        if found is None or found[0].state != State.DISPATCHING \
                or found[0].due_row != row["RowKey"]:
            return  # cancelled or rescheduled meanwhile: theirs is the last word
        item, etag = found
        # The occurrence is on the queue already: record it on the fresh copy.
        for name, value in record.items():
            setattr(item, name, value)
        forget(item, occ)
    log.error("schedule %s -> %s kept changing; its lease runs out and a later tick "
              "finishes it", item.key, log_id(item.recipient))


# What dispatching an occurrence records on the item.
_RECORD = ("fired", "skipped", "last_lateness", "last_key", "last_fired_at", "last_due",
           "timezone", "zone_source")


__all__ = ["BUDGET", "CONCURRENCY", "HEARTBEAT", "LEASE", "TickReport", "tick"]
