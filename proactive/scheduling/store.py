"""The `schedules` table: typed rows, their keys, and the reads by key.

Layout: a fixed number of partitions `s0`..`s7`, chosen by the message key,
so every item of a key sits in one partition. Each partition holds two kinds
of rows:

    k|{key}|{recipient hash}     the item (`ScheduleItem`): one per (key,
                                 recipient), for its life; what, to whom,
                                 when, state, history
    d|{due UTC}|{hash}           the due index (`due_row`): one per item still
                                 to fire, pointing at the item; nothing else

"What is due now" is the RowKey range `d|` .. `d|{now + 60 s}` of each
partition: a tick reads the due rows and their items, never the future.
Moving an item to its next occurrence, cancelling it or rescheduling it is one
entity-group transaction (delete due row, create due row, ETag-conditional
replace of the item), so the index and the items never disagree.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from proactive.contract.schedule.spec import Spec, occurrence_key, parse_spec, split_occurrence_key
from proactive.contract.schedule.zones import iso_instant, iso_wall, load_zone
from proactive.scheduling.recurrence import Occurrence
from proactive.storage import tables

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

SHARDS = 8
_CHUNK = 30_000  # characters per string property (Table Storage: 64 KiB as UTF-16)
_DIGITS = tuple(str(n) for n in range(1, 40))


class State(StrEnum):
    SCHEDULED = "scheduled"  # waiting for its due time
    DISPATCHING = "dispatching"  # claimed by a tick (with a lease)
    DONE = "done"  # nothing left to fire
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in (State.SCHEDULED, State.DISPATCHING)


class ZoneSource(StrEnum):
    """Where an item's zone came from: named in the schedule, the recipient's,
    or the default setting (a series on the last two follows the recipient)."""
    NAMED = "named"
    RECIPIENT = "recipient"
    DEFAULT = "default"


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


# --- the item row -------------------------------------------------------------------

@dataclass
class ScheduleItem:
    """One (key, recipient) of a scheduled send, as stored. `next` is the
    occurrence it waits for (None once done or cancelled); the `last_*`
    fields describe the latest occurrence that went out."""

    key: str
    recipient: str
    spec: Spec
    target: dict[str, Any]  # contract JSON of the recipient
    content: dict[str, Any]  # contract JSON: text / card / summary
    timezone: str
    zone_source: ZoneSource
    created_at: str
    recurring: bool = False
    broadcast: bool = False  # one user of a many-user send
    state: State = State.SCHEDULED
    next: Occurrence | None = None
    due_row: str = ""  # RowKey of its due row ('' without one)
    skips: list[str] = field(default_factory=list)  # occurrences cancelled on their own
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # their own content
    fired: int = 0
    skipped: int = 0
    last_due: str = ""
    last_key: str = ""
    last_fired_at: str = ""
    last_lateness: float | None = None
    lease_until: str = ""
    claimed_at: str = ""
    updated_at: str = ""
    cancelled_at: str = ""
    finished_at: str = ""

    @property
    def partition(self) -> str:
        return shard(self.key)

    @property
    def row_key(self) -> str:
        return item_rk(self.key, self.recipient)

    def send_key(self, occ: Occurrence) -> str:
        """The delivery key of an occurrence: the key, or for a series `key:time`."""
        return occurrence_key(self.key, occ.instant) if self.recurring else self.key

    def to_entity(self) -> dict[str, Any]:
        entity: dict[str, Any] = {
            "PartitionKey": self.partition, "RowKey": self.row_key, "kind": "item",
            "key": self.key, "recipient": self.recipient, "recurring": self.recurring,
            "broadcast": self.broadcast,
            "spec": json.dumps(self.spec.to_json(), separators=(",", ":")),
            "timezone": self.timezone, "zoneSource": str(self.zone_source),
            "state": str(self.state), "fired": self.fired, "skipped": self.skipped,
            "createdAt": self.created_at, "dueRow": self.due_row,
            "leaseUntil": self.lease_until,
        }
        occ = self.next
        entity.update(
            due=iso_instant(occ.instant) if occ else "",
            dueWall=iso_wall(occ.wall) if occ else "",
            dueLocal=occ.instant.astimezone(load_zone(self.timezone)).isoformat() if occ else "",
            nextKey=self.send_key(occ) if occ else "")
        if occ:
            entity["seq"] = occ.seq
        for name, value in (("lastDue", self.last_due), ("lastKey", self.last_key),
                            ("lastFiredAt", self.last_fired_at),
                            ("lastLateness", self.last_lateness),
                            ("claimedAt", self.claimed_at), ("updatedAt", self.updated_at),
                            ("cancelledAt", self.cancelled_at),
                            ("finishedAt", self.finished_at)):
            if value not in (None, ""):
                entity[name] = value
        _set_json(entity, "data", {"target": self.target, "content": self.content,
                                   "skips": self.skips, "overrides": self.overrides})
        return entity

    @classmethod
    def from_entity(cls, entity: Mapping[str, Any]) -> ScheduleItem:
        data = _get_json(entity, "data") or {}
        occ = None
        if entity.get("due"):
            occ = Occurrence(wall=datetime.fromisoformat(entity["dueWall"]),
                             instant=_instant(entity["due"]), seq=int(entity.get("seq", 1)))
        late = entity.get("lastLateness")
        return cls(
            key=entity["key"], recipient=entity["recipient"],
            spec=parse_spec(json.loads(entity["spec"]), check_fires=False),
            target=data.get("target") or {}, content=data.get("content") or {},
            timezone=entity.get("timezone") or "UTC",
            zone_source=ZoneSource(entity.get("zoneSource") or ZoneSource.NAMED),
            created_at=entity.get("createdAt", ""), recurring=bool(entity.get("recurring")),
            broadcast=bool(entity.get("broadcast")), state=State(entity["state"]), next=occ,
            due_row=entity.get("dueRow", ""), skips=list(data.get("skips") or []),
            overrides=dict(data.get("overrides") or {}), fired=int(entity.get("fired", 0)),
            skipped=int(entity.get("skipped", 0)), last_due=entity.get("lastDue", ""),
            last_key=entity.get("lastKey", ""), last_fired_at=entity.get("lastFiredAt", ""),
            last_lateness=None if late is None else float(late),
            lease_until=entity.get("leaseUntil", ""), claimed_at=entity.get("claimedAt", ""),
            updated_at=entity.get("updatedAt", ""), cancelled_at=entity.get("cancelledAt", ""),
            finished_at=entity.get("finishedAt", ""))

    def data_size(self) -> int:
        """Characters its content and per-occurrence changes take when stored."""
        return len(json.dumps({"target": self.target, "content": self.content,
                               "skips": self.skips, "overrides": self.overrides},
                              separators=(",", ":"), ensure_ascii=False))

    def public_view(self) -> dict[str, Any]:
        """What `python -m proactive schedules` shows of an item."""
        entity = self.to_entity()
        view = {name: entity.get(name) for name in (
            "key", "recipient", "state", "due", "dueLocal", "nextKey", "timezone",
            "zoneSource", "fired", "skipped", "lastDue", "lastKey", "lastFiredAt",
            "lastLateness", "createdAt", "updatedAt", "cancelledAt", "finishedAt")
            if entity.get(name) not in (None, "")}
        view["schedule"] = self.spec.to_json()
        view["to"] = self.target
        view["content"] = self.content
        if self.skips:
            view["skips"] = self.skips
        if self.overrides:
            view["overrides"] = sorted(self.overrides)
        return view


def due_row(item: ScheduleItem) -> dict[str, Any]:
    """The due-index row of the item's next occurrence."""
    assert item.next is not None
    return {"PartitionKey": item.partition, "RowKey": item.due_row, "kind": "due",
            "item": item.row_key, "key": item.key, "recipient": item.recipient,
            "due": iso_instant(item.next.instant)}


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


# --- reads and writes -----------------------------------------------------------------

class ScheduleStore:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    async def read(self, partition: str, row_key: str) -> tuple[ScheduleItem, str] | None:
        found = await tables.read(self.table, partition, row_key)
        return None if found is None else (ScheduleItem.from_entity(found[0]), found[1])

    async def by_key(self, key: str) -> list[tuple[ScheduleItem, str]]:
        """Every item of `key` (all recipients, all states), with its ETag."""
        lo, hi = _key_prefix(key)
        rows = []
        async for entity in self.table.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": shard(key), "lo": lo, "hi": hi}):
            if entity.get("key") == key:  # a key containing '|' shares the prefix
                rows.append((ScheduleItem.from_entity(entity), str(entity.metadata["etag"])))
        return rows

    async def items(self, *, active_only: bool = True) -> list[ScheduleItem]:
        query = "PartitionKey eq @pk and RowKey ge 'k|' and RowKey lt 'k}'"
        if active_only:
            query += f" and (state eq '{State.SCHEDULED}' or state eq '{State.DISPATCHING}')"
        out: list[ScheduleItem] = []
        for n in range(SHARDS):
            async for entity in self.table.query_entities(query, parameters={"pk": f"s{n}"}):
                out.append(ScheduleItem.from_entity(entity))
        return out

    async def replace(self, item: ScheduleItem, etag: str) -> str:
        """Write the item if unchanged since `etag`; its new ETag, or Conflict."""
        return await tables.replace_if(self.table, item.to_entity(), etag)

    async def submit(self, ops: list[Any]) -> None:
        """One entity-group transaction; Conflict when a condition failed (a row
        changed, exists already, or is gone)."""
        await tables.submit(self.table, ops)


if_match = tables.if_match  # transaction options of an ETag-conditional replace


async def list_items(table: TableClient, key: str = "", *,
                     active_only: bool = True) -> list[dict[str, Any]]:
    """The public view of the items of `key` (or of an occurrence key's
    series), or of every item (still to come, unless `active_only` is off)."""
    store = ScheduleStore(table)
    if not key:
        rows = await store.items(active_only=active_only)
    else:
        rows = [item for item, _ in await store.by_key(key)]
        occurrence = split_occurrence_key(key)
        if not rows and occurrence:
            rows = [item for item, _ in await store.by_key(occurrence[0])]
    views = [item.public_view() for item in rows]
    views.sort(key=lambda view: (view.get("due") or "~", view.get("key", "")))
    return views
