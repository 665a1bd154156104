"""A delivery row (storage/deliveries.py) as a typed value, as
`scheduling.store.ScheduleItem` is for schedule rows: `from_entity` reads one
from Table storage, `to_entity` gives it back with the same property names
and values, so rows already stored read as before and nothing is lost: a
property this model does not name stays in `extra` and is written back as
it was read. A field that is None is a property the row does not have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proactive.storage import tables
from proactive.storage.rows import entity_of, fill
from proactive.storage.rows import stored as _prop


@dataclass
class DeliveryRow:
    key: str
    recipient: str
    state: str | None = _prop("state")  # a DeliveryState
    reason: str | None = _prop("reason")
    detail: str | None = _prop("detail")
    attempts: int | None = _prop("attempts")
    claim_id: str | None = _prop("claimId")
    created_at: str | None = _prop("createdAt")
    updated_at: str | None = _prop("updatedAt")
    lease_until: str | None = _prop("leaseUntil")
    takeover_at: str | None = _prop("takeoverAt")  # a lapsed claim marked for takeover
    retry_at: str | None = _prop("retryAt")
    sent_at: str | None = _prop("sentAt")
    activity_id: str | None = _prop("activityId")
    conversation_id: str | None = _prop("conversationId")
    service_url: str | None = _prop("serviceUrl")
    tenant_id: str | None = _prop("tenantId")
    ack_label: str | None = _prop("ackLabel")
    acked_at: str | None = _prop("ackedAt")
    other_copies: str | None = _prop("otherCopies")  # JSON: storage.copies
    update_state: str | None = _prop("updateState")  # an EditState
    update_reason: str | None = _prop("updateReason")
    delete_state: str | None = _prop("deleteState")
    delete_reason: str | None = _prop("deleteReason")
    deleted_at: str | None = _prop("deletedAt")
    updates: int | None = _prop("updates")
    # Every other property, as read (PartitionKey and RowKey among them).
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> DeliveryRow:
        row = cls(key=str(entity.get("key", "")), recipient=str(entity.get("recipient", "")))
        return fill(row, entity, skip=("key", "recipient"))

    def to_entity(self) -> dict[str, Any]:
        return {"PartitionKey": tables.safe_key(self.key),
                "RowKey": tables.safe_key(self.recipient), **entity_of(self),
                "key": self.key, "recipient": self.recipient}

    def edited(self, op: str, state: str, reason: str) -> None:
        """Record the outcome (an EditState) of an `update` or `delete` of the
        row's message."""
        if op == "delete":
            self.delete_state, self.delete_reason = state, reason
        else:
            self.update_state, self.update_reason = state, reason

