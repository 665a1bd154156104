"""Carry out one outbox queue message: send, update or delete a Teams message.

Every outcome is written to the delivery record of (key, recipient). A message
that breaks the contract is parked in the poison queue with its reason and
never retried. A transient failure goes back on the queue with a visibility
delay (the queue is the timer, so no worker waits idle) until the attempt
budget runs out.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from proactive.contract import Content, InvalidMessage, OutboxMessage, Target, parse_message
from proactive.delivering.pacing import Defer
from proactive.runtime import Runtime
from proactive.storage import deliveries as d
from proactive.storage.deliveries import Busy, Claim
from proactive.storage.queues import dumps, lenient_text
from proactive.storage.references import BLOCKED, DISABLED, UNINSTALLED, Reference
from proactive.storage.tables import iso
from proactive.teams.clouds import GCC
from proactive.teams.connector import ConnectorError
from proactive.teams.service_urls import UntrustedServiceUrl

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BACKOFF = 300.0
# States of a reference that make a send fail fast, without a Connector call.
_UNREACHABLE = {UNINSTALLED: "uninstalled", BLOCKED: "blocked", DISABLED: "disabled"}
# What a permanent Connector answer teaches us about the recipient.
_MARKS = {"blocked": BLOCKED, "uninstalled": UNINSTALLED, "disabled": DISABLED}


class Permanent(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail or reason


@dataclass(frozen=True)
class Outcome:
    state: str  # done | retry | poisoned
    reason: str = ""
    delay: float = 0.0
    counts: bool = True  # whether the retry uses up an attempt


def backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return retry_after
    base = min(MAX_BACKOFF, 2.0 ** attempt)
    return base / 2 + random.uniform(0, base / 2)


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
        from proactive.delivering.broadcast import run

        return await run(rt, message, data)
    if message.op == "send":
        assert message.target is not None and message.content is not None
        outcome = await send_one(rt, message.key, message.target, message.content)
    else:
        try:
            outcome = await _edit(rt, message)
        except InvalidMessage as exc:  # a new time that can't be used
            return await refuse(rt, body, exc, message_id=message_id)
    if outcome.state == "retry":
        return await retry_later(rt, data, message.key, outcome, message_id=message_id,
                                 target=message.target)
    return outcome


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


async def finish_unsent(rt: Runtime, key: str, target: Target, state: str,
                        reason: str) -> Outcome:
    """Close a recipient's delivery without sending (cancelled, given up)."""
    try:
        claim = await rt.deliveries.claim(key, target.recipient)
    except Busy:
        # Another worker holds it (or held it and died: its lease runs out).
        # Not a failed attempt.
        return Outcome("retry", "busy", delay=backoff(1, None), counts=False)
    if not isinstance(claim, Claim):
        return Outcome("done", "duplicate")
    await rt.deliveries.finish(claim, state, reason=reason)
    return Outcome("done", reason)


async def _cancel(rt: Runtime, message: OutboxMessage) -> Outcome:
    from proactive.scheduling.timer import manage

    scheduled = await manage(rt, message)
    if await rt.campaigns.cancel(message.key) or scheduled.changed:
        log.info("send %s cancelled", message.key)
        return Outcome("done", "cancelled")
    return Outcome("done", "unknown-key")


# --- send -------------------------------------------------------------------

async def send_one(rt: Runtime, key: str, target: Target, content: Content) -> Outcome:
    """Deliver to one recipient, once: claim, call Teams, record."""
    try:
        claim = await rt.deliveries.claim(key, target.recipient)
    except Busy:
        # Another worker holds it (or held it and died: its lease runs out).
        # Not a failed attempt.
        return Outcome("retry", "busy", delay=backoff(1, None), counts=False)
    if not isinstance(claim, Claim):
        log.info("delivery %s -> %s already %s", key, target.recipient, claim.get("state"))
        return Outcome("done", "duplicate")
    try:
        fields = await _deliver(rt, target, content.activity())
    except Permanent as exc:
        await rt.deliveries.finish(claim, d.FAILED, reason=exc.reason, detail=exc.detail)
        log.warning("delivery %s -> %s failed: %s", key, target.recipient, exc.reason)
        return Outcome("done", exc.reason)
    except ConnectorError as exc:
        await rt.deliveries.finish(claim, d.RETRYING, reason=exc.reason,
                                   lastStatus=exc.status)
        return Outcome("retry", exc.reason, delay=backoff(claim.attempts, exc.retry_after))
    except Defer as exc:
        # Not a failure: the tenant's budget is spent for a while.
        await rt.deliveries.release(claim, reason="paced")
        return Outcome("retry", "paced", delay=exc.delay, counts=False)
    except Exception as exc:
        if not d.unavailable(exc):
            raise
        # Storage failed on the way to Teams (pacing, the reference): nothing
        # was sent. The message comes back (the host retries the invocation)
        # and this process takes its claim back.
        await rt.deliveries.release(claim, reason="storage-unavailable")
        raise
    # Teams accepted it: from here on, `sent` must be written (finish keeps
    # trying through a storage outage, or raises Unrecorded: the message comes
    # back and this process writes it then).
    await rt.deliveries.finish(claim, d.SENT, **fields)
    return Outcome("done", "sent")


async def _reference(rt: Runtime, target: Target) -> Reference:
    tenant = target.tenant or None
    if target.kind == "user":
        ref = await rt.references.user(target.id, tenant)
        if ref is None or not ref.conversation_id:
            ref = await _create_personal(rt, target)
    elif target.kind == "conversation":
        ref = await rt.references.conversation(target.id, tenant)
        if ref is None:
            raise Permanent("unknown-conversation",
                            "no conversation reference is stored for this conversation id")
    else:
        ref = await rt.references.conversation(target.id, tenant)
        if ref is None and target.team:
            team = await rt.references.team(target.team, tenant)
            if team is not None:
                ref = Reference.from_entity({**team, "conversationId": target.id})
        if ref is None:
            raise Permanent("unknown-channel", "no reference is stored for this channel "
                                               "(give its team, or install the bot in it)")
    _check_tenant(rt, ref.tenant_id)
    reason = _UNREACHABLE.get(ref.state)
    if reason:
        raise Permanent(reason, f"the recipient is {ref.state}; a new install or a "
                                f"message from them clears it")
    return ref


def _check_tenant(rt: Runtime, tenant_id: str) -> None:
    allowed = rt.settings.allowed_tenants
    if allowed and tenant_id.lower() not in {t.lower() for t in allowed}:
        raise Permanent("tenant-not-allowed", "the recipient's tenant is not in "
                                              "PROACTIVE_ALLOWED_TENANTS")


async def _create_personal(rt: Runtime, target: Target) -> Reference:
    tenant = target.tenant or rt.settings.app_tenant_id
    _check_tenant(rt, tenant)
    known = await rt.references.tenant_service_url(tenant) if tenant else None
    if not known:
        raise Permanent("unknown-user", "no conversation with this user is stored and the "
                                        "tenant's serviceUrl is not known yet")
    service_url, bot_id = known
    bot_id = f"28:{rt.settings.app_id}" if rt.settings.app_id else bot_id
    conversation_id = await _call(
        rt, tenant, "", service_url,
        lambda url: rt.connector.create_personal_conversation(
            url, bot_id=bot_id, member_id=target.id, tenant_id=tenant))
    return await rt.references.store_created_conversation(
        target.id, tenant, service_url, bot_id, conversation_id)


async def _call(rt: Runtime, tenant: str, conversation_id: str, service_url: str,
                call: Callable[[str], Awaitable[T]]) -> T:
    """One Connector call: paced for the tenant and conversation, 429s fed
    back into the tenant's rate, refusals turned into Permanent failures.
    Raises Defer when the budget is spent for longer than a short wait."""
    await rt.tenant_pacer.acquire(tenant)
    if conversation_id:
        await rt.conversation_pacer.acquire(conversation_id)
    try:
        try:
            return await call(service_url)
        except ConnectorError as exc:
            if exc.reason != "invalid-bot-api-host":
                raise
            # A GCC tenant reached through the public host: Teams asks for the
            # GCC host instead. Once.
            return await call(GCC.global_service_url)
    except UntrustedServiceUrl as exc:
        raise Permanent("untrusted-service-url",
                        "the serviceUrl is not a Teams Connector host of this cloud") from exc
    except ConnectorError as exc:
        if exc.status == 429:
            await rt.tenant_pacer.throttled(tenant)
        if exc.retryable:
            raise
        raise Permanent(exc.reason, f"Teams answered {exc.status} {exc.code}".strip()) from exc


async def _deliver(rt: Runtime, target: Target, activity: dict[str, Any]) -> dict[str, Any]:
    ref = await _reference(rt, target)
    try:
        if target.kind == "channel" and not target.reply_to:
            conversation_id, activity_id = await _call(
                rt, ref.tenant_id, target.id, ref.service_url,
                lambda url: rt.connector.create_channel_thread(
                    url, bot_id=ref.bot_id, channel_id=target.id, tenant_id=ref.tenant_id,
                    activity=activity))
        else:
            conversation_id = ref.conversation_id
            if target.kind == "channel":
                conversation_id = f"{target.id};messageid={target.reply_to}"
            try:
                activity_id = await _send_activity(rt, ref, conversation_id, activity)
            except Permanent as exc:
                if exc.reason != "conversation-not-found" or target.kind != "user":
                    raise
                # The stored 1:1 conversation is stale: create it again, once.
                ref = await _create_personal(rt, Target("user", target.id, ref.tenant_id))
                conversation_id = ref.conversation_id
                activity_id = await _send_activity(rt, ref, conversation_id, activity)
    except Permanent as exc:
        mark = _MARKS.get(exc.reason)
        if mark:
            await rt.references.mark(ref, mark, aad_id=target.id if target.kind == "user" else "")
        raise
    return {"conversationId": conversation_id, "activityId": activity_id,
            "serviceUrl": ref.service_url, "tenantId": ref.tenant_id}


async def _send_activity(rt: Runtime, ref: Reference, conversation_id: str,
                         activity: dict[str, Any]) -> str:
    return await _call(rt, ref.tenant_id, conversation_id, ref.service_url,
                       lambda url: rt.connector.send(url, conversation_id, activity))


# --- update / delete -----------------------------------------------------------

async def _edit(rt: Runtime, message: OutboxMessage) -> Outcome:
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
        await _call(rt, row.get("tenantId", ""), conversation_id, row["serviceUrl"],
                    lambda url: rt.connector.delete(url, conversation_id, activity_id))
    else:
        assert message.content is not None
        activity = message.content.activity()
        await _call(rt, row.get("tenantId", ""), conversation_id, row["serviceUrl"],
                    lambda url: rt.connector.update(url, conversation_id, activity_id, activity))

