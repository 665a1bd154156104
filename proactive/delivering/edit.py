"""Update or delete a sent message: every recipient's copy under the key.

Items still scheduled get the new content (or time), or are cancelled by a
delete. An edit that arrives while its send is waiting to be retried waits as
long as the send does (the delivery row's `retryAt`), without using up its own
attempts, and ends when the send ends: sent, the edit is applied; failed, the
edit is recorded failed with the send's reason. Edits are idempotent: a retry
redoes every recipient's, harmlessly.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from proactive.contract import Op, OutboxMessage
from proactive.delivering.ack import card_as_sent
from proactive.delivering.outcomes import Action, Outcome
from proactive.delivering.render import activity as activity_of
from proactive.delivering.send import call
from proactive.errors import (
    DeliveryFailed,
    Permanent,
    Reason,
    RetryLater,
    Transient,
)
from proactive.storage.copies import copies
from proactive.storage.states import DeliveryState, EditState
from proactive.storage.tables import iso, now_utc
from proactive.telemetry import log_id

if TYPE_CHECKING:
    from proactive.runtime import Runtime
    from proactive.storage.delivery_rows import DeliveryRow

log = logging.getLogger(__name__)

# A send still not done this long after its retry (or its claim's lease) was
# due looks lost: from then on the edit's own attempts count, so it ends.
SEND_OVERDUE = timedelta(minutes=10)
_PENDING = (DeliveryState.SENDING, DeliveryState.RETRYING)
# UNKNOWN: the attempt's answer never came (onUnknown skip): no copy to reach.
_UNSENT = (DeliveryState.FAILED, DeliveryState.CANCELLED, DeliveryState.UNKNOWN)


async def edit(rt: Runtime, message: OutboxMessage) -> Outcome:
    """Apply an update or delete; raises proactive.errors members to retry."""
    from proactive.scheduling import manage

    # Items still scheduled: new content (or time), or cancelled by a delete.
    # A new time that can't be used raises ScheduleError, an InvalidMessage.
    scheduled = await manage(rt, message)
    if scheduled.busy:
        raise Transient(Reason.DISPATCHING, "a timer run is putting the key's items on the queue")
    if message.op == Op.UPDATE and message.content is None:  # a new time only
        if scheduled.found:
            return Outcome(Action.DONE, "rescheduled" if scheduled.changed else "not-scheduled")
        raise Transient(Reason.UNKNOWN_KEY, "nothing is scheduled under this key (yet)")
    rows = await rt.deliveries.by_key(message.key)
    if not rows and scheduled.changed:
        return Outcome(Action.DONE, "scheduled")
    if not rows:
        # The send may still be on its way (queue order is not guaranteed).
        raise Transient(Reason.UNKNOWN_KEY, "no send is recorded under this key (yet)")
    _wait_for_pending_sends([row for row, _ in rows])
    label = next((row.ack_label for row, _ in rows if row.ack_label), "")
    if message.op == Op.UPDATE and message.content is not None \
            and (label or message.content.ack):
        # What a recipient who acknowledges from now on sees again: once per update.
        from dataclasses import replace

        from proactive.storage.acks import AckStore

        card = card_as_sent(replace(message.content, ack=message.content.ack or label),
                            message.key)
        if card is not None:
            await AckStore(rt.deliveries.table, rt.campaigns.table).keep_card(message.key, card)
    retry: DeliveryFailed | RetryLater | None = None
    unsent: list[str] = []
    for row, etag in rows:
        state = row.state
        if state in _UNSENT:
            # The send ended without a message to edit: the edit fails with its reason.
            reason = str(row.reason or state)
            row.edited(message.op, EditState.FAILED, reason)
            unsent.append(reason)
        elif state == DeliveryState.SENT:
            try:
                await _edit_one(rt, message, row)
            except Permanent as exc:
                row.edited(message.op, EditState.FAILED, exc.reason)
                log.warning("%s of %s -> %s failed: %s", message.op, message.key,
                            log_id(row.recipient), exc.reason)
            except (DeliveryFailed, RetryLater) as exc:  # try this one again later
                retry = exc
                continue
            else:
                if message.op == Op.DELETE:
                    row.state, row.deleted_at = DeliveryState.DELETED, iso()
                row.edited(message.op, EditState.DONE, "")
                row.updates = int(row.updates or 0) + (message.op == Op.UPDATE)
        else:
            continue  # deleted: nothing left to edit
        await rt.deliveries.save(row, etag)
    if retry is not None:
        raise retry
    if unsent and len(unsent) == len(rows):
        return Outcome(Action.FAILED, unsent[0])
    return Outcome(Action.DONE, message.op)


async def _updated_activity(rt: Runtime, message: OutboxMessage,
                            row: DeliveryRow) -> dict[str, Any]:
    """The new content as this recipient sees it: a card sent with the
    acknowledgement button keeps it, or, once acknowledged, shows when instead
    (README "Read, acknowledged, reminded")."""
    from dataclasses import replace

    from proactive.contract import ADAPTIVE_CARD
    from proactive.delivering.ack import acknowledged, local_time

    assert message.content is not None
    label = row.ack_label or message.content.ack
    if not label:
        return activity_of(message.content, message.key)
    row.ack_label = label  # an update may ask for the button too (saved with the edit)
    content = replace(message.content, ack=message.content.ack or label)
    activity = activity_of(content, message.key)
    card = card_as_sent(content, message.key)
    assert card is not None
    if row.acked_at:
        ref = await rt.references.conversation(str(row.conversation_id), row.tenant_id or None)
        at = datetime.fromisoformat(row.acked_at.replace("Z", "+00:00"))
        shown = acknowledged(card, local_time(at, ref.timezone if ref else ""))
        activity["attachments"] = [{"contentType": ADAPTIVE_CARD, "content": shown}]
    return activity


def _wait_for_pending_sends(rows: list[DeliveryRow]) -> None:
    """Raise RetryLater until the key's sends are no longer on their way: until
    the next retry a waiting send has recorded, or shortly while one is being
    sent. A send overdue by SEND_OVERDUE looks lost: then a counted retry."""
    pending = [row for row in rows if row.state in _PENDING]
    if not pending:
        return
    now = now_utc()
    dues = [_due(row) for row in pending]
    live = [due for due in dues if due is not None and due + SEND_OVERDUE > now]
    if not live:
        raise Transient(Reason.SEND_PENDING, "the send under this key is overdue")
    if any(row.state == DeliveryState.SENDING for row in pending):
        raise RetryLater(0, Reason.SEND_PENDING, "the send under this key is being sent")
    # Just after the send's next attempt (a few seconds when that is late).
    delay = (min(live) - now).total_seconds() + 1
    raise RetryLater(max(2.0, delay), Reason.SEND_PENDING,
                     "the send under this key waits for its retry")


def _due(row: DeliveryRow) -> datetime | None:
    """When a pending send is next expected to move: its retry, or the end
    of its claim's lease."""
    text = row.retry_at if row.state == DeliveryState.RETRYING else row.lease_until
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


async def _edit_one(rt: Runtime, message: OutboxMessage, row: DeliveryRow) -> None:
    """Edit every copy the row knows Teams accepted: its own, and those a
    late answer added after an attempt with an unknown outcome (`otherCopies`)."""
    # One activity for every copy: the row's own ack state (button or acknowledged).
    activity = await _updated_activity(rt, message, row) if message.op != Op.DELETE else None
    for n, copy in enumerate(copies(row.to_entity())):
        service_url = await _edit_copy(rt, message, row.tenant_id or "", copy, activity)
        if n == 0:
            row.service_url = service_url  # the fallback host, when Teams asked for it


async def _edit_copy(rt: Runtime, message: OutboxMessage, tenant: str,
                     copy: dict[str, str], activity: dict[str, Any] | None) -> str:
    conversation_id, activity_id = copy["conversationId"], copy["activityId"]
    if message.op == Op.DELETE:
        _, service_url = await call(
            rt, tenant, conversation_id, copy["serviceUrl"],
            lambda url: rt.connector.delete(url, conversation_id, activity_id))
    else:
        assert activity is not None
        _, service_url = await call(
            rt, tenant, conversation_id, copy["serviceUrl"],
            lambda url: rt.connector.update(url, conversation_id, activity_id, activity))
    return service_url
