"""Deliver to one recipient: claim its delivery row, call Teams, record.

The claim makes the send happen once (see storage/deliveries.py). Every
Connector call goes through `call`: paced for the tenant and the
conversation, 429s fed back into the tenant's rate, and retried once on the
cloud's fallback host when Teams asks for it. Failures are members of
proactive.errors; `outcome_of` says what each one leads to, and the delivery
row records it (reason, Teams' status and code, and when a retry is due).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from proactive import telemetry
from proactive.contract import Content, OnUnknown, Target, TargetKind
from proactive.delivering.attempt import Attempt, Finished
from proactive.delivering.outcomes import Action, Outcome, outcome_of
from proactive.delivering.pacing import Defer
from proactive.delivering.render import activity as activity_of
from proactive.errors import (
    UNREACHABLE,
    Busy,
    DeliveryFailed,
    Permanent,
    Reason,
    RetryLater,
    StorageUnavailable,
    Throttled,
    Unreachable,
)
from proactive.storage import tables
from proactive.storage.copies import unknown_attempt
from proactive.storage.deliveries import (
    UNKNOWN_OUTCOMES,
    Claim,
    Unrecorded,
)
from proactive.storage.reference_keys import InstallState
from proactive.storage.references import Reference
from proactive.storage.states import DeliveryState
from proactive.telemetry import log_id

if TYPE_CHECKING:
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)
T = TypeVar("T")



async def finish_unsent(rt: Runtime, key: str, target: Target, state: DeliveryState,
                        reason: str, **fields: Any) -> Outcome:
    """Close a recipient's delivery without sending (cancelled, given up)."""
    try:
        claim = await rt.deliveries.claim(key, target.recipient)
    except Busy as exc:
        return outcome_of(exc, 1)
    if not isinstance(claim, Claim):
        return Outcome(Action.DONE, Reason.DUPLICATE)
    # This claim sends nothing: it is not an attempt.
    await rt.deliveries.finish(claim, state, reason=reason, attempts=claim.attempts - 1,
                               **fields)
    return Outcome(Action.DONE, reason)


async def send_one(rt: Runtime, key: str, target: Target, content: Content, *,
                   sent_reason: str = "") -> Outcome:
    """Deliver to one recipient, once: claim, call Teams, record. A user who
    opted out of the message's topic, or of everything, is recorded `skipped`
    (reason `opted-out`) without a Connector call. `sent_reason`: what the
    row says of a recipient it was sent to (`guest`)."""
    wait = rt.tenant_pacer.defers(target.tenant) if target.tenant else 0.0
    if wait:  # the tenant's budget is booked beyond max_wait: put off before the claim
        return outcome_of(Defer(wait), 1)
    # At most PROACTIVE_MAX_CALLS_IN_FLIGHT of a tenant's deliveries between
    # claim and record at once in this process: all that a crash of it can
    # leave unknown (and, resent, duplicate).
    async with rt.in_flight(target.tenant):
        return await _claimed_send(rt, key, target, content, sent_reason)


async def _claimed_send(rt: Runtime, key: str, target: Target, content: Content,
                        sent_reason: str) -> Outcome:
    attempt = Attempt(rt, key, target.recipient, content.on_unknown)
    try:
        return await _attempted_send(rt, key, target, content, sent_reason, attempt)
    except Finished as done:
        log.info("delivery %s -> %s already %s", key, log_id(target.recipient),
                 done.row.state)
        return Outcome(Action.DONE, Reason.DUPLICATE)
    except Unrecorded:
        raise  # Teams answered: the message must come back (storage/deliveries.py)
    except (Busy, StorageUnavailable) as exc:
        if attempt.claim is None or isinstance(exc, Busy):  # nothing claimed, nothing sent
            return outcome_of(exc, 1)
        return await _put_back(rt, attempt.claim, exc)


async def _attempted_send(rt: Runtime, key: str, target: Target, content: Content,
                          sent_reason: str, attempt: Attempt) -> Outcome:
    if content.unless is not None:  # a follow-up: only to who still hasn't
        from proactive.delivering.reminders import skip_reason

        skip = await skip_reason(rt, content.unless, target.recipient)
        if skip is not None:
            claim = await attempt.take()
            await rt.deliveries.finish(claim, DeliveryState.SKIPPED, reason=str(skip),
                                       attempts=claim.attempts - 1)
            return Outcome(Action.DONE, str(skip))
    try:
        fields = await _deliver(rt, target, content, key, attempt)
    except _OptedOut as skip:  # not an attempt: nothing was sent
        claim = await attempt.take()
        await rt.deliveries.finish(claim, DeliveryState.SKIPPED, reason=Reason.OPTED_OUT,
                                   optedOut=skip.topic, attempts=claim.attempts - 1)
        return Outcome(Action.DONE, Reason.OPTED_OUT)
    except StorageUnavailable:
        raise  # nothing was sent: given back uncounted (_claimed_send)
    except (DeliveryFailed, RetryLater) as exc:
        if attempt.claim is None and not isinstance(exc, DeliveryFailed):
            return outcome_of(exc, 1)  # put off before the claim: nothing to give back
        claim = await attempt.take()  # a failure before the call is recorded too
        return await record_failure(rt, claim, exc, what="delivery",
                                    on_unknown=content.on_unknown)
    # Teams accepted it: from here on `sent` must be written. finish keeps
    # trying through a storage outage, or raises Unrecorded (a retry: the
    # message comes back and this process writes it then).
    claim = await attempt.take()
    if sent_reason:
        fields["reason"] = sent_reason
    await rt.deliveries.finish(claim, DeliveryState.SENT, **fields)
    return Outcome(Action.DONE, Reason.SENT, ambiguous=bool(claim.entity.get("ambiguous")))


class _OptedOut(Exception):
    """The recipient stopped this message (raised by the check `call` runs
    once the pacing slot is taken; caught by send_one, never further)."""

    def __init__(self, topic: str) -> None:
        super().__init__(topic)
        self.topic = topic


async def record_failure(rt: Runtime, claim: Claim, exc: DeliveryFailed | RetryLater, *,
                         what: str, on_unknown: str = "resend", **extra: Any) -> Outcome:
    """Record a claimed attempt that did not succeed: `failed`, or `retrying`
    with the attempt counted, or given back uncounted when it was put off
    before the service was asked. An answer lost on the way (a timeout) marks
    the row ambiguous, and with `on_unknown` "skip" records it `unknown`
    instead of retrying. `extra` fields go on the row too."""
    outcome = outcome_of(exc, claim.attempts)
    if exc.reason in UNKNOWN_OUTCOMES and outcome.counts and what == "delivery":
        # Teams may have delivered it: the answer was lost on the way. (An
        # install is safe to repeat: Graph answers 409 to a second one.)
        claim.entity.update(unknown_attempt(claim.entity, exc.reason))
        if on_unknown == OnUnknown.SKIP:
            await rt.deliveries.finish(claim, DeliveryState.UNKNOWN,
                                       reason=Reason.OUTCOME_UNKNOWN, detail=exc.detail, **extra)
            return Outcome(Action.DONE, Reason.OUTCOME_UNKNOWN, ambiguous=True)
    state, fields = _recorded(exc, outcome, claim)
    fields.update(extra)
    if outcome.counts or outcome.state is Action.FAILED:
        await rt.deliveries.finish(claim, state, **fields)
    else:
        await rt.deliveries.release(claim, **fields)
    if outcome.state is Action.FAILED:
        log.warning("%s %s -> %s failed: %s", what, claim.entity.get("key"),
                    log_id(str(claim.entity.get("recipient"))), exc.reason)
    return outcome


async def _put_back(rt: Runtime, claim: Claim, exc: StorageUnavailable) -> Outcome:
    """Storage failed on the way to Teams (the reference, pacing): nothing was
    sent. The claim is given back (or, storage being down, remembered by this
    process as unused) and the message comes back later."""
    await rt.deliveries.release(claim, reason=exc.reason, detail=exc.detail)
    return outcome_of(exc, claim.attempts)


def _recorded(exc: DeliveryFailed | RetryLater, outcome: Outcome,
              claim: Claim) -> tuple[DeliveryState, dict[str, Any]]:
    """The delivery row's state and fields for a failed or put-off attempt."""
    fields: dict[str, Any] = {"reason": exc.reason, "detail": exc.detail}
    if isinstance(exc, DeliveryFailed):
        fields.update(lastStatus=exc.status, lastCode=exc.code)
    if outcome.state is Action.FAILED:
        return DeliveryState.FAILED, fields
    if not outcome.counts:  # put off, not tried: the attempt is given back
        fields["attempts"] = claim.attempts - 1
    # When the retry is due: an update or delete of the key waits until then.
    fields["retryAt"] = tables.iso(tables.now_utc() + timedelta(seconds=outcome.delay))
    return DeliveryState.RETRYING, fields


async def _reference(rt: Runtime, target: Target) -> Reference:
    tenant = target.tenant or None
    if target.kind == TargetKind.USER:
        ref = await rt.references.user(target.id, tenant)
        if (ref is None or not ref.conversation_id) and rt.settings.graph_install \
                and not (ref and ref.user_id):
            # Never met, and not a known team member: install the app through Graph.
            from proactive.delivering.install import install_reference

            _check_tenant(rt, target.tenant or rt.settings.app_tenant_id)
            ref = await install_reference(rt, target.id, target.tenant or
                                          rt.settings.app_tenant_id,
                                          known=ref)
        elif ref is None or not ref.conversation_id:
            ref = await _create_personal(rt, target, member_id=ref.user_id if ref else "")
    elif target.kind == TargetKind.CONVERSATION:
        ref = await rt.references.conversation(target.id, tenant)
        if ref is None:
            raise Permanent(Reason.UNKNOWN_CONVERSATION,
                            "no conversation reference is stored for this conversation id")
    else:
        ref = await rt.references.conversation(target.id, tenant)
        if ref is None and target.team:
            team = await rt.references.team(target.team, tenant)
            if team is not None:
                ref = team.reference(conversation_id=target.id)
        if ref is None:
            raise Permanent(Reason.UNKNOWN_CHANNEL, "no reference is stored for this channel "
                                                    "(give its team, or install the bot in it)")
    _check_tenant(rt, ref.tenant_id)
    if ref.state in UNREACHABLE:  # fail fast, without a Connector call
        raise Unreachable(Reason(ref.state), f"the recipient is {ref.state}; a new install "
                                             f"or a message from them clears it")
    return ref


def _check_tenant(rt: Runtime, tenant_id: str) -> None:
    allowed = rt.settings.allowed_tenants
    if allowed and tenant_id.lower() not in {t.lower() for t in allowed}:
        raise Permanent(Reason.TENANT_NOT_ALLOWED, "the recipient's tenant is not in "
                                                   "PROACTIVE_ALLOWED_TENANTS")


async def _create_personal(rt: Runtime, target: Target, *, member_id: str = "") -> Reference:
    tenant = target.tenant or rt.settings.app_tenant_id
    _check_tenant(rt, tenant)
    known = await rt.references.tenant_service_url(tenant) if tenant else None
    if not known:
        raise Permanent(Reason.UNKNOWN_USER, "no conversation with this user is stored and "
                                             "the tenant's serviceUrl is not known yet")
    service_url, bot_id = known
    bot_id = f"28:{rt.settings.app_id}" if rt.settings.app_id else bot_id
    conversation_id, service_url = await call(
        rt, tenant, "", service_url,
        lambda url: rt.connector.create_personal_conversation(
            url, bot_id=bot_id, member_id=member_id or target.id, tenant_id=tenant))
    return await rt.references.store_created_conversation(
        target.id, tenant, service_url, bot_id, conversation_id)


async def call(rt: Runtime, tenant: str, conversation_id: str, service_url: str,
               request: Callable[[str], Awaitable[T]], *,
               ready: Callable[[], Awaitable[None]] | None = None,
               still: Callable[[], None] | None = None) -> tuple[T, str]:
    """One Connector call, paced for the tenant and conversation. Returns its
    answer and the serviceUrl that gave it (the cloud's fallback host when the
    stored one was refused with 403 InvalidBotApiHost). Raises members of
    proactive.errors; pacing.Defer when the budget is spent for a while.
    `ready` runs once the slot is taken, just before the call (the opt-out
    check, which needs what the slot's reservation learnt, and the delivery's
    claim): it starts as long before the slot as it usually takes, so the
    call still leaves on its slot."""
    waited = time.monotonic()
    pacer = rt.tenant_pacer
    at = await pacer.acquire(tenant, early=pacer.early if ready is not None else 0.0)
    if conversation_id:
        await rt.conversation_pacer.acquire(conversation_id)
    telemetry.record("proactive.pacing.wait", time.monotonic() - waited)
    if ready is not None:
        began = time.monotonic()
        await ready()
        pacer.took(time.monotonic() - began)
        await pacer.until(tenant, at)
    await pacer.spaced(tenant)  # however late this one leaves
    if still is not None:
        still()  # the very last check, however long the waits above took
    try:
        try:
            return await request(service_url), service_url
        except Permanent as exc:
            fallback = rt.cloud.fallback_service_url
            if exc.reason != Reason.INVALID_BOT_API_HOST or not fallback \
                    or _same_host(service_url, fallback):
                raise
            # A tenant of another environment of this cloud (a GCC tenant
            # reached through the public host): Teams asks for its host. Once.
            return await request(fallback), fallback
    except Throttled as exc:
        telemetry.count("proactive.throttled", tenant=tenant)
        if conversation_id and exc.retry_after:  # that conversation, that moment
            rt.conversation_pacer.hold(conversation_id, exc.retry_after)
        await rt.tenant_pacer.throttled(tenant)
        raise


def _same_host(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


async def _deliver(rt: Runtime, target: Target, content: Content,
                   key: str, attempt: Attempt) -> dict[str, Any]:
    ref = await _reference(rt, target)
    activity = activity_of(content, key)
    # A send into someone's 1:1 chat is a send to that person, whatever
    # address it used: by user, or by the chat's conversation id.
    owner = target.id if target.kind == TargetKind.USER else ref.owner

    async def ready() -> None:
        if owner and not content.service:
            stopped = await rt.opt_outs.check(ref.tenant_id, owner, content.topic)
            if stopped is not None:
                raise _OptedOut(stopped.topic)
        await attempt.take()  # the slot is granted: the call is about to go out

    def still() -> None:
        if attempt.claim is not None and rt.deliveries.too_late_to_call(attempt.claim):
            # Too old for a call to end inside the claim's lease (a slot missed
            # through a slow storage, a second call after a stale conversation):
            # given back, sent when it comes back.
            raise RetryLater(0.0, Reason.BUSY, "the claim is too old to start a call on")
    try:
        if target.kind == TargetKind.CHANNEL and not target.reply_to:
            (conversation_id, activity_id), service_url = await call(
                rt, ref.tenant_id, target.id, ref.service_url,
                lambda url: rt.connector.create_channel_thread(
                    url, bot_id=ref.bot_id, channel_id=target.id, tenant_id=ref.tenant_id,
                    activity=activity), ready=ready, still=still)
        else:
            conversation_id = ref.conversation_id
            if target.kind == TargetKind.CHANNEL:
                conversation_id = f"{target.id};messageid={target.reply_to}"
            try:
                activity_id, service_url = await _send_activity(rt, ref, conversation_id,
                                                                activity, ready, still)
            except Permanent as exc:
                if exc.reason != Reason.CONVERSATION_NOT_FOUND or target.kind != TargetKind.USER:
                    raise
                # The stored 1:1 conversation is stale: create it again, once.
                ref = await _create_personal(rt, Target(TargetKind.USER, target.id, ref.tenant_id))
                conversation_id = ref.conversation_id
                activity_id, service_url = await _send_activity(rt, ref, conversation_id,
                                                                activity, ready, still)
    except Unreachable as exc:
        # What the answer teaches us about the recipient: the same word.
        await rt.references.mark(ref, InstallState(exc.reason),
                                 aad_id=target.id if target.kind == TargetKind.USER else "")
        raise
    if service_url != ref.service_url:  # Teams answered on the fallback host
        try:
            await rt.references.move_service_url(
                ref, service_url, aad_id=target.id if target.kind == TargetKind.USER else "",
                team_id=target.team)
        except StorageUnavailable as exc:
            # Sent already: a storage error here must not look like a failed
            # send (it would be sent again). The next send finds the host again.
            log.warning("the fallback serviceUrl of tenant %s is not stored: %s",
                        ref.tenant_id, type(exc).__name__)
    fields = {"conversationId": conversation_id, "activityId": activity_id,
              "serviceUrl": service_url, "tenantId": ref.tenant_id}
    if content.ack:  # written with the outcome: no storage operation of its own
        fields["ackLabel"] = content.ack
    return fields


async def _send_activity(rt: Runtime, ref: Reference, conversation_id: str,
                         activity: dict[str, Any],
                         ready: Callable[[], Awaitable[None]] | None,
                         still: Callable[[], None]) -> tuple[str, str]:
    return await call(rt, ref.tenant_id, conversation_id, ref.service_url,
                      lambda url: rt.connector.send(url, conversation_id, activity), ready=ready,
                      still=still)
