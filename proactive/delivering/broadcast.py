"""One send to many users: split into parts, deliver each part, count.

A message addressed to `{"users": [...]}` or `{"allUsers": true}` is split
into part messages of at most PART users (same key, same content), put on the
outbox queue. Listing a tenant's users pages through its index in the
references table (storage/user_index.py), so no audience is held in memory
whole, and a part reads its users' references in one query. Each part delivers to its users a few at
a time (paced per tenant like every send), each user through the same claimed,
exactly-once path as a single send; a user whose send must be retried goes
back on the queue as a part of one. Every result adds to the key's counters,
each person once (storage/progress.py): a user is named `user:<object id>` or
`upn:<principal name>`, lower case, in the queued count and in the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING

from proactive.contract import Content, OutboxMessage, Target, TargetKind
from proactive.delivering import audiences
from proactive.delivering.outcomes import Action, Outcome, outcome_of
from proactive.delivering.preinstall import install_one
from proactive.delivering.requeue import retry_later
from proactive.delivering.send import finish_unsent, send_one
from proactive.delivering.unlisted import WHY, digest, digest_of, unlisted, unreadable
from proactive.errors import (
    Permanent,
    Reason,
    RetryLater,
    StorageError,
    StorageUnavailable,
    Transient,
)
from proactive.storage import tables
from proactive.storage.counting import result_counts
from proactive.storage.send_index import SendIndexRow, SendState
from proactive.storage.shards import PER_TRANSACTION
from proactive.storage.states import DeliveryState

if TYPE_CHECKING:
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)

PART = 25
CONCURRENCY = 8
# A worker that dies strands the queue messages it holds for the Functions
# host's fixed ten-minute lease (README "Exactly once, as far as Teams
# allows"). So a part starts no user after PART_SECONDS (the rest go back on
# the queue at once, as a smaller part), and keeps a standby copy of itself
# that turns visible STANDBY seconds after the part was last seen alive unless
# it finishes first: after a crash its users are picked up within STANDBY, not
# 600 s (`_standby`).
PART_SECONDS = 10.0
STANDBY = 60.0


async def run(rt: Runtime, message: OutboxMessage) -> Outcome:
    assert message.target is not None
    target = message.target
    content = message.content or Content()
    listed = SendIndexRow(key=message.key, created_at="", topic=content.topic,
                          text=content.text or content.summary, audience=target.kind)
    summary, new = await rt.campaigns.start(message.key, expected=message.part, listed=listed)
    if message.part and target.kind == TargetKind.USERS and len(target.users) <= PART:
        refused = (summary.detail or "refused") \
            if summary.reason == Reason.GRAPH_PERMISSION else ""
        async with _standby(rt, message):
            cancelled = summary.state == SendState.CANCELLED
            return await _deliver_part(rt, message, cancelled=cancelled, graph_refused=refused)
    # Several messages may share a key (an audience too big for one message):
    # each audience is split once, however often its message is delivered (a
    # key new with this message has split nothing yet).
    audience = digest(target)
    again = False
    if not new:
        # Sent again after Graph refused the app (the permission is granted
        # now): split again, and the users it failed are tried again.
        again = summary.reason == Reason.GRAPH_PERMISSION and not message.part
        if not again and await rt.campaigns.was_split(message.key, audience):
            return Outcome(Action.DONE, Reason.DUPLICATE)
        if (summary.finished_at or again) and not target.continuation:
            # Another message of a send that had finished: it runs again.
            await rt.campaigns.reopen(message.key,
                                      again=Reason.GRAPH_PERMISSION if again else "")
    if target.kind in (TargetKind.TEAM_MEMBERS, TargetKind.GROUP):
        return await _split_page(rt, message, audience)
    # A split that stopped part-way (storage failed under a split of
    # minutes) goes on after its last count, not from its first user: only
    # the parts queued since that count are queued again.
    after = "" if new or again else await rt.campaigns.resumes_after(message.key, audience)
    queued, uncounted, position = 0, {}, after
    async for users, position in _audience(rt, target, after):
        await rt.outbox.put(message.for_users(users).retry(attempt=1))
        queued += len(users)
        # Each person once, even if a crash makes the split run again or
        # another message of the key names them too; all before `mark_split`
        # (the send can't turn done before that). Whole parts a count, in one
        # transaction with the position after its last part.
        uncounted.update(queued_entries(users))
        if len(uncounted) + PART > PER_TRANSACTION - 1:
            await rt.campaigns.count(message.key, uncounted, resume=(audience, position))
            uncounted = {}
    if uncounted:
        await rt.campaigns.count(message.key, uncounted, resume=(audience, position))
    await rt.campaigns.mark_split(message.key, audience)
    if queued == 0 and not after and target.kind == TargetKind.ALL_USERS:
        tenant = target.tenant or rt.settings.app_tenant_id
        await rt.campaigns.finish_empty(message.key, "no-recipients",
                                        f"no user of tenant {tenant!r} has a stored personal "
                                        "chat with the bot (nobody installed the app)")
        log.warning("send %s: no user of tenant %r to send to", message.key, tenant)
        return Outcome(Action.DONE, "no-recipients")
    await rt.campaigns.settle(message.key)  # every part may be done already
    log.info("send %s split for %d users%s", message.key, queued,
             f" (resumed after {after})" if after else "")
    return Outcome(Action.DONE, "split")


def name_of(user: str) -> str:
    """A listed user's name in the counters: by principal name or object id."""
    return f"upn:{user.lower()}" if "@" in user else f"user:{user.lower()}"


def queued_entries(users: list[str]) -> dict[str, Counter[str]]:
    return {f"queued:{name_of(user)}": Counter(queued=1) for user in users}


async def _split_page(rt: Runtime, message: OutboxMessage, audience: str) -> Outcome:
    """One page of a paged audience: its users in parts, the next page as a
    message of its own (so no audience is ever held whole), and who can't be
    reached counted with the reason (each with a delivery row, so the report
    names them). The key can't turn done while a page is still to be split:
    `pages` counts the pages announced and not split yet."""
    assert message.target is not None
    target = message.target
    root = digest(replace(target, continuation=""))
    counts: dict[str, Counter[str]] = {}
    try:
        found = await audiences.page(rt, target)
    except Permanent as exc:  # no such team or group, or the listing refused
        await unreadable(rt, message, exc.reason, exc.detail)
        return Outcome(Action.FAILED, exc.reason)
    for name, reason in found.unreachable.items():
        await unlisted(rt, message.key, name, reason, WHY.get(reason, reason))
        counts[f"queued:{name}"] = Counter(queued=1)
        counts[name] = result_counts(reason)
    for listed, guests in ((found.users, False), (found.guests, True)):
        for start in range(0, len(listed), PART):
            users = listed[start:start + PART]
            await rt.outbox.put(message.for_users(users, found.tenant, guests=guests)
                                .retry(attempt=1))
            counts.update(queued_entries(users))
    if found.continuation:  # announced before it is put: the key waits for it
        counts[f"next:{root}:{digest_of(found.continuation)}"] = Counter(pages=1)
    if target.continuation:  # last, after this page's users: this page is split
        counts[f"page:{root}:{digest_of(target.continuation)}"] = Counter(pages=-1)
    await rt.campaigns.count(message.key, counts)
    if found.continuation:
        await rt.outbox.put(message.next_page(found.continuation))
    await rt.campaigns.mark_split(message.key, audience)
    await rt.campaigns.settle(message.key)  # every part may be done already
    log.info("send %s: a page of %d users split", message.key, len(found.users))
    return Outcome(Action.DONE, "split")


@contextlib.asynccontextmanager
async def _standby(rt: Runtime, message: OutboxMessage) -> AsyncIterator[None]:
    """A standby copy of the part for as long as it runs: turning visible
    STANDBY s out, pushed out again every STANDBY / 2 s while the part is
    alive (a part held up by slow storage is not run twice), and taken back
    when it ends (or fails, and the host retries it). A copy that can't be
    pushed out or taken back (storage down) runs later and finds its users
    done: harmless."""
    copy = await rt.outbox.standby(message, delay=STANDBY)
    ended = asyncio.Event()

    async def keep() -> None:
        nonlocal copy
        while True:
            try:
                await asyncio.wait_for(ended.wait(), timeout=STANDBY / 2)
                return
            except TimeoutError:
                pass
            try:
                copy = await rt.outbox.postpone(copy, delay=STANDBY)
            except StorageUnavailable:
                continue  # tried again in STANDBY / 2
            except StorageError as exc:  # gone: it ran (a pop receipt of its own), or was taken
                log.warning("a part's standby copy could not be pushed out: %s %s",
                            exc.status, exc.code)
                return

    keeper = asyncio.create_task(keep())
    try:
        yield
    finally:
        ended.set()
        await keeper  # an update under way finishes: its pop receipt takes the copy back
        try:
            await rt.outbox.withdraw(copy)
        except StorageUnavailable as exc:
            log.warning("a part's standby copy was not withdrawn: %s", type(exc).__name__)


async def _numbered(parts: AsyncIterator[list[str]]) -> AsyncIterator[tuple[int, list[str]]]:
    index = 0
    async for part in parts:
        yield index, part
        index += 1


async def _audience(rt: Runtime, target: Target, after: str
                    ) -> AsyncIterator[tuple[list[str], str]]:
    """The users after `after` in parts of at most PART, without listing them
    all at once; each with the position after it (a list's: how many users
    of it; a tenant's: its last user's AAD id)."""
    if target.kind == TargetKind.USERS:
        for start in range(int(after or 0), len(target.users), PART):
            part = list(target.users[start:start + PART])
            yield part, str(start + len(part))
        return
    tenant = target.tenant or rt.settings.app_tenant_id
    batch: list[str] = []
    async for user in rt.references.users_of_tenant(tenant, after):
        batch.append(user)
        if len(batch) == PART:
            yield batch, user
            batch = []
    if batch:
        yield batch, batch[-1]


async def _deliver_part(rt: Runtime, message: OutboxMessage, *, cancelled: bool,
                        graph_refused: str = "") -> Outcome:
    from proactive.delivering import install

    # Graph refused the app for this send (here or in an earlier part): no
    # install is asked again; the users who need one fail with that reason.
    refusal = {"detail": graph_refused}
    token = install.REFUSED.set(refusal)
    try:
        return await _deliver_users(rt, message, cancelled, refusal, graph_refused)
    finally:
        install.REFUSED.reset(token)


async def _deliver_users(rt: Runtime, message: OutboxMessage, cancelled: bool,
                         refusal: dict[str, str], graph_refused: str) -> Outcome:
    assert message.target is not None
    content, tenant, guests = message.content, message.target.tenant, message.target.guests
    gate = asyncio.Semaphore(CONCURRENCY)
    results: dict[str, Counter[str]] = {}  # name -> what it adds to the counters
    people: dict[str, str] = {}  # name -> the recipient it was delivered as
    # Users put off because the tenant's budget is spent, and for how long. Once
    # one is, the rest of the part is not even tried: they go back together.
    paced: list[str] = []
    paced_delay: list[float] = []

    first, *rest = message.target.users
    started = time.monotonic()

    async def one(user: str) -> None:
        target = Target(TargetKind.USER, user, tenant=tenant)
        name = name_of(user)
        async with gate:
            if paced_delay:
                paced.append(user)
                return
            guest = guests
            if user != first and time.monotonic() - started > PART_SECONDS:
                # Held long enough: the rest go back (the first always goes: progress).
                paced.append(user)
                paced_delay.append(0.0)
                return
            if "@" in user and not cancelled:  # a user principal name: its AAD id
                try:
                    target, guest = await _resolved(rt, message.key, target)
                except RetryLater as exc:  # the tenant's Graph budget is spent
                    paced.append(user)
                    paced_delay.append(exc.delay)
                    return
                except Transient as exc:  # throttled (Retry-After) or unavailable
                    await retry_later(rt, message.for_users([user]),
                                      outcome_of(exc, message.attempt), message_id="",
                                      target=target)
                    return
                if target.kind != TargetKind.USER:  # no such user, or Graph refused: recorded
                    results[name] = result_counts(target.reply_to)
                    people[name] = target.recipient
                    return
            if cancelled:
                outcome = await finish_unsent(rt, message.key, target,
                                              DeliveryState.CANCELLED, Reason.CANCELLED)
            elif content is None:  # op install: the app for the user, nothing sent
                outcome = await install_one(rt, message.key, target)
            else:
                outcome = await send_one(rt, message.key, target, content,
                                         sent_reason=Reason.GUEST if guest else "")
            if outcome.state == Action.RETRY and outcome.reason == Reason.PACED:
                paced.append(user)
                paced_delay.append(outcome.delay)
                return
            if outcome.state == Action.RETRY:
                outcome = await retry_later(rt, message.for_users([user]), outcome,
                                            message_id="", target=target)
                if outcome.state == Action.RETRY:
                    return  # counted when it comes back
            if outcome.reason == Reason.DUPLICATE:
                # Finished earlier: by this part before its worker died, by
                # another copy, or by an earlier message under the key.
                # Counting it again is harmless (each recipient counts once);
                # not counting it would lose a dead worker's results.
                counts = await _recorded_result(rt, message.key, target)
            else:
                counts = result_counts(outcome.reason, ambiguous=outcome.ambiguous)
            if counts is not None:
                if counts.get(Reason.SENT) and guest:  # sent, and said to be a guest
                    counts += Counter(sent_guest=1)
                results[name] = counts
                people[name] = target.recipient

    # The part's references, read together and held while it runs (not per
    # recipient in a cache that grows with the audience).
    sending = content is not None and not cancelled and bool(tenant)
    async with rt.references.part(tenant if sending else "", message.target.users):
        await one(first)  # alone: if the budget is spent, the rest are not even claimed
        await asyncio.gather(*(one(user) for user in rest))
    if paced:
        # Not a failure: the same part, smaller, when the budget frees up.
        await rt.outbox.put(message.for_users(paced), delay=min(paced_delay))
    if refusal["detail"] and not graph_refused:  # the first part to meet it: said once
        log.warning("send %s: Graph refused the app; no more installs for it",
                    message.key)
        await rt.campaigns.refuse(message.key, Reason.GRAPH_PERMISSION, refusal["detail"])
    await rt.campaigns.count(message.key, results, people)
    await rt.campaigns.settle(message.key)  # the last part counted makes it final
    return Outcome(Action.DONE, "part")


async def _resolved(rt: Runtime, key: str, target: Target) -> tuple[Target, bool]:
    """The user named by principal name, by AAD id, and whether a guest; or,
    when there is no such user or the account is disabled, their delivery
    recorded (returned as a `upn:` target whose reply_to says why)."""
    from proactive.delivering.install import directory_user

    missing = Target(TargetKind.CONVERSATION, f"upn:{target.id.lower()}", tenant=target.tenant)
    try:
        found = await directory_user(rt, target.tenant or rt.settings.app_tenant_id,
                                     target.id)
    except Permanent as exc:  # e.g. 403: Graph permission not granted
        await finish_unsent(rt, key, missing, DeliveryState.FAILED, exc.reason,
                            detail=exc.detail)
        return replace(missing, reply_to=exc.reason), False
    if found is not None and not found.enabled:
        await finish_unsent(rt, key, missing, DeliveryState.SKIPPED, Reason.DISABLED_ACCOUNT,
                            detail=WHY[Reason.DISABLED_ACCOUNT], aadObjectId=found.id)
        return replace(missing, reply_to=Reason.DISABLED_ACCOUNT), False
    if found is not None:
        return Target(TargetKind.USER, found.id, tenant=target.tenant), found.guest
    await finish_unsent(rt, key, missing, DeliveryState.FAILED, Reason.NOT_FOUND,
                        detail="Graph knows no user by this principal name")
    return replace(missing, reply_to=Reason.NOT_FOUND), False


async def _recorded_result(rt: Runtime, key: str, target: Target) -> Counter[str] | None:
    """What a finished delivery row counts as."""
    found = await tables.read(rt.deliveries.table, tables.safe_key(key),
                              tables.safe_key(target.recipient))
    if found is None:
        return None
    row = found[0]
    state, ambiguous = row.get("state"), bool(row.get("ambiguous"))
    if state in (DeliveryState.SENT, DeliveryState.DELETED):
        return result_counts(Reason.SENT, ambiguous=ambiguous)
    if state in (DeliveryState.FAILED, DeliveryState.CANCELLED, DeliveryState.SKIPPED,
                 DeliveryState.INSTALLED, DeliveryState.UNKNOWN):
        return result_counts(str(row.get("reason") or state), ambiguous=ambiguous)
    return None  # not finished: whoever holds it reports it
