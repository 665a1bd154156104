"""Deliver to one recipient: claim its delivery row, call Teams, record.

The claim makes the send happen once (see storage/deliveries.py). Every
Connector call goes through `call`: paced for the tenant and the
conversation, 429s fed back into the tenant's rate, refusals turned into
Permanent failures.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from proactive.contract import Content, Target
from proactive.delivering.outcomes import Outcome, backoff
from proactive.delivering.pacing import Defer
from proactive.storage import deliveries as d
from proactive.storage.deliveries import Busy, Claim
from proactive.storage.references import BLOCKED, DISABLED, UNINSTALLED, Reference
from proactive.teams.clouds import GCC
from proactive.teams.connector import ConnectorError
from proactive.teams.service_urls import UntrustedServiceUrl

if TYPE_CHECKING:
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)
T = TypeVar("T")

# States of a reference that make a send fail fast, without a Connector call.
_UNREACHABLE = {UNINSTALLED: "uninstalled", BLOCKED: "blocked", DISABLED: "disabled"}
# What a permanent Connector answer teaches us about the recipient.
_MARKS = {"blocked": BLOCKED, "uninstalled": UNINSTALLED, "disabled": DISABLED}


class Permanent(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail or reason


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
    conversation_id = await call(
        rt, tenant, "", service_url,
        lambda url: rt.connector.create_personal_conversation(
            url, bot_id=bot_id, member_id=target.id, tenant_id=tenant))
    return await rt.references.store_created_conversation(
        target.id, tenant, service_url, bot_id, conversation_id)


async def call(rt: Runtime, tenant: str, conversation_id: str, service_url: str,
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
            conversation_id, activity_id = await call(
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
    return await call(rt, ref.tenant_id, conversation_id, ref.service_url,
                       lambda url: rt.connector.send(url, conversation_id, activity))


