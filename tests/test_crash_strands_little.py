"""A crash strands little (README "Exactly once, as far as Teams allows"):
the Functions host keeps a dead worker's queue messages invisible for ten
minutes, so a part of a many-user send keeps a standby copy that comes back
sooner, holds its users for a bounded time, and a claim a dead worker holds
is waited out rather than polled. Real Azurite, the Connector emulator.
"""

from __future__ import annotations

import contextvars
import json
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from proactive.errors import Busy
from proactive.receiving.activities import parse_activity
from proactive.runtime import Runtime
from proactive.storage import tables
from proactive.storage.deliveries import BUSY_WAIT, CALL_SHARE, Claim, DeliveryStore
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from tests.activities_data import TENANT, install
from tests.polling import eventually
from tests.sealed import app_made


def aad(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


async def install_users(rt: Runtime, url: str, count: int) -> list[str]:
    for i in range(count):
        await rt.references.record(parse_activity(install(
            service_url=url, aad=aad(i), conversation=f"a:conv-{i}")))
    return [aad(i) for i in range(count)]


def part(users: list[str], key: str = "k") -> str:
    """A part as the split queues it (sign it: `app_made`)."""
    return json.dumps({"version": 1, "op": "send", "key": key, "text": key, "part": True,
                       "to": {"users": users, "tenant": TENANT}})


async def visible(rt: Runtime) -> list[Any]:
    return [m async for m in rt.outbox.queue.receive_messages(
        messages_per_page=32, visibility_timeout=30, max_messages=32)]


async def run(rt: Runtime, messages: list[Any]) -> None:
    for m in messages:
        await process(rt, m.content, message_id=m.id)
        await rt.outbox.queue.delete_message(m)


class _Killed(BaseException):
    """The process dies: no `except Exception` of the product catches it."""


async def test_a_part_whose_worker_dies_comes_back_as_its_standby_copy(
        runtime: Runtime, emulator: ConnectorEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from proactive.delivering import broadcast as b

    monkeypatch.setattr(b, "STANDBY", 1.0)  # 60 s in production
    users = await install_users(runtime, emulator.url, 10)
    await runtime.campaigns.start("k")
    await runtime.campaigns.count("k", {"part:x:0": Counter(queued=10)})
    await runtime.campaigns.mark_split("k", "x")

    # The worker dies during its fourth call to Teams (carried out: the user
    # has it), with nothing after that running: not even a `finally`. Its
    # other users' tasks (in the same event loop here) die at their call too:
    # whatever they claimed stays held.
    real_send, withdraw = runtime.connector.send, runtime.outbox.withdraw
    calls = 0
    dead = contextvars.ContextVar("dead", default=False)

    async def dies_on_the_fourth(*args: Any, **kwargs: Any) -> str:
        nonlocal calls
        if not dead.get():
            return await real_send(*args)
        calls += 1
        if calls > 4:
            raise _Killed
        answer = await real_send(*args, **kwargs)
        if calls == 4:
            raise _Killed
        return answer

    async def never(standby: tuple[str, str]) -> None:
        if dead.get():
            raise _Killed
        await withdraw(standby)

    real_claim = runtime.deliveries.claim

    async def claim_unless_dead(*args: Any, **kwargs: Any) -> Any:
        if dead.get() and calls >= 4:
            raise _Killed
        return await real_claim(*args, **kwargs)

    runtime.connector.send = dies_on_the_fourth  # type: ignore[method-assign]
    runtime.outbox.withdraw = never  # type: ignore[method-assign]
    runtime.deliveries.claim = claim_unless_dead  # type: ignore[method-assign]
    dead.set(True)
    with pytest.raises(_Killed):
        # the host keeps it 600 s
        await process(runtime, await app_made(runtime, part(users)), message_id="held")
    dead.set(False)
    reached = emulator.counters["delivered"]
    assert 4 <= reached < 10

    # Its standby copy turns visible (1 s here) and a healthy worker runs it;
    # the dead worker's claims' lease (45 s) has run out meanwhile (the
    # store's clock moves on), and a takeover mark stands 1 s here (20 s).
    later = runtime.deliveries.lease + timedelta(seconds=1)
    runtime.deliveries.clock = lambda: tables.now_utc() + later
    runtime.deliveries.grace = timedelta(seconds=1)
    copies = await eventually(lambda: visible(runtime), what="the standby copy", timeout=10)
    assert [json.loads(m.content)["to"]["users"] for m in copies] == [users]
    await run(runtime, copies)
    # Every user the dead worker did not hold is delivered by the copy at
    # once; those it held are marked and handed back, each a part of one.
    rows = {row.recipient.removeprefix("user:"): row
            for row, _ in await runtime.deliveries.by_key("k")}
    held = {u for u, row in rows.items() if row.state == "sending"}
    assert held and all(rows[u].takeover_at for u in held)
    assert all(rows[u].state == "sent" for u in set(rows) - held)
    assert {d.conversation_id for d in emulator.deliveries} >= {
        f"a:conv-{users.index(u)}" for u in set(rows) - held}
    handed_back: set[str] = set()

    async def held_users_back() -> bool:
        for m in await visible(runtime):
            handed_back.update(json.loads(m.content)["to"]["users"])
            await run(runtime, [m])
        return held <= handed_back

    await eventually(held_users_back, what="the held users handed back", timeout=15)
    while more := await visible(runtime):
        await run(runtime, more)

    assert {d.conversation_id for d in emulator.deliveries} == {
        f"a:conv-{i}" for i in range(10)}
    progress = await runtime.campaigns.progress("k")
    assert progress is not None and progress.summary.state == "done"
    counts = progress.counts
    assert (counts["queued"], counts["sent"]) == (10, 10)
    # The users the dead worker had claimed: resent (one was surely carried out), and said so.
    assert 1 <= counts["ambiguous"] <= runtime.settings.max_calls_in_flight
    assert len(emulator.duplicates()) <= counts["ambiguous"]


async def test_a_part_holds_its_users_for_a_bounded_time_then_hands_the_rest_back(
        runtime: Runtime, emulator: ConnectorEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from proactive.delivering import broadcast as b

    monkeypatch.setattr(b, "PART_SECONDS", 0.0)  # 10 s in production
    users = await install_users(runtime, emulator.url, 5)
    emulator.configure(answer_seconds=0.1)
    await process(runtime, await app_made(runtime, part(users)), message_id="p")
    assert emulator.counters["delivered"] == 1  # the first always goes
    [rest] = await visible(runtime)
    assert json.loads(rest.content)["to"]["users"] == users[1:]
    assert "attempt" not in json.loads(rest.content)  # handing back uses up no attempt


async def test_a_claim_held_long_is_waited_out_not_polled(runtime: Runtime) -> None:
    now = tables.now_utc()
    store = DeliveryStore(runtime.deliveries.table, lease=timedelta(seconds=300),
                          clock=lambda: now)
    assert isinstance(await store.claim("k", "user:a"), Claim)
    with pytest.raises(Busy) as young:  # its holder is likely mid-call: look again soon
        await store.claim("k", "user:a")
    assert young.value.delay == 0
    store.clock = lambda: now + timedelta(seconds=BUSY_WAIT + 10)
    with pytest.raises(Busy) as old:  # likely dead: wait for the lease to end
        await store.claim("k", "user:a")
    assert 250 <= old.value.delay <= 300 - BUSY_WAIT


def _stores(runtime: Runtime, now: list[Any]) -> tuple[DeliveryStore, DeliveryStore]:
    """Two workers' stores on one table and one clock (`now[0]`), 45 s leases."""
    holder, other = (DeliveryStore(runtime.deliveries.table, clock=lambda: now[0])
                     for _ in range(2))
    return holder, other


async def test_a_lapsed_claim_is_marked_then_taken_over_after_the_grace(
        runtime: Runtime) -> None:
    now = [tables.now_utc()]
    holder, other = _stores(runtime, now)
    assert isinstance(await holder.claim("k", "user:a"), Claim)  # then its worker dies
    now[0] += holder.lease + timedelta(seconds=1)
    with pytest.raises(Busy) as marked:  # the first look only marks it
        await other.claim("k", "user:a")
    assert marked.value.delay == pytest.approx(other.grace.total_seconds() + 1)
    now[0] += other.grace / 2
    with pytest.raises(Busy):
        await other.claim("k", "user:a")
    now[0] += other.grace / 2 + timedelta(seconds=1)
    taken = await other.claim("k", "user:a")
    assert isinstance(taken, Claim) and taken.entity["ambiguous"]
    assert taken.entity["unknownCause"] == "lease-expired"
    assert "takeoverAt" not in taken.entity
    # Well under the old 300 s lease: 45 s + 20 s.
    assert holder.lease + other.grace < timedelta(seconds=70)


async def test_a_live_holder_held_up_by_an_outage_writes_over_the_mark(
        runtime: Runtime) -> None:
    now = [tables.now_utc()]
    holder, other = _stores(runtime, now)
    claim = await holder.claim("k", "user:a")
    assert isinstance(claim, Claim)
    # Teams answered; storage was down for 66 s, longer than the lease. Once
    # it answers again another worker looks first and marks the row...
    now[0] += timedelta(seconds=66)
    with pytest.raises(Busy):
        await other.claim("k", "user:a")
    # ... and the holder's next try writes its answer over the mark.
    await holder.finish(claim, "sent", activityId="1:a")
    now[0] += other.grace + timedelta(seconds=1)
    row = await other.claim("k", "user:a")
    assert not isinstance(row, Claim)  # no second copy
    assert row.state == "sent" and not row.extra.get("ambiguous") and row.takeover_at is None


async def test_a_live_holder_gives_its_claim_back_over_the_mark(runtime: Runtime) -> None:
    now = [tables.now_utc()]
    holder, other = _stores(runtime, now)
    claim = await holder.claim("k", "user:a")
    assert isinstance(claim, Claim)
    now[0] += holder.lease + timedelta(seconds=1)
    with pytest.raises(Busy):
        await other.claim("k", "user:a")
    await holder.release(claim, reason="storage-unavailable")
    row, _ = await tables.read(runtime.deliveries.table, tables.safe_key("k"),
                               tables.safe_key("user:a")) or ({}, "")
    assert row["state"] == "retrying" and "takeoverAt" not in row
    taken = await other.claim("k", "user:a")  # at once, and nothing was sent: not ambiguous
    assert isinstance(taken, Claim) and not taken.entity.get("ambiguous")


async def test_a_holder_starts_no_call_late_in_its_lease(runtime: Runtime) -> None:
    now = [tables.now_utc()]
    holder, _ = _stores(runtime, now)
    claim = await holder.claim("k", "user:a")
    assert isinstance(claim, Claim) and not holder.too_late_to_call(claim)
    now[0] += holder.lease * CALL_SHARE + timedelta(seconds=1)
    assert holder.too_late_to_call(claim)


async def test_a_slow_part_pushes_its_standby_copy_out_and_takes_it_back(
        runtime: Runtime, emulator: ConnectorEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A part held up (slow storage, a long pacing wait) outlives STANDBY: its
    standby copy is pushed out while the part is alive, so it never runs
    beside it, and is taken back when the part ends."""
    import asyncio

    from proactive.delivering import broadcast as b

    monkeypatch.setattr(b, "STANDBY", 1.0)  # 60 s in production
    users = await install_users(runtime, emulator.url, 3)
    await runtime.campaigns.start("k")
    await runtime.campaigns.count("k", {"part:x:0": Counter(queued=3)})
    await runtime.campaigns.mark_split("k", "x")
    answer = asyncio.Event()
    real_send, real_postpone = runtime.connector.send, runtime.outbox.postpone
    postponed: list[tuple[str, str]] = []

    async def slow(*args: Any, **kwargs: Any) -> str:
        await answer.wait()
        return await real_send(*args, **kwargs)

    async def counted(*args: Any, **kwargs: Any) -> tuple[str, str]:
        postponed.append(await real_postpone(*args, **kwargs))
        return postponed[-1]

    runtime.connector.send = slow  # type: ignore[method-assign]
    runtime.outbox.postpone = counted  # type: ignore[method-assign]
    running = asyncio.create_task(
        process(runtime, await app_made(runtime, part(users)), message_id="slow"))
    peeked: list[Any] = []

    async def pushed_out_three_times() -> bool:
        peeked.extend(await runtime.outbox.queue.peek_messages(max_messages=32))
        return len(postponed) >= 3

    # 1.5 x STANDBY at least: unpushed, the copy would have turned visible.
    await eventually(pushed_out_three_times, what="the standby copy pushed out", timeout=10)
    assert peeked == []
    answer.set()
    await running
    assert emulator.counters["delivered"] == 3
    properties = await runtime.outbox.queue.get_queue_properties()
    assert properties.approximate_message_count == 0  # the copy was taken back


async def test_withdrawing_a_standby_copy_another_worker_took_is_fine(runtime: Runtime) -> None:
    """The copy turned visible and another worker dequeued it (a new pop
    receipt): the part's own withdraw must not fail the part, which would
    send the host's copy of it round again."""
    from proactive.contract.parse import parse_message

    message = parse_message(part([aad(0)]))
    copy = await runtime.outbox.standby(message, delay=1)
    taken = await eventually(lambda: visible(runtime), what="the copy visible", timeout=10)
    assert [m.id for m in taken] == [copy[0]]
    await runtime.outbox.withdraw(copy)  # the stale pop receipt: no error
