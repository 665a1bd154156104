"""Put an outcome into effect on the queues: retry later, or poison with why."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from proactive.delivering.outcomes import Outcome
from proactive.delivering.send import finish_unsent
from proactive.storage import deliveries as d
from proactive.storage.queues import dumps

if TYPE_CHECKING:
    from proactive.contract import InvalidMessage, Target
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)


async def refuse(rt: Runtime, body: str, exc: InvalidMessage, *, message_id: str) -> Outcome:
    """Park a message that breaks the contract in the poison queue, with why."""
    log.warning("outbox message %s refused: %s", message_id, exc.reason)
    await rt.outbox.poison(body, reason=exc.reason, detail=exc.detail, message_id=message_id)
    return Outcome("poisoned", exc.reason)


async def retry_later(rt: Runtime, data: dict[str, Any], key: str, outcome: Outcome, *,
                      message_id: str, target: Target | None) -> Outcome:
    """Put the message back on the queue with the outcome's delay (the queue is
    the timer), or give up once the attempts are spent."""
    attempt = int(data.get("attempt", 1)) + outcome.counts
    # The copy is a new queue message: pin the key so it stays the same delivery.
    copy = {**data, "key": key, "attempt": attempt}
    if attempt <= rt.settings.max_attempts:
        await rt.outbox.put(copy, delay=outcome.delay)
        return outcome
    if target is not None and not target.is_broadcast:
        await finish_unsent(rt, key, target, d.FAILED, "retries-exhausted")
    await rt.outbox.poison(dumps({**data, "key": key}), reason="retries-exhausted",
                           detail=f"gave up after {rt.settings.max_attempts} attempts; "
                                  f"last: {outcome.reason}", message_id=message_id)
    return Outcome("poisoned", "retries-exhausted")
