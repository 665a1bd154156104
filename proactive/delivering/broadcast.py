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
from typing import TYPE_CHECKING, Any

from proactive.contract import OutboxMessage, Target
from proactive.delivering.outcomes import Outcome
from proactive.delivering.requeue import retry_later
from proactive.delivering.send import finish_unsent, send_one
from proactive.storage import deliveries as d
from proactive.storage import tables
from proactive.storage.progress import CANCELLED, result_counts

if TYPE_CHECKING:
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)

PART = 25
CONCURRENCY = 8


async def run(rt: Runtime, message: OutboxMessage, data: dict[str, Any]) -> Outcome:
    assert message.target is not None
    target = message.target
    summary = await rt.campaigns.start(message.key)
    if data.get("part") and len(target.users) <= PART:
        return await _deliver_part(rt, message, data, cancelled=summary["state"] == CANCELLED)
    # Several messages may share a key (an audience too big for one message):
    # each audience is split once, however often its message is delivered.
    audience = hashlib.sha256(json.dumps(data.get("to"), sort_keys=True).encode()).hexdigest()
    if await rt.campaigns.was_split(message.key, audience):
        return Outcome("done", "duplicate")
    queued = 0
    async for index, users in _numbered(_audience(rt, target)):
        part = {**data, "to": {"users": users, "tenant": target.tenant} if target.tenant
                else {"users": users}, "key": message.key, "part": True}
        part.pop("attempt", None)
        await rt.outbox.put(part)
        queued += len(users)
        # Once per part, even if a crash makes the split run again.
        await rt.campaigns.count(message.key, {f"part:{audience}:{index}":
                                               Counter(queued=len(users))})
    await rt.campaigns.mark_split(message.key, audience)
    log.info("send %s split for %d users", message.key, queued)
    return Outcome("done", "split")


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


async def _deliver_part(rt: Runtime, message: OutboxMessage, data: dict[str, Any], *,
                        cancelled: bool) -> Outcome:
    assert message.target is not None and message.content is not None
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
            if cancelled:
                outcome = await finish_unsent(rt, message.key, target, d.CANCELLED,
                                              "cancelled")
            else:
                outcome = await send_one(rt, message.key, target, content)
            if outcome.state == "retry" and outcome.reason == "paced":
                paced.append(user)
                paced_delay.append(outcome.delay)
                return
            if outcome.state == "retry":
                alone = {**data, "to": {**data["to"], "users": [user]}}
                outcome = await retry_later(rt, alone, message.key, outcome,
                                            message_id="", target=target)
                if outcome.state == "retry":
                    return  # counted when it comes back
            reason: str | None = outcome.reason
            if reason == "duplicate":
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
        later = {**data, "to": {**data["to"], "users": paced}}
        await rt.outbox.put(later, delay=min(paced_delay))
    await rt.campaigns.count(message.key, results)
    return Outcome("done", "part")


async def _recorded_result(rt: Runtime, key: str, target: Target) -> str | None:
    """What a finished delivery row counts as (a reason `result_counts` takes)."""
    found = await tables.read(rt.deliveries.table, tables.safe_key(key),
                              tables.safe_key(target.recipient))
    if found is None:
        return None
    row = found[0]
    state = row.get("state")
    if state in (d.SENT, d.DELETED):
        return "sent"
    if state in (d.FAILED, d.CANCELLED):
        return str(row.get("reason") or state)
    return None  # not finished: whoever holds it reports it
