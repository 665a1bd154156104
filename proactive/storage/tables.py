"""Small helpers over Azure Table Storage (the async SDK's TableClient or our
RestTableClient, which has the same methods): safe keys, timestamps, and the
ETag-conditional writes that every state transition here relies on.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

    from proactive.storage.table_rest import RestTableClient

    Table = TableClient | RestTableClient

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


class Conflict(Exception):
    """Another writer changed or created the entity first."""


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
    from azure.core.exceptions import ResourceNotFoundError

    try:
        entity = await table.get_entity(pk, rk)
    except ResourceNotFoundError:
        return None
    return dict(entity), str(entity.metadata["etag"])


async def create(table: Table, entity: dict[str, Any]) -> str:
    """Insert; raise Conflict if it exists. Returns the new ETag."""
    from azure.core.exceptions import ResourceExistsError

    try:
        meta = await table.create_entity(entity)
    except ResourceExistsError as exc:
        raise Conflict from exc
    return str(meta["etag"])


async def replace_if(table: Table, entity: dict[str, Any], etag: str) -> str:
    """Replace only if unchanged since `etag`; raise Conflict otherwise."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
    from azure.data.tables import UpdateMode

    try:
        meta = await table.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                         match_condition=MatchConditions.IfNotModified)
    except (ResourceModifiedError, ResourceNotFoundError) as exc:
        raise Conflict from exc
    return str(meta["etag"])


async def write_if(table: Table, entity: dict[str, Any], etag: str) -> str:
    """The write of a read-modify-write: create when the read found nothing
    (`etag` empty), else replace if unchanged. Raises Conflict if raced."""
    if etag:
        return await replace_if(table, entity, etag)
    return await create(table, entity)


async def merge(table: Table, entity: dict[str, Any]) -> None:
    from azure.data.tables import UpdateMode

    await table.upsert_entity(entity, mode=UpdateMode.MERGE)
