"""Read receipts: how far a user has read their 1:1 chat with the bot.

Teams sends the bot an `event` activity named `application/vnd.microsoft.readReceipt`
whose `value.lastReadMessageId` says every message up to that one is read
(Microsoft Learn, "Messages in bot conversations" -> "Read receipts";
botbuilder-dotnet `TeamsActivityHandler.OnTeamsReadReceiptAsync` with
`Microsoft.Bot.Schema.Teams.ReadReceiptInfo`; the Teams SDK's `readReceipt`
event). Personal chats only.

A receipt costs ONE storage write, however many messages it covers: the
chat's last-read message id and the time are written onto the conversation's
own reference row (`conv:{id}`, the tenant as RowKey), which is also the row
that says whose chat it is. Nothing is written per delivery. Whether a
delivery is read is worked out when someone looks (status, report,
recipients, a follow-up): its activity id against that row, one point read
per conversation (`ReadLookup` keeps them for the look).

Ordering: Teams' message ids in a personal chat are epoch milliseconds as
decimal strings, and `ReadReceiptInfo.IsMessageRead` decides "read" by
converting both ids to numbers and comparing `compare <= lastRead`. Ids that
are not such numbers don't compare: the delivery's read state is then
`unknown`, never a guess.

So that `readAt` stays true when a later receipt moves the mark on, the row
keeps the last few marks (`readMarks`, newest last, at most MAX_MARKS): a
delivery's read time is that of the first mark at or after it. One older than
every kept mark reports the oldest kept mark's time with `readAtApprox`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from proactive.storage import tables

if TYPE_CHECKING:
    from proactive.storage.tables import Table

RECEIPT_EVENT = "application/vnd.microsoft.readReceipt"
MAX_MARKS = 16
# Ids longer than this are no epoch-millisecond number (int() of huge strings is slow).
MAX_ORDER_DIGITS = 20


class ReadState(StrEnum):
    READ = "read"
    UNREAD = "unread"
    # Group chats and channels: Teams sends no receipts there.
    NOT_AVAILABLE = "not-available"
    # The ids don't compare, the delivery was never sent, or its chat is gone.
    UNKNOWN = "unknown"


class ReceiptOutcome(StrEnum):
    RECORDED = "recorded"
    # The chat was read this far (or further) already: a redelivery, or a late one.
    ALREADY = "already"
    UNKNOWN_CHAT = "unknown-chat"
    NOT_PERSONAL = "not-personal"
    NOT_OWNER = "not-owner"
    BAD_ID = "bad-id"


def order_of(message_id: str) -> int | None:
    """The position of a Teams personal-chat message id, or None if it is not
    an epoch-millisecond number (ReadReceiptInfo.IsMessageRead compares the
    ids as numbers)."""
    text = message_id.strip()
    if not text.isdigit() or not text.isascii() or len(text) > MAX_ORDER_DIGITS:
        return None
    return int(text)


@dataclass(frozen=True)
class Mark:
    message_id: str
    at: str


@dataclass(frozen=True)
class LastRead:
    """The read-receipt fields of a personal conversation's reference row."""

    conversation_type: str = ""
    aad_id: str = ""
    marks: tuple[Mark, ...] = field(default_factory=tuple)

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> LastRead:
        try:
            raw = json.loads(entity.get("readMarks") or "[]")
        except ValueError:
            raw = []
        marks = tuple(Mark(str(m[0]), str(m[1])) for m in raw
                      if isinstance(m, list) and len(m) == 2)
        return cls(conversation_type=str(entity.get("conversationType", "")),
                   aad_id=str(entity.get("aadObjectId", "")), marks=marks)

    def to_entity(self) -> dict[str, Any]:
        """The fields a receipt writes (merged onto the reference row)."""
        last = self.marks[-1] if self.marks else Mark("", "")
        return {"lastReadMessageId": last.message_id, "lastReadAt": last.at,
                "readMarks": json.dumps([[m.message_id, m.at] for m in self.marks])}

    @property
    def last(self) -> int | None:
        return order_of(self.marks[-1].message_id) if self.marks else None

    def with_mark(self, mark: Mark) -> LastRead:
        marks = (*self.marks, mark)[-MAX_MARKS:]
        return LastRead(self.conversation_type, self.aad_id, marks)

    def state_of(self, activity_id: str) -> tuple[ReadState, str, bool]:
        """(state, readAt, approximate) of a message of this chat."""
        if self.conversation_type and self.conversation_type != "personal":
            return ReadState.NOT_AVAILABLE, "", False
        position = order_of(activity_id)
        if position is None:
            return ReadState.UNKNOWN, "", False
        last = self.last
        if last is None:
            return (ReadState.UNKNOWN if self.marks else ReadState.UNREAD), "", False
        if position > last:
            return ReadState.UNREAD, "", False
        for mark in self.marks:
            at = order_of(mark.message_id)
            if at is not None and at >= position:
                trimmed = len(self.marks) == MAX_MARKS and mark is self.marks[0]
                return ReadState.READ, mark.at, trimmed and at != position
        return ReadState.READ, self.marks[0].at, True  # pragma: no cover - last >= position


class ReadStore:
    """Receipts onto the references table's conversation rows."""

    def __init__(self, table: Table) -> None:
        self.table = table

    async def record(self, conversation_id: str, tenant_id: str, aad_id: str,
                     message_id: str, at: str | None = None) -> ReceiptOutcome:
        """One point read (whose chat, how far read) and, if the receipt moves
        the mark on, one ETag-conditional write. The sender must own the chat."""
        from proactive.storage.reference_keys import conv_pk

        position = order_of(message_id)
        if position is None:
            return ReceiptOutcome.BAD_ID
        def receipt(entity: dict[str, Any] | None
                    ) -> tuple[dict[str, Any] | None, ReceiptOutcome]:
            if entity is None:
                return None, ReceiptOutcome.UNKNOWN_CHAT
            current = LastRead.from_entity(entity)
            if current.conversation_type != "personal":
                return None, ReceiptOutcome.NOT_PERSONAL
            if not aad_id or current.aad_id.lower() != aad_id.lower():
                return None, ReceiptOutcome.NOT_OWNER
            last = current.last
            if last is not None and last >= position:
                return None, ReceiptOutcome.ALREADY
            updated = current.with_mark(Mark(message_id, at or tables.iso()))
            return {**entity, **updated.to_entity()}, ReceiptOutcome.RECORDED

        pk = conv_pk(conversation_id)
        return await tables.update(self.table, pk, tables.safe_key(tenant_id), receipt,
                                   what=pk)


class ReadLookup:
    """Read state of deliveries, one point read per conversation, kept for
    the lifetime of this object (one status, one report, one follow-up)."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._rows: dict[tuple[str, str], LastRead | None] = {}

    async def of(self, row: dict[str, Any]) -> tuple[ReadState, str, bool]:
        """(state, readAt, approximate) of a delivery row."""
        from proactive.storage.reference_keys import conv_pk

        conversation_id = str(row.get("conversationId") or "")
        activity_id = str(row.get("activityId") or "")
        tenant_id = str(row.get("tenantId") or "")
        if not conversation_id or not activity_id or not tenant_id:
            return ReadState.UNKNOWN, "", False
        key = (conversation_id, tenant_id)
        if key not in self._rows:
            found = await tables.read(self.table, conv_pk(conversation_id),
                                      tables.safe_key(tenant_id))
            self._rows[key] = LastRead.from_entity(found[0]) if found else None
        last_read = self._rows[key]
        if last_read is None:
            return ReadState.UNKNOWN, "", False
        return last_read.state_of(activity_id)
