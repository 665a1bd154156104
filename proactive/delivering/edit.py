"""Update or delete a sent message: every recipient's copy under the key.

An edit that arrives before its send has finished waits for it (re-queued);
items still scheduled get the new content, or are cancelled by a delete.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from proactive.contract import InvalidMessage, OutboxMessage
from proactive.delivering.outcomes import Outcome, backoff
from proactive.delivering.pacing import Defer
from proactive.delivering.send import Permanent, call
from proactive.storage import deliveries as d
from proactive.storage.tables import iso
from proactive.teams.connector import ConnectorError

if TYPE_CHECKING:
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)


async def edit(rt: Runtime, message: OutboxMessage) -> Outcome:
    from proactive.scheduling.spec import ScheduleError
    from proactive.scheduling.timer import manage

    try:  # items still scheduled: new content (or time), or cancelled by a delete
        scheduled = await manage(rt, message)
    except ScheduleError as exc:
        raise InvalidMessage(exc.reason, exc.detail) from exc
    if scheduled.busy:
        return Outcome("retry", "dispatching", delay=backoff(1, None))
    if message.op == "update" and message.content is None:  # a new time only
        if scheduled.found:
            return Outcome("done", "rescheduled" if scheduled.changed else "not-scheduled")
        return Outcome("retry", "unknown-key", delay=backoff(1, None))
    rows = await rt.deliveries.by_key(message.key)
    if not rows and scheduled.changed:
        return Outcome("done", "scheduled")
    if any(row.get("state") in (d.SENDING, d.RETRYING) for row, _ in rows) or not rows:
        # The send may still be on its way (queue order is not guaranteed).
        return Outcome("retry", "send-pending" if rows else "unknown-key", delay=backoff(1, None))
    retry: Outcome | None = None
    for row, etag in rows:
        if row.get("state") != d.SENT:
            continue
        try:
            await _edit_one(rt, message, row)
        except ConnectorError as exc:
            retry = Outcome("retry", exc.reason, delay=backoff(1, exc.retry_after))
            continue
        except Defer as exc:
            retry = Outcome("retry", "paced", delay=exc.delay, counts=False)
            continue
        except Permanent as exc:
            row.update({f"{message.op}State": "failed", f"{message.op}Reason": exc.reason})
            log.warning("%s of %s -> %s failed: %s", message.op, message.key,
                        row.get("recipient"), exc.reason)
        else:
            if message.op == "delete":
                row["state"] = d.DELETED
                row["deletedAt"] = iso()
            row.update({f"{message.op}State": "done", f"{message.op}Reason": "",
                        "updates": int(row.get("updates", 0)) + (message.op == "update")})
        await rt.deliveries.save(row, etag)
    # Edits are idempotent: a retry redoes every recipient's, harmlessly.
    return retry or Outcome("done", message.op)


async def _edit_one(rt: Runtime, message: OutboxMessage, row: dict[str, Any]) -> None:
    conversation_id, activity_id = row["conversationId"], row["activityId"]
    if message.op == "delete":
        await call(rt, row.get("tenantId", ""), conversation_id, row["serviceUrl"],
                    lambda url: rt.connector.delete(url, conversation_id, activity_id))
    else:
        assert message.content is not None
        activity = message.content.activity()
        await call(rt, row.get("tenantId", ""), conversation_id, row["serviceUrl"],
                    lambda url: rt.connector.update(url, conversation_id, activity_id, activity))

