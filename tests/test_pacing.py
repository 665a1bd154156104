"""Rate pacing: the per-tenant budget shared through Table Storage (Azurite)
and the per-conversation windows, driven by an injected clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from proactive.config import Settings
from proactive.delivering.pacing import ConversationPacer, Defer, TenantPacer
from tests.clock import Clock

START = 1_000_000.0  # the pacers' clock at the start of each test


@pytest.fixture
async def table(settings: Settings) -> AsyncIterator[object]:
    from azure.data.tables.aio import TableServiceClient

    async with TableServiceClient.from_connection_string(settings.storage_connection) as svc:
        yield await svc.create_table(settings.table_name("pacing"))


def pacer(table: object, clock: Clock, **kw: float) -> TenantPacer:
    return TenantPacer(table, clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


def max_in_window(times: list[float], span: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - span:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_one_process_sends_at_the_tenant_rate(table: object) -> None:
    clock = Clock(START)
    p = pacer(table, clock, rate=50)
    sent = []
    for _ in range(200):
        await p.acquire("t1")
        sent.append(clock())
    assert max_in_window(sent, 1.0) <= 50
    elapsed = sent[-1] - sent[0]
    assert 199 / 50 - 0.05 <= elapsed <= 199 / 50 + 0.3  # at the rate, not below it


async def test_two_processes_together_stay_under_one_tenant_limit(table: object) -> None:
    clock = Clock(START)
    a, b = pacer(table, clock, rate=50), pacer(table, clock, rate=50)
    slots, sent = [], []
    for i in range(400):  # in turns, as two instances would run
        slots.append(await (a if (i // 7) % 2 else b).acquire("t1"))
        sent.append(clock())
    # The slots handed out to both instances never exceed the rate, and a
    # send goes out on its slot or only a little late, never early.
    assert max_in_window(slots, 1.0) <= 50
    assert all(0 <= s - slot <= 0.05 for s, slot in zip(sent, slots, strict=True))
    # Budget is not thrown away wholesale: well over half the rate is used.
    assert 400 / (sent[-1] - sent[0]) > 30


async def test_tenants_do_not_share_a_budget(table: object) -> None:
    clock = Clock(START)
    p = pacer(table, clock, rate=10, batch_seconds=1.0)
    for _ in range(10):
        await p.acquire("t1")
    t1_done = clock()
    await p.acquire("t2")  # t2's first slot is now, not after t1's
    assert clock() == t1_done


async def test_a_spent_budget_defers_instead_of_waiting_long(table: object) -> None:
    clock = Clock(START)
    busy, other = pacer(table, clock, rate=1, batch_seconds=5.0), pacer(table, clock, rate=1)
    await busy.acquire("t1")  # reserves 5 s of t1's budget
    with pytest.raises(Defer) as deferred:
        await other.acquire("t1")
    assert 2.0 < deferred.value.delay <= 5.01


async def test_429s_lower_the_shared_rate_and_it_recovers_slowly(table: object) -> None:
    clock = Clock(START)
    a, b = pacer(table, clock, rate=50), pacer(table, clock, rate=50)
    await a.acquire("t1")
    assert await a.throttled("t1") == pytest.approx(35.0)
    assert await b.throttled("t1") == pytest.approx(24.5)
    assert await b.current_rate("t1") == pytest.approx(24.5)  # seen by every instance
    clock.now += 5.0  # still inside the quiet period
    assert await a.current_rate("t1") == pytest.approx(24.5)
    clock.now += 15.0  # 10 s past the quiet period: +0.5/s
    assert await a.current_rate("t1") == pytest.approx(29.5)
    clock.now += 600
    assert await a.current_rate("t1") == 50
    assert await a.current_rate("other-tenant") == 50


async def test_the_lowered_rate_spaces_sends_further(table: object) -> None:
    clock = Clock(START)
    p = pacer(table, clock, rate=50)
    for _ in range(5):
        await p.throttled("t1")  # 50 * 0.7^5 ≈ 8.4/s
    sent = []
    for _ in range(20):
        await p.acquire("t1")
        sent.append(clock())
    assert max_in_window(sent, 1.0) <= 9


async def test_conversation_windows() -> None:
    clock = Clock(START)
    p = ConversationPacer(clock=clock, sleep=clock.sleep, max_wait=60)
    sent = []
    for _ in range(70):
        await p.acquire("19:chat@thread.v2")
        sent.append(clock())
    assert max_in_window(sent, 1.0) <= 7
    assert max_in_window(sent, 2.0) <= 8
    assert max_in_window(sent, 30.0) <= 60


async def test_thread_replies_count_against_their_channel() -> None:
    clock = Clock(START)
    p = ConversationPacer(clock=clock, sleep=clock.sleep)
    for _ in range(7):
        await p.acquire("19:chat@thread.v2")
    assert clock() == 1_000_000.0
    await p.acquire("19:chat@thread.v2;messageid=5")
    assert clock() > 1_000_000.0
    # Another conversation is not held up.
    now = clock()
    await p.acquire("a:other")
    assert clock() == now


async def test_conversation_wait_beyond_max_wait_defers() -> None:
    clock = Clock(START)
    p = ConversationPacer(clock=clock, sleep=clock.sleep, max_wait=0.5)
    for _ in range(7):
        await p.acquire("c")
    with pytest.raises(Defer):
        for _ in range(60):
            await p.acquire("c")
