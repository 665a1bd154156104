"""Small helpers over Azure Table Storage (the async SDK's TableClient or our
RestTableClient, which has the same methods): safe keys, timestamps, and the
ETag-conditional writes that every state transition here relies on.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from proactive.errors import Conflict, NotFound, PreconditionFailed
from proactive.storage.faults import translated

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

    from proactive.storage.table_rest import RestTableClient

    Table = TableClient | RestTableClient

T = TypeVar("T")

# Table keys may not hold these; '%' is escaped too so the mapping is reversible.
_UNSAFE = {"%": "%25", "/": "%2F", "\\": "%5C", "#": "%23", "?": "%3F"}
# Keys may be 1 KiB; longer ids keep a readable head and a hash of the whole.
MAX_KEY_CHARS = 400


def safe_key(value: str) -> str:
    out = "".join(_UNSAFE.get(ch, ch) if ch in _UNSAFE or " " <= ch < "\x7f"
                  or ch > "\x9f" else f"%{ord(ch):02X}" for ch in value)
    if len(out) > MAX_KEY_CHARS:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        out = f"{out[:MAX_KEY_CHARS - 66]}~{digest}"
    return out


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None = None) -> str:
    return (moment or now_utc()).isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = ["Conflict", "NotFound", "PreconditionFailed"]  # re-exported for storage's callers


def parse_iso(stamp: str) -> datetime | None:
    """A time written by `iso` (None if empty or not one)."""
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None
    except ValueError:
        return None


async def attempts(count: int = 12) -> AsyncIterator[int]:
    """Rounds of a read-modify-write loop, with a short random pause between
    them so that writers racing on one row spread out."""
    for attempt in range(count):
        if attempt:
            await asyncio.sleep(random.uniform(0, 0.01 * attempt))
        yield attempt


async def read(table: Table, pk: str, rk: str) -> tuple[dict[str, Any], str] | None:
    """The entity as a plain dict, with its ETag; None when absent."""
    try:
        with translated():
            entity = await table.get_entity(pk, rk)
    except NotFound:
        return None
    return dict(entity), str(entity.metadata["etag"])


async def create(table: Table, entity: dict[str, Any]) -> str:
    """Insert; raise Conflict if it exists. Returns the new ETag."""
    with translated():
        meta = await table.create_entity(entity)
    return str(meta["etag"])


async def replace_if(table: Table, entity: dict[str, Any], etag: str) -> str:
    """Replace only if unchanged since `etag`; raise Conflict otherwise (the
    entity changed, or is gone)."""
    from azure.core import MatchConditions
    from azure.data.tables import UpdateMode

    try:
        with translated():
            meta = await table.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                             match_condition=MatchConditions.IfNotModified)
    except NotFound as exc:
        raise Conflict(Conflict.reason, exc.detail, status=exc.status, code=exc.code) from exc
    return str(meta["etag"])


async def write_if(table: Table, entity: dict[str, Any], etag: str) -> str:
    """The write of a read-modify-write: create when the read found nothing
    (`etag` empty), else replace if unchanged. Raises Conflict if raced."""
    if etag:
        return await replace_if(table, entity, etag)
    return await create(table, entity)


async def update(table: Table, pk: str, rk: str,
                 change: Callable[[dict[str, Any] | None], tuple[dict[str, Any] | None, T]],
                 *, rounds: int = 12, what: str = "") -> T:
    """Read-modify-write of one entity, retried when another writer gets there
    first: read (pk, rk), ask `change` what to write given the entity (None:
    absent), write that only if the entity is still as read (a create when it
    was absent, else a replace if its ETag is unchanged), and on a Conflict
    read again and ask again, for at most `rounds` rounds (then Conflict).

    `change` returns (what to write, or None for nothing; the result to
    return once written); it may be asked more than once, so it decides from
    the entity it is given, not from what an earlier round saw. One read and
    at most one write per round: what the loops it replaced did."""
    async for _ in attempts(rounds):
        found = await read(table, pk, rk)
        entity, etag = found if found is not None else (None, "")
        new, result = change(entity)
        if new is None:
            return result
        try:
            await write_if(table, new, etag)
        except Conflict:
            continue
        return result
    raise Conflict(detail=f"{what or f'{pk}/{rk}'} kept changing")


async def merge(table: Table, entity: dict[str, Any]) -> None:
    from azure.data.tables import UpdateMode

    await table.upsert_entity(entity, mode=UpdateMode.MERGE)


def if_match(etag: str) -> dict[str, Any]:
    """Options of an ETag-conditional replace (update_entity's, or a
    transaction operation's third item)."""
    from azure.core import MatchConditions
    from azure.data.tables import UpdateMode

    return {"mode": UpdateMode.REPLACE, "etag": etag,
            "match_condition": MatchConditions.IfNotModified}


async def delete_if(table: TableClient, pk: str, rk: str, etag: str) -> None:
    """Delete only if unchanged since `etag`; raise Conflict otherwise (the
    entity changed, or is gone)."""
    from azure.core import MatchConditions

    try:
        with translated():
            await table.delete_entity(pk, rk, etag=etag,
                                      match_condition=MatchConditions.IfNotModified)
    except NotFound as exc:
        raise Conflict(Conflict.reason, exc.detail, status=exc.status, code=exc.code) from exc


async def submit(table: TableClient, ops: list[Any]) -> list[Any]:
    """One entity-group transaction (SDK client only); Conflict when one of its
    conditions failed (a row changed, exists already, or is gone), with the
    failed operation's `index`."""
    with translated():
        return list(await table.submit_transaction(ops))
