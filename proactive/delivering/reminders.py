"""Whether a recipient still gets a follow-up's reminder (proactive/delivering/
followup.py): the original delivery row and, for `read`, its chat's
read-receipt row, point reads only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proactive.contract.fields import Condition, Unless
from proactive.delivering.followup import Skip

if TYPE_CHECKING:
    from proactive.runtime import Runtime


async def skip_reason(rt: Runtime, condition: Condition, recipient: str) -> Skip | None:
    """Why `recipient` gets no reminder, or None to remind them."""
    from proactive.storage import tables
    from proactive.storage.reads import ReadLookup, ReadState

    found = await tables.read(rt.deliveries.table, tables.safe_key(condition.key),
                              tables.safe_key(recipient))
    if found is None or found[0].get("state") != "sent":
        return Skip.NOT_DELIVERED
    row = found[0]
    if row.get("ackedAt"):
        return Skip.ACKED
    if not recipient.startswith(("user:", "conv:")):
        return Skip.NOT_TRACKABLE  # channels and threads
    if condition.what is Unless.ACKED and not row.get("ackLabel"):
        return Skip.NOT_TRACKABLE  # sent without the button: nothing to wait for
    state, _, _ = await ReadLookup(rt.references.table).of(row)
    if state is ReadState.NOT_AVAILABLE:
        return Skip.NOT_TRACKABLE  # a group chat: no receipts, no one person's press
    if condition.what is Unless.READ and state is ReadState.READ:
        return Skip.READ
    return None
