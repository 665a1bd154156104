"""Users' opt-outs: which notifications each user told the bot to stop, and when.

Table `preferences`, partition = the user (`user:{aad object id}`, lower case),
one row per opt-out: RowKey `*` for everything, else the topic's name. A row
exists while the opt-out holds; `start` (or `python -m proactive optin`)
deletes it. The table is apart from the references on purpose: an install
rewrites the user's reference row, and an opt-out must outlive a reinstall.

This is the record. Changes go through `proactive.delivering.optouts`, which
also tells every instance that the user's tenant has a change; the send path
checks there too, and reads a user's partition (one query, at most a few rows)
only in a tenant where somebody opted out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proactive.errors import NotFound
from proactive.storage import tables
from proactive.storage.faults import translated

if TYPE_CHECKING:
    from proactive.storage.tables import Table

ALL = "*"


def user_pk(aad_id: str) -> str:
    return tables.safe_key(f"user:{aad_id.lower()}")


@dataclass(frozen=True)
class OptOut:
    aad_id: str
    topic: str  # "*" = every notification
    at: str  # when (ISO 8601, UTC)
    via: str = ""  # "command" | "card" | "admin"
    tenant_id: str = ""

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> OptOut:
        return cls(aad_id=str(entity.get("aadObjectId", "")), topic=str(entity["RowKey"]),
                   at=str(entity.get("optedOutAt", "")), via=str(entity.get("via", "")),
                   tenant_id=str(entity.get("tenantId", "")))


def stopping(opt_outs: Iterable[OptOut], topic: str) -> OptOut | None:
    """Which of a user's opt-outs stops a message of `topic` ("" = none)."""
    for found in opt_outs:
        if found.topic == ALL or (topic and found.topic == topic):
            return found
    return None


class PreferenceStore:
    def __init__(self, table: Table) -> None:
        self.table = table

    async def opt_out(self, aad_id: str, topic: str = ALL, *, via: str,
                      tenant_id: str = "") -> bool:
        """Record that the user stops `topic` ("*": everything). False when
        that opt-out already stood (its first `when` is kept)."""
        try:
            await tables.create(self.table, {
                "PartitionKey": user_pk(aad_id), "RowKey": topic, "aadObjectId": aad_id.lower(),
                "optedOutAt": tables.iso(), "via": via, "tenantId": tenant_id})
        except tables.Conflict:
            return False
        return True

    async def opt_in(self, aad_id: str, topic: str | None = None) -> list[str]:
        """Clear the user's opt-out of `topic`, or every opt-out of theirs
        (None). Returns the topics cleared."""
        cleared = []
        for found in await self.of_user(aad_id):
            if topic is not None and found.topic != topic:
                continue
            try:
                with translated():
                    await self.table.delete_entity(user_pk(aad_id), found.topic)
            except NotFound:
                continue
            cleared.append(found.topic)
        return cleared

    async def of_user(self, aad_id: str) -> list[OptOut]:
        return [OptOut.from_entity(dict(entity)) async for entity in self.table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": user_pk(aad_id)})]

    async def every(self) -> AsyncIterator[OptOut]:
        """Every opt-out, page by page (the reach report)."""
        async for entity in self.table.query_entities("PartitionKey ge 'user:'",
                                                      results_per_page=1000):
            yield OptOut.from_entity(dict(entity))
