"""Benchmark: the cost of one scheduler tick does not grow with the backlog.

For each backlog size (1,000 and 100,000 items scheduled in the future) plus
100 items due now, on Azurite: seed the rows the scheduler writes (batch
transactions of 100 entities per partition), run one tick and print the
entities it read and its wall time, with the ratio to the targets:
entities read <= 3 x due, and under 2 s per tick. A second tick right after
(nothing due any more) shows the idle cost.

The due items are dispatched for real: claimed, put on an Azurite queue, moved.

    .venv/bin/python -m benchmarks.scheduler_tick [--sizes 1000,100000] [--due 100]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks._common import (
    CALIBRATION,
    calibration_rounds,
    figure,
    figure_rounds,
    header,
    machine_line,
    note,
)
from proactive.config import Settings
from proactive.contract import Content, Target, TargetKind
from proactive.runtime import Runtime
from proactive.scheduling import parse_spec, rows_for, tick
from proactive_devtools.processes import start_azurite
from proactive_devtools.provision import provision

READ_FACTOR = 3  # target: entities read per tick <= 3 x due
TARGET_SECONDS = 2.0
BATCH = 100  # entities per transaction (the Table service's limit)
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CONTENT = Content(text="Stand-up in 5 minutes", summary="Stand-up")


async def seed(rt: Runtime, count: int, due: int) -> float:
    """`count` items spread over the next 30 days and `due` items due in the
    last 10 minutes, written as the scheduler writes them."""
    started = time.perf_counter()
    table = rt.schedules_table
    by_partition: dict[str, list[dict[str, Any]]] = defaultdict(list)
    pending: list[Any] = []
    gate = asyncio.Semaphore(8)

    async def submit(rows: list[dict[str, Any]]) -> None:
        async with gate:
            await table.submit_transaction([("create", row) for row in rows])

    def add(key: str, n: int, when: datetime) -> None:
        spec = parse_spec({"at": when.strftime("%Y-%m-%dT%H:%M:%SZ")})
        target = Target(TargetKind.USER, f"00000000-0000-4000-8000-{n:012d}")
        # 'now' well before: every item is past the lookahead when written.
        for row in rows_for(key, target, CONTENT, spec, "UTC", NOW - timedelta(days=1)):
            rows = by_partition[row["PartitionKey"]]
            rows.append(row)
            if len(rows) == BATCH:  # item + due row stay together in one batch
                pending.append(asyncio.ensure_future(submit(list(rows))))
                rows.clear()

    for n in range(count):
        later = timedelta(minutes=5, seconds=(n * 25_919) % 2_592_000)  # over 30 days
        add(f"future-{n}", n, NOW + later)
        if len(pending) > 64:
            await asyncio.gather(*pending)
            pending.clear()
    for n in range(due):
        add(f"due-{n}", n, NOW - timedelta(seconds=(n * 7) % 600))
    for rows in by_partition.values():
        if rows:
            pending.append(asyncio.ensure_future(submit(list(rows))))
    await asyncio.gather(*pending)
    return time.perf_counter() - started


async def scenario(connection: str, count: int, due: int) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(storage_connection=connection, outbox_queue=f"bench{tag}",
                        table_prefix=f"b{tag}", local_dev=True)
    await provision(settings)  # as the deployment (or ./scripts/dev) does
    rt = await Runtime.create(settings)
    try:
        seconds = await seed(rt, count, due)
        header(f"scheduler tick: {count:,} future items + {due} due")
        note(f"seeded {2 * (count + due):,} rows (item + due row each) in {seconds:.1f} s")
        report = await tick(rt, NOW)
        figure("entities read", report.read, "entities", target=READ_FACTOR * due, fmt="{:,.0f}")
        figure("entities read per due item", report.read / max(due, 1), "", fmt="{:.2f}")
        figure("dispatched", report.dispatched, f"of {due}", fmt="{:,.0f}")
        figure("tick wall time", report.seconds, "s", target=TARGET_SECONDS, fmt="{:.3f}")
        idles = [await tick(rt, NOW + timedelta(minutes=1 + i)) for i in range(3)]
        figure_rounds("next ticks (nothing due): entities read", [i.read for i in idles],
                      "entities", fmt="{:,.0f}")
        figure_rounds("next ticks wall time", [i.seconds for i in idles], "s",
                      target=TARGET_SECONDS, fmt="{:.3f}")
    finally:
        await rt.close()


async def main_async(sizes: list[int], due: int) -> None:
    note(machine_line())
    azurite = start_azurite()
    try:
        for count in sizes:
            await scenario(azurite.connection_string, count, due)
    finally:
        azurite.stop()
    # A tick with items due changes what it reads (they are dispatched), so it
    # is measured once per size; the idle ticks are the repeated rounds.
    calibration = await asyncio.to_thread(calibration_rounds)
    figure_rounds(f"calibration: {CALIBRATION}", calibration, "µs", fmt="{:,.0f}")
    note(machine_line())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scheduler_tick",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,100000",
                        help="future backlog sizes, comma-separated")
    parser.add_argument("--due", type=int, default=100, help="items due at the tick")
    args = parser.parse_args(argv)
    # The due items are minutes late on purpose: don't print a warning for each.
    logging.getLogger("proactive").setLevel(logging.ERROR)
    asyncio.run(main_async([int(s) for s in args.sizes.split(",")], args.due))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
