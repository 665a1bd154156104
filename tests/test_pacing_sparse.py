"""The tenant pacer's storage writes for sparsely used tenants (issue 12) and
busy ones alone on a tenant (issue 19): one write per several sends, without
another instance losing its turn.
Real Table Storage (Azurite), injected clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from proactive.config import Settings
from proactive.delivering.pacing import BUSY_WINDOW, QUIET_BEFORE_RECOVERY, SPARSE_WINDOW
from tests.test_pacing import Clock, max_in_window, pacer


class CountingWrites:
    def __init__(self, table: Any) -> None:
        self.table, self.writes = table, 0

    def __getattr__(self, name: str) -> Any:
        if name in ("create_entity", "update_entity", "upsert_entity"):
            self.writes += 1
        return getattr(self.table, name)


@pytest.fixture
async def table(settings: Settings) -> AsyncIterator[CountingWrites]:
    from azure.data.tables.aio import TableServiceClient

    async with TableServiceClient.from_connection_string(settings.storage_connection) as svc:
        yield CountingWrites(await svc.create_table(settings.table_name("pacing")))


async def test_a_tenant_with_a_few_sends_a_second_costs_few_writes(
        table: CountingWrites) -> None:
    clock = Clock()
    p = pacer(table, clock, rate=50)
    sent = []
    for _ in range(60):  # 5 sends/s: one per 0.2 s reservation without the growth
        sent.append(await p.acquire("sparse"))
        clock.now += 0.2
    assert table.writes <= 60 * 0.3
    assert max_in_window(sent, 1.0) <= 50


async def test_a_busy_tenant_alone_reserves_longer_runs(table: CountingWrites) -> None:
    clock = Clock()
    p = pacer(table, clock, rate=50)
    sent = [await p.acquire("busy") for _ in range(500)]  # every slot used
    assert p._slots["busy"].window == BUSY_WINDOW
    # 500 sends in 0.4 s runs of 20 (after three growing ones): ~26 writes, not 50.
    assert table.writes <= 500 / (50 * BUSY_WINDOW) + 3
    assert max_in_window(sent, 1.0) <= 50


async def test_a_429_or_another_instance_shortens_a_busy_reservation(
        table: CountingWrites) -> None:
    clock = Clock()
    p, other = pacer(table, clock, rate=50), pacer(table, clock, rate=50)

    async def next_reservation(pacer: Any) -> None:
        for _ in range(len(pacer._slots["busy"].times) + 1):
            await pacer.acquire("busy")

    for _ in range(100):
        await p.acquire("busy")
    assert p._slots["busy"].window == BUSY_WINDOW
    await p.throttled("busy")
    await next_reservation(p)
    assert p._slots["busy"].window == p.batch_seconds  # the lowered rate sooner
    clock.now += QUIET_BEFORE_RECOVERY
    for _ in range(100):
        await p.acquire("busy")
    assert p._slots["busy"].window == BUSY_WINDOW  # grown again once 429s are quiet
    await other.acquire("busy")
    await next_reservation(p)
    assert p._slots["busy"].window == p.batch_seconds  # it saw the other


async def test_another_instance_waits_for_a_grown_reservation_and_shrinks_it(
        table: CountingWrites) -> None:
    clock = Clock()
    first, second = pacer(table, clock, rate=50), pacer(table, clock, rate=50)
    for _ in range(20):
        await first.acquire("t")
        clock.now += 0.2
    await first.acquire("t")  # a grown reservation now holds the budget
    assert first._slots["t"].window > first.batch_seconds
    before = clock()
    at = await second.acquire("t")  # waits, never deferred
    assert at - before <= SPARSE_WINDOW + 0.05
    assert second._slots["t"].window == second.batch_seconds  # it saw the other
    clock.now += 0.2
    await first.acquire("t")  # and the first sees the second: back to short
    assert first._slots["t"].window == first.batch_seconds
