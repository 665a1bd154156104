"""Put a RETRY or POISONED outcome into effect on the queues."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from proactive.contract import TargetKind
from proactive.delivering.outcomes import Action, Outcome
from proactive.delivering.send import finish_unsent
from proactive.errors import Reason
from proactive.storage.queues import dumps
from proactive.storage.states import DeliveryState

if TYPE_CHECKING:
    from proactive.contract import OutboxMessage, Target
    from proactive.errors import InvalidMessage
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)


async def refuse(rt: Runtime, body: str, exc: InvalidMessage, *, message_id: str) -> Outcome:
    """Park a message that breaks the contract in the poison queue, with why."""
    log.warning("outbox message %s refused: %s", message_id, exc.reason)
    await rt.outbox.poison(body, reason=exc.reason, detail=exc.detail, message_id=message_id)
    return Outcome(Action.POISONED, exc.reason)


async def retry_later(rt: Runtime, message: OutboxMessage, outcome: Outcome, *,
                      message_id: str, target: Target | None = None) -> Outcome:
    """Put a copy of the message back on the queue with the outcome's delay
    (the queue is the timer), or give up once the attempts are spent: the
    recipient's delivery (`target`, by default the message's) is recorded
    failed and the message parked in the poison queue."""
    attempt = message.attempt + outcome.counts
    if attempt <= rt.settings.max_attempts:
        await rt.outbox.put(message.retry(attempt=attempt), delay=outcome.delay)
        return outcome
    detail = f"gave up after {rt.settings.max_attempts} attempts; last: {outcome.reason}"
    # An installation whose chat never appeared fails as that (what to look
    # into), not as a generic retries-exhausted.
    reason = Reason.NO_CONVERSATION if outcome.reason == Reason.NO_CONVERSATION \
        else Reason.RETRIES_EXHAUSTED
    if reason == Reason.NO_CONVERSATION:
        detail = (f"the app is installed for the user, but Graph listed no chat for the "
                  f"installation after {rt.settings.max_attempts} attempts with back-off")
    target = target or message.target
    if target is not None and not target.is_broadcast:
        await finish_unsent(rt, message.key, target, DeliveryState.FAILED, reason,
                            detail=detail)
    elif target is not None and target.kind in (TargetKind.TEAM_MEMBERS, TargetKind.GROUP):
        # A page that could not be read: the send must still end, saying so.
        from proactive.delivering.unlisted import unreadable

        await unreadable(rt, message, reason, f"the audience could not be listed: {detail}")
    await rt.outbox.poison(dumps(message.to_json()), reason=reason,
                           detail=detail, message_id=message_id)
    return Outcome(Action.POISONED, reason)
