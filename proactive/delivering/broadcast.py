"""One send to many users: split into parts, deliver each part, count.

A message addressed to `{"users": [...]}` or `{"allUsers": true}` is split
into part messages of at most PART users (same key, same content), put on the
outbox queue. Listing a tenant's users pages through the references table, so
no audience is held in memory whole. Each part delivers to its users a few at
a time (paced per tenant like every send), each user through the same claimed,
exactly-once path as a single send; a user whose send must be retried goes
back on the queue as a part of one. Every result adds to the key's counters.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING

from proactive.contract import Content, OutboxMessage, Target
from proactive.delivering import audiences
from proactive.delivering.outcomes import Action, DeliveryState, Outcome, outcome_of
from proactive.delivering.preinstall import install_one
from proactive.delivering.requeue import retry_later
from proactive.delivering.send import finish_unsent, send_one
from proactive.errors import Permanent, Reason, RetryLater, Transient
from proactive.storage import tables
from proactive.storage.progress import CANCELLED, PER_TRANSACTION, result_counts
from proactive.storage.send_index import SendIndexRow

if TYPE_CHECKING:
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)

PART = 25
CONCURRENCY = 8


async def run(rt: Runtime, message: OutboxMessage) -> Outcome:
    assert message.target is not None
    target = message.target
    content = message.content or Content()
    listed = SendIndexRow(key=message.key, created_at="", topic=content.topic,
                          text=content.text or content.summary, audience=target.kind)
    summary, new = await rt.campaigns.start(message.key, expected=message.part, listed=listed)
    if message.part and target.kind == "users" and len(target.users) <= PART:
        return await _deliver_part(rt, message, cancelled=summary["state"] == CANCELLED)
    # Several messages may share a key (an audience too big for one message):
    # each audience is split once, however often its message is delivered (a
    # key new with this message has split nothing yet).
    audience = hashlib.sha256(json.dumps(target.to_json(), sort_keys=True).encode()).hexdigest()
    if not new and await rt.campaigns.was_split(message.key, audience):
        return Outcome(Action.DONE, Reason.DUPLICATE)
    if target.kind in ("teamMembers", "group"):
        return await _split_page(rt, message, audience)
    queued, uncounted = 0, {}
    async for index, users in _numbered(_audience(rt, target)):
        await rt.outbox.put(message.for_users(users).retry(attempt=1).to_json())
        queued += len(users)
        # Once per part, even if a crash makes the split run again; counted a
        # transaction's worth at a time, all before `mark_split` (the send
        # can't turn done before that).
        uncounted[f"part:{audience}:{index}"] = Counter(queued=len(users))
        if len(uncounted) == PER_TRANSACTION:
            await rt.campaigns.count(message.key, uncounted)
            uncounted = {}
    if uncounted:
        await rt.campaigns.count(message.key, uncounted)
    await rt.campaigns.mark_split(message.key, audience)
    await rt.campaigns.settle(message.key)  # every part may be done already
    log.info("send %s split for %d users", message.key, queued)
    return Outcome(Action.DONE, "split")


async def _split_page(rt: Runtime, message: OutboxMessage, audience: str) -> Outcome:
    """One page of a paged audience: its users in parts, the next page as a
    message of its own (so no audience is ever held whole), and who can't be
    reached counted with the reason."""
    assert message.target is not None
    try:
        found = await audiences.page(rt, message.target)
    except Permanent as exc:  # no such team or group: the whole audience, said once
        await rt.campaigns.count(message.key, {f"audience:{audience}": result_counts(
            exc.reason)})
        log.warning("send %s: audience refused: %s", message.key, exc.reason)
        return Outcome(Action.FAILED, exc.reason)
    counts: dict[str, Counter[str]] = {name: result_counts(reason)
                                       for name, reason in found.unreachable.items()}
    for index, start in enumerate(range(0, len(found.users), PART)):
        users = found.users[start:start + PART]
        await rt.outbox.put(message.for_users(users, found.tenant).retry(attempt=1).to_json())
        counts[f"part:{audience}:{index}"] = Counter(queued=len(users))
    await rt.campaigns.count(message.key, counts)
    if found.continuation:
        await rt.outbox.put(message.next_page(found.continuation).to_json())
    await rt.campaigns.mark_split(message.key, audience)
    log.info("send %s: a page of %d users split", message.key, len(found.users))
    return Outcome(Action.DONE, "split")


async def _numbered(parts: AsyncIterator[list[str]]) -> AsyncIterator[tuple[int, list[str]]]:
    index = 0
    async for part in parts:
        yield index, part
        index += 1


async def _audience(rt: Runtime, target: Target) -> AsyncIterator[list[str]]:
    """The users in parts of at most PART, without listing them all at once."""
    if target.kind == "users":
        for start in range(0, len(target.users), PART):
            yield list(target.users[start:start + PART])
        return
    tenant = target.tenant or rt.settings.app_tenant_id
    batch: list[str] = []
    async for user in rt.references.users_of_tenant(tenant):
        batch.append(user)
        if len(batch) == PART:
            yield batch
            batch = []
    if batch:
        yield batch


async def _deliver_part(rt: Runtime, message: OutboxMessage, *, cancelled: bool) -> Outcome:
    assert message.target is not None
    content, tenant = message.content, message.target.tenant
    gate = asyncio.Semaphore(CONCURRENCY)
    results: dict[str, Counter[str]] = {}  # recipient -> what it adds to the counters
    # Users put off because the tenant's budget is spent, and for how long. Once
    # one is, the rest of the part is not even tried: they go back together.
    paced: list[str] = []
    paced_delay: list[float] = []

    async def one(user: str) -> None:
        target = Target("user", user, tenant=tenant)
        async with gate:
            if paced_delay:
                paced.append(user)
                return
            if "@" in user and not cancelled:  # a user principal name: its AAD id
                try:
                    target = await _resolved(rt, message.key, target)
                except RetryLater as exc:  # the tenant's Graph budget is spent
                    paced.append(user)
                    paced_delay.append(exc.delay)
                    return
                except Transient as exc:  # throttled (Retry-After) or unavailable
                    await retry_later(rt, message.for_users([user]),
                                      outcome_of(exc, message.attempt), message_id="",
                                      target=target)
                    return
                if target.kind != "user":  # no such user, or Graph refused: recorded
                    results[f"conv:{target.id}"] = result_counts(target.reply_to)
                    return
            if cancelled:
                outcome = await finish_unsent(rt, message.key, target,
                                              DeliveryState.CANCELLED, Reason.CANCELLED)
            elif content is None:  # op install: the app for the user, nothing sent
                outcome = await install_one(rt, message.key, target)
            else:
                outcome = await send_one(rt, message.key, target, content)
            if outcome.state == Action.RETRY and outcome.reason == Reason.PACED:
                paced.append(user)
                paced_delay.append(outcome.delay)
                return
            if outcome.state == Action.RETRY:
                outcome = await retry_later(rt, message.for_users([user]), outcome,
                                            message_id="", target=target)
                if outcome.state == Action.RETRY:
                    return  # counted when it comes back
            reason: str | None = outcome.reason
            if reason == Reason.DUPLICATE:
                # Finished earlier: by this part before its worker died, by
                # another copy, or by an earlier message under the key.
                # Counting it again is harmless (each recipient counts once);
                # not counting it would lose a dead worker's results.
                reason = await _recorded_result(rt, message.key, target)
            if reason is not None:
                results[target.recipient] = result_counts(reason)

    first, *rest = message.target.users
    await one(first)  # alone: if the budget is spent, the rest are not even claimed
    await asyncio.gather(*(one(user) for user in rest))
    if paced:
        # Not a failure: the same part, smaller, when the budget frees up.
        await rt.outbox.put(message.for_users(paced).to_json(), delay=min(paced_delay))
    await rt.campaigns.count(message.key, results)
    await rt.campaigns.settle(message.key)  # the last part counted makes it final
    return Outcome(Action.DONE, "part")


async def _resolved(rt: Runtime, key: str, target: Target) -> Target:
    """The user named by principal name, by AAD id; or, when there is no such
    user, their delivery recorded failed `not-found` (returned as `upn:` target)."""
    from proactive.delivering.install import user_id

    missing = Target("conversation", f"upn:{target.id.lower()}", tenant=target.tenant)
    try:
        found = await user_id(rt, target.tenant or rt.settings.app_tenant_id, target.id)
    except Permanent as exc:  # e.g. 403: Graph permission not granted
        await finish_unsent(rt, key, missing, DeliveryState.FAILED, exc.reason,
                            detail=exc.detail)
        return replace(missing, reply_to=exc.reason)
    if found is not None:
        return Target("user", found, tenant=target.tenant)
    await finish_unsent(rt, key, missing, DeliveryState.FAILED, Reason.NOT_FOUND,
                        detail="Graph knows no user by this principal name")
    return replace(missing, reply_to=Reason.NOT_FOUND)


async def _recorded_result(rt: Runtime, key: str, target: Target) -> str | None:
    """What a finished delivery row counts as (a reason `result_counts` takes)."""
    found = await tables.read(rt.deliveries.table, tables.safe_key(key),
                              tables.safe_key(target.recipient))
    if found is None:
        return None
    row = found[0]
    state = row.get("state")
    if state in (DeliveryState.SENT, DeliveryState.DELETED):
        return Reason.SENT
    if state in (DeliveryState.FAILED, DeliveryState.CANCELLED, DeliveryState.SKIPPED,
                 DeliveryState.INSTALLED):
        return str(row.get("reason") or state)
    return None  # not finished: whoever holds it reports it
