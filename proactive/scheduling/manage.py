"""Changing scheduled sends by key: `cancel`, `delete` and `update` (new
content, a new time), of a whole key or of one occurrence of a series
(`standup:2026-12-07T08:00Z`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from proactive.contract import Op, OutboxMessage, parse_target
from proactive.contract.schedule.errors import ScheduleError
from proactive.contract.schedule.spec import Spec, split_occurrence_key
from proactive.contract.schedule.zones import iso_instant
from proactive.scheduling.placing import first_occurrence, place
from proactive.scheduling.recurrence import Plan
from proactive.scheduling.store import ScheduleItem, ScheduleStore, State, if_match
from proactive.storage import tables

if TYPE_CHECKING:
    from proactive.runtime import Runtime

MAX_DATA_CHARS = 400_000  # an item's content, with per-occurrence changes (entity: 1 MiB)


@dataclass
class Managed:
    found: bool = False  # the key names scheduled items (in any state)
    changed: int = 0  # items or occurrences changed
    busy: bool = False  # being dispatched right now: try again shortly


async def manage(rt: Runtime, message: OutboxMessage, *, now: datetime | None = None
                 ) -> Managed:
    """Apply `update`, `delete` or `cancel` to the scheduled items of the key:
    cancel / delete stop them, update changes their content (and with a
    schedule, their time). A key of the form `series:2026-12-01T08:00Z`
    names one future occurrence of a series: cancel / delete skip it, update
    gives it its own content. Raises ScheduleError for a schedule that can't
    be used."""
    now = now or tables.now_utc()
    store = ScheduleStore(rt.schedules_table)
    result = Managed()
    items = await store.by_key(message.key)
    if items:
        result.found = True
        for item, etag in items:
            await _manage_item(rt, store, message, item, etag, now, result)
        return result
    parts = split_occurrence_key(message.key)
    if parts is None or (message.op == Op.UPDATE and message.content is None):
        return result
    series, instant = parts
    for item, etag in await store.by_key(series):
        if item.recurring:
            result.found = True
            await _manage_occurrence(store, message, item, etag, instant, now, result)
    return result


async def _reread(store: ScheduleStore, item: ScheduleItem) -> tuple[ScheduleItem, str] | None:
    return await store.read(item.partition, item.row_key)


async def _manage_item(rt: Runtime, store: ScheduleStore, message: OutboxMessage,
                       item: ScheduleItem, etag: str, now: datetime, result: Managed) -> None:
    async for _ in tables.attempts(6):
        if not item.state.active:
            return
        try:
            if message.op in (Op.CANCEL, Op.DELETE):
                await _cancel(store, item, etag, now)
            else:
                if message.schedule is not None and item.state == State.DISPATCHING:
                    result.busy = True
                    return
                if message.content is not None:
                    item.content = message.content.to_json()
                if message.schedule is not None:
                    await _reschedule(rt, store, item, etag, message.schedule, now)
                else:
                    item.updated_at = tables.iso(now)
                    await store.replace(item, etag)
            result.changed += 1
            return
        except tables.Conflict:
            found = await _reread(store, item)
            if found is None:
                return
            item, etag = found
    result.busy = True


async def _cancel(store: ScheduleStore, item: ScheduleItem, etag: str, now: datetime) -> None:
    ops: list[Any] = []
    if item.due_row:
        ops.append(("delete", {"PartitionKey": item.partition, "RowKey": item.due_row}))
    item.state, item.next, item.due_row, item.lease_until = State.CANCELLED, None, "", ""
    item.cancelled_at = item.updated_at = tables.iso(now)
    ops.append(("update", item.to_entity(), if_match(etag)))
    await store.submit(ops)


async def _reschedule(rt: Runtime, store: ScheduleStore, item: ScheduleItem, etag: str,
                      spec: Spec, now: datetime) -> None:
    target = parse_target(item.target)
    spec, zone, source, plan, first = await first_occurrence(rt, spec, target, now)
    item.spec, item.recurring, item.timezone, item.zone_source = \
        spec, spec.recurring, zone, source
    await place(rt, store, item, etag, plan, first, now)


async def _manage_occurrence(store: ScheduleStore, message: OutboxMessage, item: ScheduleItem,
                             etag: str, instant: datetime, now: datetime,
                             result: Managed) -> None:
    stamp = iso_instant(instant)
    async for _ in tables.attempts(6):
        if not item.state.active or not _is_pending(item, instant):
            return
        if message.op in (Op.CANCEL, Op.DELETE):
            item.skips = sorted({*item.skips, stamp})
        else:
            assert message.content is not None
            item.overrides[stamp] = message.content.to_json()
        if item.data_size() > MAX_DATA_CHARS:
            raise ScheduleError("too many changed occurrences stored for this series: "
                                "update the series instead")
        item.updated_at = tables.iso(now)
        try:
            await store.replace(item, etag)
            result.changed += 1
            return
        except tables.Conflict:
            found = await _reread(store, item)
            if found is None:
                return
            item, etag = found


def _is_pending(item: ScheduleItem, instant: datetime, limit: int = 10_000) -> bool:
    """Whether `instant` is an occurrence of the series still to come."""
    current = item.next
    if current is None:
        return False
    if instant == current.instant:
        return item.state == State.SCHEDULED  # dispatching: too late
    if instant < current.instant:
        return False
    for nxt in Plan(item.spec, item.timezone).following(current, limit):
        if nxt.instant >= instant:
            return nxt.instant == instant
    return False
