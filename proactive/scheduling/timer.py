"""Scheduled sends in Table Storage, and the timer tick that dispatches them.

Layout (table `schedules`): a fixed number of partitions `s0`..`s7`, chosen
by the message key, so every item of a key sits in one partition. Each
partition holds two kinds of rows:

    k|{key}|{recipient hash}     the item: one per (key, recipient), for its
                                 life; what, to whom, when, state, history
    d|{due UTC}|{hash}           the due index: one per item still to fire,
                                 pointing at the item; nothing else

"What is due now" is the RowKey range `d|` .. `d|{now + 60 s}` of each
partition: a tick reads the due rows and their items, never the future.
Moving an item to its next occurrence, cancelling it or rescheduling it is one
entity-group transaction (delete due row, create due row, ETag-conditional
replace of the item), so the index and the items never disagree.

Firing: the tick *claims* an item (ETag-conditional write: scheduled ->
dispatching, with a lease) before it enqueues the ordinary outbox `send`, so
racing ticks dispatch an item once. The send's key is deterministic (the key,
or for a series `key:2026-12-01T08:00Z`), so a tick that dies after enqueuing
and is redone after the lease only repeats a send the delivery record drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from proactive.contract import Content, OutboxMessage, Target, parse_target
from proactive.scheduling.spec import (
    Occurrence,
    Plan,
    ScheduleError,
    Spec,
    iso_instant,
    iso_wall,
    lateness,
    load_zone,
    occurrence_key,
    parse_spec,
    split_occurrence_key,
    wall_of,
    zone_or_none,
)
from proactive.storage import tables

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

    from proactive.delivering.outcomes import Outcome
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)

SHARDS = 8
LOOKAHEAD = timedelta(seconds=60)  # due this soon: onto the queue with a visibility delay
# A claim older than this was abandoned (the work it covers takes milliseconds):
# shorter than the timer's minute, so the next tick fires it again.
LEASE = timedelta(seconds=50)
BUDGET = 45.0  # seconds a tick starts new work for; the rest waits for the next tick
CONCURRENCY = 16
_CHUNK = 30_000  # characters per string property (Table Storage: 64 KiB as UTF-16)
_DIGITS = tuple(str(n) for n in range(1, 40))

SCHEDULED = "scheduled"
DISPATCHING = "dispatching"
DONE = "done"
CANCELLED = "cancelled"
ACTIVE = frozenset({SCHEDULED, DISPATCHING})

# Zone sources: named in the schedule, the recipient's, or the default setting.
NAMED, RECIPIENT, DEFAULT = "named", "recipient", "default"


# --- keys ---------------------------------------------------------------------

def shard(key: str) -> str:
    return f"s{zlib.crc32(key.encode()) % SHARDS}"


def _digest(*parts: str, size: int = 16) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:size]


def item_rk(key: str, recipient: str) -> str:
    return f"k|{tables.safe_key(key)}|{_digest(recipient)}"


def due_rk(due: datetime, key: str, recipient: str) -> str:
    return f"d|{iso_instant(due)}|{_digest(key, recipient, size=20)}"


def _key_prefix(key: str) -> tuple[str, str]:
    start = f"k|{tables.safe_key(key)}|"
    return start, start[:-1] + "}"  # '}' follows '|'


# --- entity helpers ---------------------------------------------------------------

def _set_json(entity: dict[str, Any], name: str, value: Any) -> None:
    """Store JSON in `name`, `name1`, ... (a string property holds 32K characters)."""
    for prop in [p for p in entity if p.startswith(name) and p[len(name):] in ("", *_DIGITS)]:
        del entity[prop]
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for n, at in enumerate(range(0, max(len(text), 1), _CHUNK)):
        entity[f"{name}{n or ''}"] = text[at:at + _CHUNK]


def _get_json(entity: Mapping[str, Any], name: str) -> Any:
    parts, n = [entity.get(name, "")], 1
    while f"{name}{n}" in entity:
        parts.append(entity[f"{name}{n}"])
        n += 1
    return json.loads("".join(parts) or "null")


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _occurrence(item: Mapping[str, Any]) -> Occurrence:
    return Occurrence(wall=datetime.fromisoformat(item["dueWall"]),
                      instant=_instant(item["due"]), seq=int(item.get("seq", 1)))


def _spec(item: Mapping[str, Any]) -> Spec:
    return parse_spec(json.loads(item["spec"]))


async def _submit(table: TableClient, ops: list[Any]) -> list[Mapping[str, Any]]:
    """One entity-group transaction; Conflict when a condition failed (a row
    changed, exists already, or is gone)."""
    from azure.data.tables import TableTransactionError

    try:
        return list(await table.submit_transaction(ops))
    except TableTransactionError as exc:
        if exc.status_code in (404, 409, 412):
            raise tables.Conflict(str(exc.status_code)) from exc
        raise


def _if_match(etag: str) -> dict[str, Any]:
    from azure.core import MatchConditions
    from azure.data.tables import UpdateMode

    return {"mode": UpdateMode.REPLACE, "etag": etag,
            "match_condition": MatchConditions.IfNotModified}


# --- the store --------------------------------------------------------------------

class ScheduleStore:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    async def by_key(self, key: str) -> list[tuple[dict[str, Any], str]]:
        """Every item of `key` (all recipients, all states)."""
        lo, hi = _key_prefix(key)
        rows = []
        async for entity in self.table.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": shard(key), "lo": lo, "hi": hi}):
            if entity.get("key") == key:  # a key containing '|' shares the prefix
                rows.append((dict(entity), str(entity.metadata["etag"])))
        return rows

    async def items(self, *, active_only: bool = True) -> list[dict[str, Any]]:
        query = "PartitionKey eq @pk and RowKey ge 'k|' and RowKey lt 'k}'"
        if active_only:
            query += f" and (state eq '{SCHEDULED}' or state eq '{DISPATCHING}')"
        out: list[dict[str, Any]] = []
        for n in range(SHARDS):
            async for entity in self.table.query_entities(query, parameters={"pk": f"s{n}"}):
                out.append(dict(entity))
        return out


def public_view(item: Mapping[str, Any]) -> dict[str, Any]:
    """What `python -m proactive schedules` shows of an item."""
    data = _get_json(item, "data") or {}
    view = {name: item.get(name) for name in (
        "key", "recipient", "state", "due", "dueLocal", "nextKey", "timezone", "zoneSource",
        "fired", "skipped", "lastDue", "lastKey", "lastFiredAt", "lastLateness", "createdAt",
        "updatedAt", "cancelledAt", "finishedAt") if item.get(name) not in (None, "")}
    view["schedule"] = json.loads(item.get("spec") or "{}")
    view["to"] = data.get("target")
    view["content"] = data.get("content")
    if data.get("skips"):
        view["skips"] = data["skips"]
    if data.get("overrides"):
        view["overrides"] = sorted(data["overrides"])
    return view


async def list_items(table: TableClient, key: str = "", *,
                     active_only: bool = True) -> list[dict[str, Any]]:
    store = ScheduleStore(table)
    if not key:
        rows = await store.items(active_only=active_only)
    else:
        rows = [item for item, _ in await store.by_key(key)]
        occurrence = split_occurrence_key(key)
        if not rows and occurrence:
            rows = [item for item, _ in await store.by_key(occurrence[0])]
    rows.sort(key=lambda item: (item.get("due") or "~", item.get("key", "")))
    return [public_view(item) for item in rows]


# --- time zones --------------------------------------------------------------------

async def recipient_zone(rt: Runtime, target: Target) -> str:
    """The zone captured from the recipient's activities ('' when unknown).
    Only a person has one: a user, or a personal conversation."""
    ref = None
    if target.kind == "user":
        ref = await rt.references.user(target.id, target.tenant or None)
    elif target.kind == "conversation":
        ref = await rt.references.conversation(target.id, target.tenant or None)
        if ref is not None and ref.conversation_type != "personal":
            ref = None
    if ref is None or not ref.timezone:
        return ""
    if zone_or_none(ref.timezone) is None:
        log.warning("recipient %s has an unknown time zone %r; using the default",
                    target.recipient, ref.timezone)
        return ""
    return ref.timezone


def default_zone(rt: Runtime) -> str:
    name = rt.settings.default_timezone or "UTC"
    if zone_or_none(name) is None:
        log.error("PROACTIVE_DEFAULT_TIMEZONE %r is not a known time zone; using UTC", name)
        return "UTC"
    return name


async def resolve_zone(rt: Runtime, spec: Spec, target: Target) -> tuple[str, str]:
    """(zone, source) for a schedule sent to `target`."""
    if not spec.zoned:
        return "UTC", NAMED
    if spec.timezone:
        return spec.timezone, NAMED
    zone = await recipient_zone(rt, target)
    return (zone, RECIPIENT) if zone else (default_zone(rt), DEFAULT)


# --- placing an item: straight onto the queue, or into the table ---------------------

def _message(item: Mapping[str, Any], occ: Occurrence, content: Mapping[str, Any]
             ) -> dict[str, Any]:
    """The ordinary outbox send of one occurrence."""
    to = _get_json(item, "data")["target"]
    message = {"version": 1, "op": "send", "key": _occurrence_key(item, occ), "to": to,
               **content}
    if item.get("broadcast"):
        # One user of a many-user send: as a part of one, so the key's
        # progress counters and its cancel apply.
        message["to"] = {"users": [to["user"]], **({"tenant": to["tenant"]}
                                                   if to.get("tenant") else {})}
        message["part"] = True
    return message


def _occurrence_key(item: Mapping[str, Any], occ: Occurrence) -> str:
    return occurrence_key(item["key"], occ.instant) if item.get("recurring") else item["key"]


async def _dispatch(rt: Runtime, item: dict[str, Any], occ: Occurrence, now: datetime) -> bool:
    """Enqueue one occurrence (unless cancelled on its own) and record it on the
    item. The queue's visibility delay holds it until its time."""
    data = _get_json(item, "data")
    stamp = iso_instant(occ.instant)
    skipped = stamp in data.get("skips", [])
    content = data.get("overrides", {}).get(stamp) or data["content"]
    if skipped:
        item["skipped"] = int(item.get("skipped", 0)) + 1
        log.info("schedule %s -> %s: occurrence %s skipped (cancelled)", item["key"],
                 item["recipient"], stamp)
    else:
        delay = max(0.0, (occ.instant - now).total_seconds())
        await rt.outbox.put(_message(item, occ, content), delay=math.ceil(delay))
        late = lateness(occ.instant, now)
        item.update(fired=int(item.get("fired", 0)) + 1, lastLateness=late,
                    lastKey=_occurrence_key(item, occ), lastFiredAt=tables.iso(now))
        if late >= 60:
            log.warning("schedule %s -> %s: occurrence %s went out %.0f s late", item["key"],
                        item["recipient"], stamp, late)
    item["lastDue"] = stamp
    _forget(item, occ)
    return not skipped


async def _place(rt: Runtime, table: TableClient, item: dict[str, Any], etag: str | None,
                 plan: Plan, occ: Occurrence | None, now: datetime) -> str:
    """Write the item with its next occurrence `occ`, moving its due row in the
    same transaction. Occurrences due within LOOKAHEAD go onto the queue now
    (with a visibility delay) instead. Conflict if the item changed since
    `etag` (None: it must not exist yet). Returns what happened."""
    queued = 0
    while occ is not None and occ.instant <= now + LOOKAHEAD:
        queued += await _dispatch(rt, item, occ, now)
        occ = plan.after(occ, now)
    pk, old_row = item["PartitionKey"], item.get("dueRow", "")
    row = "" if occ is None else due_rk(occ.instant, item["key"], item["recipient"])
    ops: list[Any] = []
    if old_row and old_row != row:
        ops.append(("delete", {"PartitionKey": pk, "RowKey": old_row}))
    stamp = tables.iso(now)
    item.update(updatedAt=stamp, leaseUntil="")
    if occ is None:
        item.update(state=DONE, due="", dueWall="", dueLocal="", dueRow="", nextKey="",
                    finishedAt=stamp)
        if etag is None:
            return "queued"  # a one-off due within the minute never touches the table
    else:
        due_row = _set_next(item, occ, plan)
        if row != old_row:
            ops.append(("create", due_row))
    ops.append(("create", item) if etag is None else ("update", item, _if_match(etag)))
    await _submit(table, ops)
    if occ is None:
        return "queued" if queued else "done"
    return "scheduled"


def _set_next(item: dict[str, Any], occ: Occurrence, plan: Plan) -> dict[str, Any]:
    """Point the item at its next occurrence; returns that occurrence's due row."""
    row = due_rk(occ.instant, item["key"], item["recipient"])
    item.update(state=SCHEDULED, due=iso_instant(occ.instant), dueWall=iso_wall(occ.wall),
                dueLocal=occ.instant.astimezone(plan.zone).isoformat(), seq=occ.seq,
                dueRow=row, nextKey=_occurrence_key(item, occ))
    return {"PartitionKey": item["PartitionKey"], "RowKey": row, "kind": "due",
            "item": item["RowKey"], "key": item["key"], "recipient": item["recipient"],
            "due": item["due"]}


def new_item(key: str, target: Target, content: Content, spec: Spec, zone: str, source: str,
             now: datetime, *, broadcast: bool = False) -> dict[str, Any]:
    """The item row of a new schedule (not yet pointing at an occurrence)."""
    item: dict[str, Any] = {
        "PartitionKey": shard(key), "RowKey": item_rk(key, target.recipient), "kind": "item",
        "key": key, "recipient": target.recipient, "recurring": spec.recurring,
        "broadcast": broadcast, "spec": json.dumps(spec.to_json(), separators=(",", ":")),
        "timezone": zone, "zoneSource": source, "fired": 0, "skipped": 0,
        "createdAt": tables.iso(now), "dueRow": "",
    }
    _set_json(item, "data", {"target": target.to_json(), "content": content.to_json(),
                             "skips": [], "overrides": {}})
    return item


def rows_for(key: str, target: Target, content: Content, spec: Spec, zone: str,
             now: datetime) -> list[dict[str, Any]]:
    """The two rows `schedule` writes for a send whose first occurrence is
    beyond the lookahead: the item and its due row (same partition). For
    seeding benchmarks and tests in bulk, with batch transactions."""
    plan = Plan(spec, zone)
    occ = plan.first(now)
    assert occ is not None
    item = new_item(key, target, content, spec, zone, NAMED, now)
    return [item, _set_next(item, occ, plan)]


# --- scheduling a send ------------------------------------------------------------------

async def schedule_send(rt: Runtime, message: OutboxMessage, *, body: str, message_id: str,
                        now: datetime | None = None) -> Outcome:
    """The outbox's entry: a `send` with a schedule (one recipient, or one part
    of a many-user send: an item per user, each in their own time zone). A
    schedule with no occurrence left goes to the poison queue with why."""
    from proactive.contract import InvalidMessage
    from proactive.delivering.outcomes import Action, Outcome
    from proactive.delivering.requeue import refuse

    try:
        assert message.target is not None
        if message.target.is_broadcast:
            reason = await _schedule_part(rt, message, now)
        else:
            reason = await schedule(rt, message, now=now)
    except ScheduleError as exc:
        return await refuse(rt, body, InvalidMessage(exc.reason, exc.detail),
                            message_id=message_id)
    return Outcome(Action.DONE, reason)


async def _schedule_part(rt: Runtime, message: OutboxMessage, now: datetime | None) -> str:
    assert message.target is not None
    if await rt.campaigns.cancelled(message.key):
        return "cancelled"
    gate = asyncio.Semaphore(8)
    tenant = message.target.tenant

    async def one(user: str) -> str:
        async with gate:
            single = replace(message, target=Target("user", user, tenant=tenant))
            return await schedule(rt, single, now=now, broadcast=True)

    results = await asyncio.gather(*(one(u) for u in message.target.users),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return "scheduled"


async def schedule(rt: Runtime, message: OutboxMessage, *, now: datetime | None = None,
                   broadcast: bool = False) -> str:
    """Carry out a `send` with a schedule: store it, or queue it when it is due
    within the minute. Idempotent per (key, recipient). Raises ScheduleError
    (for the poison queue) when it has no occurrence."""
    spec, target, content = message.schedule, message.target, message.content
    assert spec is not None and target is not None and content is not None
    now = now or tables.now_utc()
    table = rt.schedules_table
    pk, rk = shard(message.key), item_rk(message.key, target.recipient)
    found = await tables.read(table, pk, rk)
    if found is not None and found[0].get("state") != CANCELLED:
        log.info("schedule %s -> %s is already %s", message.key, target.recipient,
                 found[0].get("state"))
        return f"already-{found[0].get('state')}"
    spec, zone, source, plan, first = await _first_occurrence(rt, spec, target, now)
    item = new_item(message.key, target, content, spec, zone, source, now,
                    broadcast=broadcast)
    etag = None
    if found is not None:  # cancelled before: schedule it again in its place
        old, etag = found
        item["createdAt"] = old.get("createdAt", item["createdAt"])
        item["dueRow"] = old.get("dueRow", "")
    try:
        return await _place(rt, table, item, etag, plan, first, now)
    except tables.Conflict:
        return "already-scheduled"  # a copy of this message got there first


# --- the tick ------------------------------------------------------------------------------

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
    hi = f"d|{iso_instant(now + LOOKAHEAD)}|~"
    slots = asyncio.Semaphore(concurrency)

    async def fire(row: dict[str, Any], etag: str) -> None:
        try:
            await _fire(rt, table, row, etag, now, report)
        except Exception:
            log.exception("schedule %s -> %s: dispatch failed; retried next tick",
                          row.get("key"), row.get("recipient"))
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
    return report


async def _drop_due_row(table: TableClient, row: Mapping[str, Any], etag: str) -> None:
    """Delete a leftover due row, unless it was written again since it was read."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

    with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
        await table.delete_entity(row["PartitionKey"], row["RowKey"], etag=etag,
                                  match_condition=MatchConditions.IfNotModified)


async def _fire(rt: Runtime, table: TableClient, row: dict[str, Any], row_etag: str,
                now: datetime, report: TickReport) -> None:
    pk = row["PartitionKey"]
    async for _ in tables.attempts(4):
        found = await tables.read(table, pk, row["item"])
        report.read += 1
        if found is None or found[0].get("dueRow") != row["RowKey"] \
                or found[0].get("state") not in ACTIVE:
            # Left over (can't happen with transactions, but never let one be
            # read on every tick): remove it.
            report.orphans += 1
            await _drop_due_row(table, row, row_etag)
            return
        item, etag = found
        if item["state"] == DISPATCHING and item.get("leaseUntil", "") > tables.iso(now):
            report.busy += 1
            return
        item.update(state=DISPATCHING, leaseUntil=tables.iso(now + LEASE),
                    claimedAt=tables.iso(now), updatedAt=tables.iso(now))
        try:
            etag = await tables.replace_if(table, item, etag)
        except tables.Conflict:
            continue  # changed meanwhile (an update, or another tick): look again
        break
    else:
        report.busy += 1
        return
    # Claimed: this tick alone dispatches the occurrence.
    occ = _occurrence(item)
    plan = await _plan(rt, item, report)
    fired = await _dispatch(rt, item, occ, now)
    report.dispatched += fired
    report.skipped += not fired
    if fired:
        report.late.append(lateness(occ.instant, now))
    record = {name: item[name] for name in _RECORD if name in item}
    nxt = plan.after(occ, now)
    async for _ in tables.attempts(6):
        try:
            await _place(rt, table, item, etag, plan, nxt, now)
            return
        except tables.Conflict:
            pass
        # Changed since the claim: the content was updated, or it was cancelled.
        found = await tables.read(table, pk, row["item"])
        report.read += 1
        if found is None or found[0].get("state") != DISPATCHING \
                or found[0].get("dueRow") != row["RowKey"]:
            return  # cancelled or rescheduled meanwhile: theirs is the last word
        item, etag = found
        # The occurrence is on the queue already: record it on the fresh copy.
        item.update(record)
        _forget(item, occ)
    log.error("schedule %s -> %s kept changing; its lease runs out and a later tick "
              "finishes it", item["key"], item["recipient"])


# What dispatching an occurrence records on the item.
_RECORD = ("fired", "skipped", "lastLateness", "lastKey", "lastFiredAt", "lastDue",
           "timezone", "zoneSource")


def _forget(item: dict[str, Any], occ: Occurrence) -> None:
    """Drop the per-occurrence cancel / content of an occurrence that fired."""
    data = _get_json(item, "data")
    stamp = iso_instant(occ.instant)
    data["skips"] = [s for s in data.get("skips", []) if s != stamp]
    data.get("overrides", {}).pop(stamp, None)
    _set_json(item, "data", data)


async def _plan(rt: Runtime, item: dict[str, Any], report: TickReport | None = None) -> Plan:
    """The item's plan; a series in the recipient's zone follows the zone the
    recipient has now (and one on the default moves to theirs once known)."""
    spec = _spec(item)
    zone = item.get("timezone") or "UTC"
    if spec.recurring and item.get("zoneSource") in (RECIPIENT, DEFAULT):
        data = _get_json(item, "data")
        target = parse_target(data["target"])
        zone, source = await resolve_zone(rt, spec, target)
        if report is not None:
            report.read += 1
        item.update(timezone=zone, zoneSource=source)
    return Plan(spec, zone)


# --- changing scheduled items by key ----------------------------------------------------

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
    table = rt.schedules_table
    store = ScheduleStore(table)
    result = Managed()
    items = await store.by_key(message.key)
    if items:
        result.found = True
        for item, etag in items:
            await _manage_item(rt, table, message, item, etag, now, result)
        return result
    parts = split_occurrence_key(message.key)
    if parts is None or (message.op == "update" and message.content is None):
        return result
    series, instant = parts
    for item, etag in await store.by_key(series):
        if item.get("recurring"):
            result.found = True
            await _manage_occurrence(table, message, item, etag, instant, now, result)
    return result


async def _reread(table: TableClient, item: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    found = await tables.read(table, item["PartitionKey"], item["RowKey"])
    return found if found is not None else ({}, "")


async def _manage_item(rt: Runtime, table: TableClient, message: OutboxMessage,
                       item: dict[str, Any], etag: str, now: datetime, result: Managed) -> None:
    async for _ in tables.attempts(6):
        state = item.get("state")
        if state not in ACTIVE:
            return
        try:
            if message.op in ("cancel", "delete"):
                ops: list[Any] = []
                if item.get("dueRow"):
                    ops.append(("delete", {"PartitionKey": item["PartitionKey"],
                                           "RowKey": item["dueRow"]}))
                item.update(state=CANCELLED, cancelledAt=tables.iso(now),
                            updatedAt=tables.iso(now), due="", dueWall="", dueLocal="",
                            dueRow="", nextKey="", leaseUntil="")
                ops.append(("update", item, _if_match(etag)))
                await _submit(table, ops)
            else:
                if message.schedule is not None and state == DISPATCHING:
                    result.busy = True
                    return
                if message.content is not None:
                    data = _get_json(item, "data")
                    data["content"] = message.content.to_json()
                    _set_json(item, "data", data)
                if message.schedule is not None:
                    await _reschedule(rt, table, item, etag, message.schedule, now)
                else:
                    item["updatedAt"] = tables.iso(now)
                    await tables.replace_if(table, item, etag)
            result.changed += 1
            return
        except tables.Conflict:
            item, etag = await _reread(table, item)
    result.busy = True


async def _first_occurrence(rt: Runtime, spec: Spec, target: Target,
                            now: datetime) -> tuple[Spec, str, str, Plan, Occurrence]:
    """The zone, the plan and its first occurrence from `now` (a series without
    a start starts now, in its zone); ScheduleError if nothing is left."""
    zone, source = await resolve_zone(rt, spec, target)
    if spec.recurring and spec.start is None:
        spec = spec.with_start(wall_of(now, load_zone(zone)).replace(second=0))
    plan = Plan(spec, zone)
    first = plan.first(now)
    if first is None:
        raise ScheduleError("the schedule has no occurrence from now on (its 'until' or "
                            "'count' is already over)")
    return spec, zone, source, plan, first


async def _reschedule(rt: Runtime, table: TableClient, item: dict[str, Any], etag: str,
                      spec: Spec, now: datetime) -> None:
    target = parse_target(_get_json(item, "data")["target"])
    spec, zone, source, plan, first = await _first_occurrence(rt, spec, target, now)
    item.update(spec=json.dumps(spec.to_json(), separators=(",", ":")),
                recurring=spec.recurring, timezone=zone, zoneSource=source)
    await _place(rt, table, item, etag, plan, first, now)


async def _manage_occurrence(table: TableClient, message: OutboxMessage, item: dict[str, Any],
                             etag: str, instant: datetime, now: datetime,
                             result: Managed) -> None:
    stamp = iso_instant(instant)
    async for _ in tables.attempts(6):
        if item.get("state") not in ACTIVE or not _is_pending(item, instant):
            return
        data = _get_json(item, "data")
        if message.op in ("cancel", "delete"):
            data["skips"] = sorted({*data.get("skips", []), stamp})
        else:
            assert message.content is not None
            data.setdefault("overrides", {})[stamp] = message.content.to_json()
        _set_json(item, "data", data)
        if sum(len(v) for k, v in item.items() if k.startswith("data")) > MAX_DATA_CHARS:
            raise ScheduleError("too many changed occurrences stored for this series: "
                                "update the series instead")
        item["updatedAt"] = tables.iso(now)
        try:
            await tables.replace_if(table, item, etag)
            result.changed += 1
            return
        except tables.Conflict:
            item, etag = await _reread(table, item)


def _is_pending(item: Mapping[str, Any], instant: datetime, limit: int = 10_000) -> bool:
    """Whether `instant` is an occurrence of the series still to come."""
    if not item.get("due"):
        return False
    current = _occurrence(item)
    if instant == current.instant:
        return item.get("state") == SCHEDULED  # dispatching: too late
    if instant < current.instant:
        return False
    plan = Plan(_spec(item), item.get("timezone") or "UTC")
    for nxt in plan.following(current, limit):
        if nxt.instant >= instant:
            return nxt.instant == instant
    return False
