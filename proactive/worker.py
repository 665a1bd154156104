"""Carry out one outbox queue message: parse it, route it, settle the outcome.

Routes: a send to one recipient -> delivering/send.py; update / delete ->
delivering/edit.py; a send to many users -> delivering/broadcast.py; a send
with a schedule, and cancel -> scheduling. Each returns an Outcome or raises a
member of proactive.errors; `outcome_of` decides what an error leads to, and
this module carries it out: a message that breaks the contract is parked in
the poison queue with its reason and never retried; a retry goes back on the
queue with a visibility delay (the queue is the timer, so no worker waits
idle) until the attempt budget runs out.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime

from proactive import telemetry
from proactive.contract import Op, OutboxMessage, parse_message
from proactive.delivering import broadcast
from proactive.delivering.ack import card_as_sent
from proactive.delivering.edit import edit
from proactive.delivering.followup import SUFFIX
from proactive.delivering.outcomes import Action, Outcome, outcome_of
from proactive.delivering.render import checked
from proactive.delivering.requeue import refuse, retry_later
from proactive.delivering.send import send_one
from proactive.errors import InvalidMessage, ProactiveError, StorageUnavailable
from proactive.runtime import Runtime
from proactive.storage.queues import lenient_text

log = logging.getLogger(__name__)


async def process(rt: Runtime, body: str, *, message_id: str,
                  inserted_at: datetime | None = None) -> Outcome:
    """Handle one queue message; never raises for a bad message."""
    body = lenient_text(body)
    try:
        message = checked(parse_message(body, default_key=f"msg:{message_id}"),
                          rt.settings.max_activity_bytes)
        if message.needs_seal:  # app-only fields: acted on only if the app signed them
            # Before anything else, and outside _settle: a storage error here
            # fails the invocation (the host retries the text as it came); a
            # retry through the outbox would sign a forgery.
            await rt.outbox.seal.check(json.loads(body))
    except InvalidMessage as exc:
        with telemetry.span("outbox invalid", kind="consumer", reason=exc.reason):
            return await refuse(rt, body, exc, message_id=message_id)
    if inserted_at is not None:
        age = (datetime.now(UTC) - inserted_at).total_seconds()
        telemetry.record("proactive.queue.age", max(0.0, age), op=message.op)
    # The producer's trace continues here (the context rides in the message).
    with telemetry.span(f"outbox {message.op}", traceparent=message.traceparent,
                        kind="consumer", **{"proactive.key": message.key,
                                            "proactive.attempt": message.attempt,
                                            "proactive.part": message.part}) as current:
        outcome = await _settle(rt, message, body, message_id)
        telemetry.set_attributes(current, **{"proactive.outcome": str(outcome.state),
                                             "proactive.reason": outcome.reason})
        telemetry.count("proactive.messages", outcome=str(outcome.state), reason=outcome.reason)
        if telemetry.enabled():  # one structured record per message, joinable by trace
            target = message.target
            log.info("outbox %s %s: %s %s", message.op, message.key, outcome.state,
                     outcome.reason, extra={
                         "proactive.key": message.key, "trace_id": telemetry.trace_id(),
                         "proactive.recipient": telemetry.recipient_hash(target.recipient)
                         if target is not None and not target.is_broadcast else ""})
    return outcome


async def _settle(rt: Runtime, message: OutboxMessage, body: str, message_id: str) -> Outcome:
    try:
        outcome = await _route(rt, message, body, message_id)
    except InvalidMessage as exc:  # e.g. an update's new time that can't be used
        return await refuse(rt, body, exc, message_id=message_id)
    except ProactiveError as exc:
        if isinstance(exc, StorageUnavailable):  # which table or queue, and how
            log.warning("outbox message %s: %s", message_id, exc)
        outcome = outcome_of(exc, message.attempt)
    if outcome.state == Action.RETRY:
        return await retry_later(rt, message, outcome, message_id=message_id)
    return outcome


async def _route(rt: Runtime, message: OutboxMessage, body: str, message_id: str) -> Outcome:
    if message.op == Op.CANCEL:
        return await _cancel(rt, message)
    target = message.target
    if message.schedule is not None and message.op == Op.SEND and target is not None \
            and (not target.is_broadcast or message.part):
        # Later: stored per recipient; the timer puts it back here when due.
        # (A many-user send is split first; each part schedules its users.)
        from proactive.scheduling import store_send

        return Outcome(Action.DONE, await store_send(rt, message))  # ScheduleError: poison
    if message.op == Op.SEND and message.content is not None and message.content.ack:
        await _keep_ack_card(rt, message)
    if message.op == Op.SEND and message.content is not None \
            and message.content.follow_up is not None and target is not None \
            and (not target.is_broadcast or message.part):
        await _plan_follow_up(rt, message)
    if message.op == Op.INSTALL:  # split and paced as a send; each user installed, not sent to
        from proactive.delivering.preinstall import check_enabled

        check_enabled(rt)  # InvalidMessage: poison, with what to set
        return await broadcast.run(rt, message)
    if target is not None and target.is_broadcast:
        return await broadcast.run(rt, message)
    if message.op == Op.SEND:
        assert target is not None and message.content is not None
        return await send_one(rt, message.key, target, message.content)
    return await edit(rt, message)


async def _keep_ack_card(rt: Runtime, message: OutboxMessage) -> None:
    """The card a recipient sees again once they acknowledge (one write per
    message asking for it; sends without `ack` write nothing)."""
    from proactive.storage.acks import AckStore

    assert message.content is not None
    card = card_as_sent(message.content, message.key)
    if card is not None:
        await AckStore(rt.deliveries.table, rt.campaigns.table).keep_card(message.key, card)


async def _plan_follow_up(rt: Runtime, message: OutboxMessage) -> None:
    """Store the reminder of this send (or this part's users) with the
    scheduler, due `after` from now; idempotent per (reminder key, recipient)."""
    from datetime import timedelta

    from proactive.contract.schedule.zones import iso_instant
    from proactive.delivering.followup import reminder
    from proactive.scheduling import store_send
    from proactive.storage.tables import now_utc

    assert message.content is not None and message.content.follow_up is not None
    assert message.target is not None
    follow_up = message.content.follow_up
    due = now_utc() + follow_up.after
    due -= timedelta(microseconds=due.microsecond)
    due_reminder = reminder(message.key, message.target, follow_up, iso_instant(due))
    await store_send(rt, replace(checked(due_reminder, rt.settings.max_activity_bytes),
                                 part=message.part))


async def _cancel(rt: Runtime, message: OutboxMessage) -> Outcome:
    from proactive.scheduling import manage

    scheduled = await manage(rt, message)
    if not message.key.endswith(SUFFIX):  # its pending follow-up goes with it
        reminder = await manage(rt, replace(message, key=message.key + SUFFIX))
        scheduled = scheduled if scheduled.changed else reminder
    if await rt.campaigns.cancel(message.key) or scheduled.changed:
        log.info("send %s cancelled", message.key)
        return Outcome(Action.DONE, "cancelled")
    return Outcome(Action.DONE, "unknown-key")
