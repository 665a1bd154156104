"""Carry out one outbox queue message: send, update or delete a Teams message.

Every outcome is written to the delivery record of (key, recipient). A message
that breaks the contract is parked in the poison queue with its reason and
never retried. A transient failure goes back on the queue with a visibility
delay (the queue is the timer, so no worker waits idle) until the attempt
budget runs out.
"""

from __future__ import annotations

import logging

from proactive.contract import InvalidMessage, OutboxMessage, parse_message
from proactive.delivering import broadcast
from proactive.delivering.edit import edit
from proactive.delivering.outcomes import Outcome
from proactive.delivering.requeue import refuse, retry_later
from proactive.delivering.send import send_one
from proactive.runtime import Runtime
from proactive.storage.queues import lenient_text

log = logging.getLogger(__name__)


async def process(rt: Runtime, body: str, *, message_id: str) -> Outcome:
    """Handle one queue message; never raises for a bad message."""
    body = lenient_text(body)
    try:
        message = parse_message(body, default_key=f"msg:{message_id}",
                                max_activity_bytes=rt.settings.max_activity_bytes)
    except InvalidMessage as exc:
        return await refuse(rt, body, exc, message_id=message_id)
    data = dict(message.data)
    if message.op == "cancel":
        return await _cancel(rt, message)
    if message.schedule is not None and message.op == "send" and message.target is not None \
            and (not message.target.is_broadcast or data.get("part")):
        # Later: stored per recipient; the timer puts it back here when due.
        # (A many-user send is split first; each part schedules its users.)
        from proactive.scheduling.timer import schedule_send

        return await schedule_send(rt, message, body=body, message_id=message_id)
    if message.target is not None and message.target.is_broadcast:
        return await broadcast.run(rt, message, data)
    if message.op == "send":
        assert message.target is not None and message.content is not None
        outcome = await send_one(rt, message.key, message.target, message.content)
    else:
        try:
            outcome = await edit(rt, message)
        except InvalidMessage as exc:  # a new time that can't be used
            return await refuse(rt, body, exc, message_id=message_id)
    if outcome.state == "retry":
        return await retry_later(rt, data, message.key, outcome, message_id=message_id,
                                 target=message.target)
    return outcome


async def _cancel(rt: Runtime, message: OutboxMessage) -> Outcome:
    from proactive.scheduling.timer import manage

    scheduled = await manage(rt, message)
    if await rt.campaigns.cancel(message.key) or scheduled.changed:
        log.info("send %s cancelled", message.key)
        return Outcome("done", "cancelled")
    return Outcome("done", "unknown-key")
