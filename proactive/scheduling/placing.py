"""Placing scheduled sends: a new one into the table (or straight onto the
queue when due within the minute), and each item at its next occurrence.

An occurrence due within LOOKAHEAD goes onto the outbox queue as the ordinary
`send`, with a visibility delay ending at its time. Its key is deterministic
(the key, or for a series `key:2026-12-01T08:00Z`), so a send repeated after a
crash is dropped by the delivery record.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from proactive.contract import Content, Op, OutboxMessage, Target, TargetKind, build, parse_target
from proactive.contract.schedule.errors import ScheduleError
from proactive.contract.schedule.spec import Spec
from proactive.contract.schedule.zones import iso_instant, load_zone, zone_or_none
from proactive.errors import InvalidMessage
from proactive.scheduling.recurrence import Occurrence, Plan, default_start, lateness
from proactive.scheduling.store import (
    ScheduleItem,
    ScheduleStore,
    State,
    ZoneSource,
    due_rk,
    due_row,
    if_match,
)
from proactive.storage import tables
from proactive.storage.queues import dumps
from proactive.telemetry import log_id

if TYPE_CHECKING:
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)

LOOKAHEAD = timedelta(seconds=60)  # due this soon: onto the queue with a visibility delay


# --- time zones ---------------------------------------------------------------------

async def recipient_zone(rt: Runtime, target: Target) -> str:
    """The zone captured from the recipient's activities ('' when unknown).
    Only a person has one: a user, or a personal conversation."""
    ref = None
    if target.kind == TargetKind.USER:
        ref = await rt.references.user(target.id, target.tenant or None)
    elif target.kind == TargetKind.CONVERSATION:
        ref = await rt.references.conversation(target.id, target.tenant or None)
        if ref is not None and ref.conversation_type != "personal":
            ref = None
    if ref is None or not ref.timezone:
        return ""
    if zone_or_none(ref.timezone) is None:
        log.warning("recipient %s has an unknown time zone %r; using the default",
                    log_id(target.recipient), ref.timezone)
        return ""
    return ref.timezone


def default_zone(rt: Runtime) -> str:
    name = rt.settings.default_timezone or "UTC"
    if zone_or_none(name) is None:
        log.error("PROACTIVE_DEFAULT_TIMEZONE %r is not a known time zone; using UTC", name)
        return "UTC"
    return name


async def resolve_zone(rt: Runtime, spec: Spec, target: Target) -> tuple[str, ZoneSource]:
    """(zone, source) for a schedule sent to `target`."""
    if not spec.zoned:
        return "UTC", ZoneSource.NAMED
    if spec.timezone:
        return spec.timezone, ZoneSource.NAMED
    zone = await recipient_zone(rt, target)
    return (zone, ZoneSource.RECIPIENT) if zone else (default_zone(rt), ZoneSource.DEFAULT)


async def plan_of(rt: Runtime, item: ScheduleItem) -> tuple[Plan, int]:
    """The item's plan, and the entities read for it. A series in the
    recipient's zone follows the zone the recipient has now (and one on the
    default moves to theirs once known)."""
    if item.spec.recurring and item.zone_source in (ZoneSource.RECIPIENT, ZoneSource.DEFAULT):
        item.timezone, item.zone_source = await resolve_zone(rt, item.spec,
                                                             parse_target(item.target))
        return Plan(item.spec, item.timezone), 1
    return Plan(item.spec, item.timezone), 0


# --- one occurrence onto the queue ----------------------------------------------------

def _message(item: ScheduleItem, occ: Occurrence, content: dict[str, Any]) -> OutboxMessage:
    """The ordinary outbox send of one occurrence."""
    to = item.target
    if item.broadcast:
        # One user of a many-user send: as a part of one, so the key's
        # progress counters and its cancel apply.
        users = {"users": [to["user"]], **({"tenant": to["tenant"]} if to.get("tenant") else {})}
        return build(Op.SEND, key=item.send_key(occ), to=users, part=True, **content)
    return build(Op.SEND, key=item.send_key(occ), to=to, **content)


async def dispatch(rt: Runtime, item: ScheduleItem, occ: Occurrence, now: datetime) -> bool:
    """Enqueue one occurrence (unless cancelled on its own) and record it on the
    item. The queue's visibility delay holds it until its time. False when
    it was skipped."""
    stamp = iso_instant(occ.instant)
    skipped = stamp in item.skips
    content = item.overrides.get(stamp) or item.content
    if skipped:
        item.skipped += 1
        log.info("schedule %s -> %s: occurrence %s skipped (cancelled)", item.key,
                 log_id(item.recipient), stamp)
    else:
        delay = max(0.0, (occ.instant - now).total_seconds())
        try:
            message = _message(item, occ, content)
        except InvalidMessage as exc:  # stored under older rules: parked, as the worker would
            raw = {**OutboxMessage(Op.SEND, item.send_key(occ)).to_json(), "to": item.target,
                   **content}
            await rt.outbox.poison(dumps(raw), reason=exc.reason, detail=exc.detail)
        else:
            await rt.outbox.put(message, delay=math.ceil(delay))
        late = lateness(occ.instant, now)
        item.fired += 1
        item.last_lateness, item.last_key = late, item.send_key(occ)
        item.last_fired_at = tables.iso(now)
        if late >= 60:
            log.warning("schedule %s -> %s: occurrence %s went out %.0f s late", item.key,
                        log_id(item.recipient), stamp, late)
    item.last_due = stamp
    forget(item, occ)
    return not skipped


def forget(item: ScheduleItem, occ: Occurrence) -> None:
    """Drop the per-occurrence cancel / content of an occurrence that fired."""
    stamp = iso_instant(occ.instant)
    item.skips = [s for s in item.skips if s != stamp]
    item.overrides.pop(stamp, None)


# --- the item at its next occurrence -------------------------------------------------------

async def place(rt: Runtime, store: ScheduleStore, item: ScheduleItem, etag: str | None,
                plan: Plan, occ: Occurrence | None, now: datetime) -> str:
    """Write the item with its next occurrence `occ`, moving its due row in the
    same transaction. Occurrences due within LOOKAHEAD go onto the queue now
    (with a visibility delay) instead. Conflict if the item changed since
    `etag` (None: it must not exist yet). Returns what happened."""
    queued = 0
    while occ is not None and occ.instant <= now + LOOKAHEAD:
        queued += await dispatch(rt, item, occ, now)
        occ = plan.after(occ, now)
    old_row = item.due_row
    row = "" if occ is None else due_rk(occ.instant, item.key, item.recipient)
    ops: list[Any] = []
    if old_row and old_row != row:
        ops.append(("delete", {"PartitionKey": item.partition, "RowKey": old_row}))
    stamp = tables.iso(now)
    item.updated_at, item.lease_until = stamp, ""
    item.next, item.due_row = occ, row
    if occ is None:
        item.state, item.finished_at = State.DONE, stamp
        if etag is None:
            return "queued"  # a one-off due within the minute never touches the table
    else:
        item.state = State.SCHEDULED
        if row != old_row:
            ops.append(("create", due_row(item)))
    entity = item.to_entity()
    ops.append(("create", entity) if etag is None else ("update", entity, if_match(etag)))
    await store.submit(ops)
    if occ is None:
        return "queued" if queued else "done"
    return "scheduled"


def new_item(key: str, target: Target, content: Content, spec: Spec, zone: str,
             source: ZoneSource, now: datetime, *, broadcast: bool = False) -> ScheduleItem:
    """The item of a new schedule (not yet pointing at an occurrence)."""
    return ScheduleItem(key=key, recipient=target.recipient, spec=spec,
                        target=target.to_json(), content=content.to_json(), timezone=zone,
                        zone_source=source, created_at=tables.iso(now),
                        recurring=spec.recurring, broadcast=broadcast)


def rows_for(key: str, target: Target, content: Content, spec: Spec, zone: str,
             now: datetime) -> list[dict[str, Any]]:
    """The two rows `schedule` writes for a send whose first occurrence is
    beyond the lookahead: the item and its due row (same partition). For
    seeding benchmarks and tests in bulk, with batch transactions."""
    occ = Plan(spec, zone).first(now)
    assert occ is not None
    item = new_item(key, target, content, spec, zone, ZoneSource.NAMED, now)
    item.next, item.due_row = occ, due_rk(occ.instant, key, target.recipient)
    return [item.to_entity(), due_row(item)]


async def first_occurrence(rt: Runtime, spec: Spec, target: Target, now: datetime
                           ) -> tuple[Spec, str, ZoneSource, Plan, Occurrence]:
    """The zone, the plan and its first occurrence from `now`. A series
    without a start starts now, in its zone: it is checked from there, the
    start it keeps. ScheduleError if nothing is left, or it never fires."""
    zone, source = await resolve_zone(rt, spec, target)
    if spec.recurring and spec.start is None:
        spec = spec.with_start(default_start(now, load_zone(zone)))
    plan = Plan(spec, zone)
    first = plan.first(now)
    if first is None:
        raise ScheduleError("the schedule has no occurrence from now on (its 'until' or "
                            "'count' is already over)")
    return spec, zone, source, plan, first


# --- a new scheduled send ---------------------------------------------------------------------

async def store_send(rt: Runtime, message: OutboxMessage, *, now: datetime | None = None
                     ) -> str:
    """Store a `send` with a schedule (one recipient, or one part of a
    many-user send: an item per user, each in their own time zone), or queue
    it when due within the minute. Returns what happened (`scheduled`,
    `queued`, `already-scheduled` ...). Raises ScheduleError (the message
    goes to the poison queue) when the schedule can't be used from now."""
    assert message.target is not None
    if message.target.is_broadcast:
        return await _store_part(rt, message, now)
    return await schedule(rt, message, now=now)


async def _store_part(rt: Runtime, message: OutboxMessage, now: datetime | None) -> str:
    assert message.target is not None
    if await rt.campaigns.cancelled(message.key):
        return "cancelled"
    gate = asyncio.Semaphore(8)
    tenant = message.target.tenant

    async def one(user: str) -> str:
        async with gate:
            single = replace(message, target=Target(TargetKind.USER, user, tenant=tenant))
            return await schedule(rt, single, now=now, broadcast=True)

    results = await asyncio.gather(*(one(u) for u in message.target.users),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return "scheduled"


async def schedule(rt: Runtime, message: OutboxMessage, *, now: datetime | None = None,
                   broadcast: bool = False) -> str:
    """Carry out a `send` with a schedule to one recipient: store it, or queue
    it when it is due within the minute. Idempotent per (key, recipient).
    Raises ScheduleError (for the poison queue) when it has no occurrence."""
    spec, target, content = message.schedule, message.target, message.content
    assert spec is not None and target is not None and content is not None
    now = now or tables.now_utc()
    store = ScheduleStore(rt.schedules_table)
    item = new_item(message.key, target, content, spec, "UTC", ZoneSource.NAMED, now)
    found = await store.read(item.partition, item.row_key)
    if found is not None and found[0].state != State.CANCELLED:
        log.info("schedule %s -> %s is already %s", message.key, log_id(target.recipient),
                 found[0].state)
        return f"already-{found[0].state}"
    spec, zone, source, plan, first = await first_occurrence(rt, spec, target, now)
    item = new_item(message.key, target, content, spec, zone, source, now,
                    broadcast=broadcast)
    etag = None
    if found is not None:  # cancelled before: schedule it again in its place
        old, etag = found
        item.created_at, item.due_row = old.created_at or item.created_at, old.due_row
    try:
        return await place(rt, store, item, etag, plan, first, now)
    except tables.Conflict:
        return "already-scheduled"  # a copy of this message got there first
