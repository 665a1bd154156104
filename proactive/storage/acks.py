"""Acknowledgements: who pressed a card's acknowledgement button, and the card
to show them afterwards.

- The click is recorded on the recipient's own delivery row (`ackedAt`), with
  an ETag-conditional replace: the first click wins, a repeat finds `ackedAt`
  and changes nothing. Nothing else is written.
- The card as sent is kept once per key (not per recipient) in the `sends`
  table, row `ack-card` of the key's partition, so the answer to a click can
  show the user their message again, with "Acknowledged at ..." instead of
  the button. Sends without `ack` write no such row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from proactive.storage import tables

if TYPE_CHECKING:
    from proactive.storage.tables import Table

CARD_ROW = "ack-card"
# A Table string property holds at most 64 KiB (32K UTF-16 units): the card is
# cut into parts of this many characters.
CHUNK = 30_000


class AckOutcome(StrEnum):
    RECORDED = "recorded"
    ALREADY = "already"  # acknowledged before: answered, not recounted
    NOT_YOURS = "not-yours"  # no delivery of this key to this user in this chat


@dataclass(frozen=True)
class KeptCard:
    key: str
    card: Mapping[str, Any]

    def to_entity(self) -> dict[str, Any]:
        text = json.dumps(self.card, ensure_ascii=False)
        parts = [text[i:i + CHUNK] for i in range(0, len(text), CHUNK)] or [""]
        entity: dict[str, Any] = {"PartitionKey": tables.safe_key(self.key),
                                  "RowKey": CARD_ROW, "key": self.key, "parts": len(parts)}
        entity.update({f"card{n}": part for n, part in enumerate(parts)})
        return entity

    @classmethod
    def from_entity(cls, entity: Mapping[str, Any]) -> KeptCard:
        text = "".join(str(entity.get(f"card{n}", "")) for n in range(int(entity["parts"])))
        return cls(key=str(entity.get("key", "")), card=json.loads(text))


@dataclass(frozen=True)
class Acknowledged:
    outcome: AckOutcome
    at: str = ""  # when the recipient acknowledged (the first click)


class AckStore:
    def __init__(self, deliveries: Table, sends: Table) -> None:
        self.deliveries = deliveries
        self.sends = sends

    async def keep_card(self, key: str, card: Mapping[str, Any]) -> None:
        """One upsert per outbox message that asks for an acknowledgement."""
        await tables.merge(self.sends, KeptCard(key, card).to_entity())

    async def card(self, key: str) -> Mapping[str, Any] | None:
        found = await tables.read(self.sends, tables.safe_key(key), CARD_ROW)
        return KeptCard.from_entity(found[0]).card if found else None

    async def acknowledge(self, key: str, recipient: str, *, conversation_id: str,
                          tenant_id: str, at: str) -> Acknowledged:
        """Record the click on the delivery row of (key, recipient) if that
        delivery was sent with the button into this very conversation and
        tenant; first click wins."""
        def click(row: dict[str, Any] | None) -> tuple[dict[str, Any] | None, Acknowledged]:
            if row is None or row.get("state") != "sent" or not row.get("ackLabel") \
                    or row.get("conversationId") != conversation_id \
                    or str(row.get("tenantId", "")).lower() != tenant_id.lower():
                return None, Acknowledged(AckOutcome.NOT_YOURS)
            if row.get("ackedAt"):
                return None, Acknowledged(AckOutcome.ALREADY, str(row["ackedAt"]))
            return {**row, "ackedAt": at}, Acknowledged(AckOutcome.RECORDED, at)

        return await tables.update(self.deliveries, tables.safe_key(key),
                                   tables.safe_key(recipient), click,
                                   what=f"delivery {key} -> {recipient}")
