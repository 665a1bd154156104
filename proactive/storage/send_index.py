"""The index of sends to many recipients, newest first, for listing them.

Table `sends`, partition `~index`. One row per key, written once when
the key's summary row is created (`Campaigns.start`): one storage operation
per send, none per recipient. Its RowKey is an inverted timestamp (so Table
Storage's ascending RowKey order is newest first) and the key. The state is
copied to it when the send turns final or is cancelled (one merge per send).
Index RowKeys start with a digit, so a send whose key is itself `~index`
(its summary, shard and marker rows start with a letter or `~`) never shows
in a listing: it reads `RowKey lt ':'` only.

Single-recipient messages have no summary row and are not listed; they are
looked up by key (`GET /api/sends/{key}`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from proactive.storage import tables

PARTITION = "~index"
ROWS_BELOW = ":"  # the character after the digits
# Microseconds before this moment: later sends get smaller numbers.
_EPOCH_END = 10**17
TEXT_KEPT = 200  # characters of the text kept for listing and searching


class SendState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"  # an audience that could not be read (storage/progress.py)


def row_key(created_at: str, key: str) -> str:
    """Newest first: the inverted creation time in microseconds, then the key."""
    moment = datetime.fromisoformat(created_at)
    micros = int(moment.timestamp() * 1_000_000)
    return f"{_EPOCH_END - micros:017d}-{tables.safe_key(key)}"[:1000]


@dataclass(frozen=True)
class SendIndexRow:
    key: str
    created_at: str
    state: SendState = SendState.RUNNING
    topic: str = ""
    text: str = ""
    audience: str = ""  # the target kind: allUsers, users, teamMembers, group

    @staticmethod
    def partition() -> str:
        return PARTITION

    @property
    def row_key(self) -> str:
        return row_key(self.created_at, self.key)

    def to_entity(self) -> dict[str, Any]:
        return {"PartitionKey": PARTITION, "RowKey": self.row_key, "key": self.key,
                "createdAt": self.created_at, "state": str(self.state), "topic": self.topic,
                "text": self.text[:TEXT_KEPT], "audience": self.audience}

    @classmethod
    def from_entity(cls, row: dict[str, Any]) -> SendIndexRow:
        raw_state = str(row.get("state") or SendState.RUNNING)
        state = SendState(raw_state) if raw_state in SendState.__members__.values() \
            else SendState.RUNNING
        return cls(key=str(row.get("key", "")), created_at=str(row.get("createdAt", "")),
                   state=state, topic=str(row.get("topic") or ""),
                   text=str(row.get("text") or ""), audience=str(row.get("audience") or ""))

    def matches(self, *, state: str, topic: str, text: str) -> bool:
        return ((not state or self.state == state) and (not topic or self.topic == topic)
                and (not text or text.casefold() in f"{self.key}\n{self.text}".casefold()))
