"""Read receipts from Teams: record how far a user has read their chat with us.

The activity (Microsoft Learn, "Messages in bot conversations" -> "Read
receipts"; botbuilder-dotnet `OnTeamsReadReceiptAsync`):

    {"type": "event", "name": "application/vnd.microsoft.readReceipt",
     "value": {"lastReadMessageId": "1718900000000"}, "conversation": {"id": ...,
     "conversationType": "personal", ...}, "from": {"aadObjectId": ...}, ...}

It reaches us through POST /api/messages, authenticated like every activity
(proactive/receiving/auth.py) before this runs. What it may change is bound to
the sender: the conversation's stored reference must be a personal chat of
that same AAD user in that same tenant (the reference row's RowKey is the
tenant), or nothing is written. Deduplicated by what it writes: a receipt
that doesn't move the chat's mark on (a redelivery, a late one) writes
nothing. No dedupe row and no reference refresh: one storage write per
receipt, however many messages it covers (benchmarks/storage_ops.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from proactive.storage.reads import RECEIPT_EVENT, ReadStore, ReceiptOutcome
from proactive.teams.activity import Activity

if TYPE_CHECKING:
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)


def is_read_receipt(activity: Activity) -> bool:
    return activity.type == "event" and activity.raw.get("name") == RECEIPT_EVENT


def last_read_id(activity: Activity) -> str:
    value = activity.raw.get("value")
    found = value.get("lastReadMessageId") if isinstance(value, Mapping) else None
    return found if isinstance(found, str) else ""


async def record_receipt(rt: Runtime, activity: Activity) -> ReceiptOutcome:
    """Record the receipt; the outcome says why when nothing was written."""
    message_id = last_read_id(activity)
    if activity.scope != "personal":
        outcome = ReceiptOutcome.NOT_PERSONAL
    else:
        outcome = await ReadStore(rt.references.table).record(
            activity.conversation_id, activity.tenant_id, activity.from_aad_id, message_id)
    if outcome in (ReceiptOutcome.RECORDED, ReceiptOutcome.ALREADY):
        log.info("read receipt %s in %s: %s", activity.id, activity.scope, outcome)
    else:
        log.warning("read receipt %s ignored: %s", activity.id, outcome)
    return outcome
