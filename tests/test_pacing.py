"""Rate pacing: the per-tenant budget shared through Table Storage (Azurite)
and the per-conversation windows, driven by an injected clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from proactive.config import Settings
from proactive.delivering.conversation_pacing import ConversationPacer
from proactive.delivering.pacing import Defer, TenantPacer
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
    assert 2.0 < deferred.value.delay <= 5 * 1.04 * 1.001 + 0.01  # 5 slots of 1.04 s


async def test_429s_lower_the_shared_rate_and_it_recovers_quickly(table: object) -> None:
    clock = Clock(1_000_000.0)
    a, b = pacer(table, clock, rate=50), pacer(table, clock, rate=50)
    await a.acquire("t1")
    # Multiplicative decrease, a little per 429, seen by every instance.
    assert await a.throttled("t1") == pytest.approx(48.5)
    assert await b.throttled("t1") == pytest.approx(47.045)
    assert await b.current_rate("t1") == pytest.approx(47.045)
    for _ in range(10):  # more 429s: each one costs a little more
        await a.throttled("t1")
    lowered = 47.045 * 0.97 ** 10
    assert await b.current_rate("t1") == pytest.approx(lowered)
    clock.now += 0.9  # still inside the quiet period (1 s)
    assert await a.current_rate("t1") == pytest.approx(lowered)
    clock.now += 0.2  # 0.1 s past the quiet period: + 30 % of the ceiling per second
    assert await a.current_rate("t1") == pytest.approx(lowered + 1.5)
    clock.now += 1.0
    assert await a.current_rate("t1") == 50
    assert await a.current_rate("other-tenant") == 50


async def test_a_storm_bottoms_out_at_the_floor_and_recovers_within_seconds(
        table: object) -> None:
    clock = Clock(1_000_000.0)
    p = pacer(table, clock, rate=50)
    for _ in range(100):  # every call answered 429 for a couple of seconds
        await p.throttled("t1")
        clock.now += 0.02
    assert await p.current_rate("t1") == pytest.approx(10.0)  # the floor: 20 % of 50
    clock.now += 0.98 + 40 / 15  # the rest of the quiet period, then 15/s per second
    assert await p.current_rate("t1") == pytest.approx(50.0)


async def test_a_few_scattered_429s_keep_most_of_the_rate(table: object) -> None:
    """1.5 % of calls answered 429 (not our rate's doing): the tenant keeps
    most of its slots instead of sliding to the floor."""
    clock = Clock(1_000_000.0)
    p = pacer(table, clock, rate=50)
    sent = 0
    start = clock()
    while clock() - start < 60:
        await p.acquire("t1")
        sent += 1
        if sent % 67 == 0:
            await p.throttled("t1")
    assert sent / (clock() - start) > 0.8 * 48


async def test_the_lowered_rate_spaces_sends_further(table: object) -> None:
    clock = Clock(START)
    p = pacer(table, clock, rate=50)
    for _ in range(60):
        await p.throttled("t1")  # 50 * 0.97^60: the floor, 10/s
    sent = []
    for _ in range(5):  # inside the quiet period: at the lowered rate
        await p.acquire("t1")
        sent.append(clock())
    assert sent[-1] - sent[0] >= 4 / 9.8


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


async def test_a_held_conversation_waits_for_its_retry_after_and_only_it() -> None:
    clock = Clock(1_000_000.0)
    p = ConversationPacer(clock=clock, sleep=clock.sleep, max_wait=2.0)
    p.hold("a:conv-1", 3.0)  # Teams: 429, Retry-After 3
    with pytest.raises(Defer) as deferred:
        await p.acquire("a:conv-1")
    assert deferred.value.delay == pytest.approx(3.0)
    await p.acquire("a:conv-2")  # another conversation is not held up
    assert clock() == 1_000_000.0
    clock.now += 1.5
    await p.acquire("a:conv-1")  # 1.5 s left: waited for, inside max_wait
    assert clock() == pytest.approx(1_000_003.0)


async def test_conversation_memory_is_bounded() -> None:
    clock = Clock(1_000_000.0)
    p = ConversationPacer(clock=clock, sleep=clock.sleep, size=100)
    for i in range(1000):  # a broadcast: each conversation once
        await p.acquire(f"a:conv-{i}")
        p.hold(f"a:conv-{i}", 1.0)
    assert len(p._sent) == 100 and len(p._held) == 100
    assert "a:conv-999" in p._sent  # the most recent are the ones kept


@pytest.mark.parametrize("rate", [10, 20])
async def test_a_scaled_limit_is_held_exactly_at_the_emulator(table: object, rate: int) -> None:
    """Sends leave on their slots, some of them late (by LATE, plus a trip to
    Teams), and the emulator, limiting the tenant to `rate` requests in any
    sliding second on the same virtual clock, answers none of them 429."""
    import aiohttp

    from proactive.delivering.pacing import LATE
    from proactive_devtools.emulator import ConnectorEmulator

    clock = Clock(1_000_000.0)
    p = pacer(table, clock, rate=rate)
    async with ConnectorEmulator(rate_limits=True, tenant_rps=rate, clock=clock) as emu, \
            aiohttp.ClientSession() as session:
        for i in range(6 * rate):
            at = await p.acquire("t1")
            # Every other rate-th send arrives late, the rest on time: the worst
            # case for the sliding second ending at the on-time send `rate` later.
            clock.now = max(clock.now, at + (LATE + 0.01 if i % (2 * rate) == 0 else 0.0))
            await p.spaced("t1")  # where `call` asks, just before the request
            async with session.post(f"{emu.url}v3/conversations/a:c{i}/activities",
                                    json={"type": "message", "text": "hi"},
                                    headers={"X-Emulator-Tenant": "t1"}) as answer:
                assert answer.status == 201, f"send {i} answered {answer.status}"
        assert emu.status_counts.get(429, 0) == 0
        assert emu.counters["delivered"] == 6 * rate


@pytest.mark.parametrize("rate", [10, 20])
async def test_requests_that_leave_very_late_still_stay_under_the_limit(
        table: object, rate: int) -> None:
    """Some sends leave long after their slots (a busy event loop between the
    slot and the request: 60 ms, over the allowance). Just before each
    request the pacer holds it until the one `rate` places back is over a
    second old: the emulator, on the same virtual clock, answers no 429."""
    import aiohttp

    from proactive_devtools.emulator import ConnectorEmulator

    clock = Clock(1_000_000.0)
    p = pacer(table, clock, rate=rate)
    async with ConnectorEmulator(rate_limits=True, tenant_rps=rate, clock=clock) as emu, \
            aiohttp.ClientSession() as session:
        for i in range(6 * rate):
            at = await p.acquire("t1")
            clock.now = max(clock.now, at + (0.06 if i % (2 * rate) == 0 else 0.0))
            await p.spaced("t1")
            async with session.post(f"{emu.url}v3/conversations/a:c{i}/activities",
                                    json={"type": "message", "text": "hi"},
                                    headers={"X-Emulator-Tenant": "t1"}) as answer:
                assert answer.status == 201, f"send {i} answered {answer.status}"
