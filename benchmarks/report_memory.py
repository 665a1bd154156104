"""Memory of a send report: does `python -m proactive report` stay bounded?

Seeds N delivery rows under one key in Azurite (default 10,000, each shaped
like a real `sent` row), then streams the report (CSV and JSON Lines) through
`proactive.reporting.reports.send_report` to /dev/null while a sampler reads
this process's resident set size (/proc/self/statm) every 5 ms. The figure is
the peak RSS growth over the RSS just before streaming (after a warm-up report
of 1,000 rows, so imports and the storage client's first page are already
paid). For contrast it then loads every row into a list, as a report that is
not streamed would, and measures the same. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.report_memory [--rows 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

from benchmarks._common import figure, header, note
from proactive.config import Settings
from proactive.runtime import DELIVERIES_TABLE
from proactive_devtools.processes import start_azurite, stop_process

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


async def peak_growth(work: Callable[[], Awaitable[object]]) -> tuple[int, float]:
    """(peak RSS growth in bytes while `work` runs, seconds it took)."""
    base, peak, done = rss(), rss(), False

    async def sample() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, rss())
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    start = time.perf_counter()
    try:
        await work()
    finally:
        elapsed = time.perf_counter() - start
        done = True
        await sampler
    return max(peak, rss()) - base, elapsed


async def seed(settings: Settings, key: str, rows: int) -> None:
    from azure.data.tables.aio import TableClient

    from proactive.storage.tables import iso, safe_key

    name = settings.table_name(DELIVERIES_TABLE)
    async with TableClient.from_connection_string(settings.storage_connection, name) as table:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            await table.create_table()
        now = iso()
        batch: list[tuple[str, dict[str, object]]] = []
        for i in range(rows):
            recipient = f"user:{uuid.UUID(int=i)}"
            batch.append(("create", {
                "PartitionKey": safe_key(key), "RowKey": safe_key(recipient), "key": key,
                "recipient": recipient, "state": "sent", "attempts": 1, "claimId": uuid.uuid4().hex,
                "createdAt": now, "updatedAt": now, "sentAt": now, "leaseUntil": "",
                "activityId": f"1:{uuid.uuid4().hex}", "tenantId": str(uuid.UUID(int=7)),
                "conversationId": f"a:1{uuid.uuid4().hex}{uuid.uuid4().hex}",
                "serviceUrl": "https://smba.trafficmanager.net/emea/"}))
            if len(batch) == 100:
                await table.submit_transaction(batch)
                batch = []
        if batch:
            await table.submit_transaction(batch)


class _Tables:
    """What send_report uses of the Runtime: its tables' SDK clients."""

    def __init__(self, settings: Settings, service: Any) -> None:
        self.settings, self.service = settings, service

    def sdk_table(self, base: str, *, create: bool = True) -> Any:
        return self.service.get_table_client(self.settings.table_name(base))

    @property
    def preferences(self) -> Any:
        raise NotImplementedError


async def main_async(rows: int) -> None:
    from azure.data.tables.aio import TableServiceClient

    from proactive.reporting.reports import send_report

    azurite = start_azurite()
    try:
        settings = Settings(storage_connection=azurite.connection_string,
                            table_prefix=f"b{uuid.uuid4().hex[:8]}")
        header(f"send report of {rows:,} recipients, streamed")
        await seed(settings, "bench", rows)
        await seed(settings, "warm", 1000)
        async with TableServiceClient.from_connection_string(
                settings.storage_connection) as service:
            rt = _Tables(settings, service)

            async def stream(key: str, fmt: str) -> int:
                size = 0
                with open(os.devnull, "wb") as out:
                    async for chunk in send_report(rt, key, fmt):
                        out.write(chunk)
                        size += len(chunk)
                return size

            await stream("warm", "csv")
            await stream("warm", "json")
            for fmt in ("csv", "json"):
                growth, took = await peak_growth(partial(stream, "bench", fmt))
                figure(f"{fmt}: peak RSS growth", growth / 2**20, "MiB")
                figure(f"{fmt}: time", took, "s", fmt="{:,.2f}")

            table = rt.sdk_table(DELIVERIES_TABLE)

            async def load_all() -> list[dict[str, object]]:
                found = table.query_entities("PartitionKey eq 'bench'", results_per_page=1000)
                return [dict(e) async for e in _aiter(found)]

            growth, took = await peak_growth(load_all)
            figure("contrast: all rows in a list", growth / 2**20, "MiB")
            note("the streamed report's growth is about one page (1,000 rows) plus the "
                 "CSV buffer (64 KB), whatever the number of rows")
    finally:
        stop_process(azurite.proc)


async def _aiter(items: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for item in items:
        yield item


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report_memory",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
