"""Benchmark: a broadcast's cost as its audience grows (issue 19, item 4).

For each size (default 1,000 / 10,000 / 100,000 recipients, `--sizes`), a
fresh Azurite table prefix and queue are seeded and one `{"allUsers": true}`
send per tenant (`--tenants`, default 5, as in the issue; 50/s each) is put
through one fresh worker (`python -m proactive host` through
benchmarks/_worker.py) against the Connector emulator (its own process, no
limits). Printed per size, with the ratio to the targets:

- the worker's peak RSS (VmHWM from /proc, the whole run) and its growth
  from the smallest size: target growth <= 20 MB from 1k to 100k;
- storage operations per recipient, counted by Azurite itself (its `--debug`
  log, as benchmarks.storage_ops; the benchmark's own queue polling left
  out): target <= 2.5 at every size.

Seeding (not measured) runs with Azurite restarted without its debug log
(its data on disk, `relaunch`), and the measured send with it. It writes
what `ReferenceStore.record` of a personal install writes for a broadcast
to find: each user's row (`user:{aad id}`, a
partition of its own, so one insert each, 64 at a time) and the tenant's
index rows (`users:{tenant}`, one partition: entity-group transactions of
100 upserts, with the marker a tenant first seen by this code gets), and the
tenant row.

    .venv/bin/python -m benchmarks.scale [--sizes 1000,10000,100000] [--tenants 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
import uuid
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks._common import (
    Emulator,
    emulator_process,
    figure,
    header,
    machine_line,
    note,
    op_kind,
    stop,
    stream_azurite_ops,
)
from benchmarks.storage_ops import _beside_the_path, settled_size
from benchmarks.whole_path import (
    aad_id,
    app_settings,
    bounded,
    queue_count,
    start_worker,
    tenant_id,
)

RSS_GROWTH_TARGET = 20.0  # MB, from 1k to 100k recipients
OPS_TARGET = 2.5  # storage operations per recipient
TEXT = "Scale curve"


def user_rows(i: int, tenants: int, service_url: str) -> dict[str, Any]:
    """What ReferenceStore.record of a personal install stores for user i."""
    from proactive.storage import tables

    tenant = tenant_id(i % tenants)
    return {"RowKey": tables.safe_key(tenant), "tenantId": tenant, "serviceUrl": service_url,
            "botId": "28:bench-bot", "lastSeen": tables.iso(), "kind": "user",
            "conversationId": f"a:scale-{i}", "conversationType": "personal",
            "aadObjectId": aad_id(i), "userId": f"29:scale-{i}", "locale": "en-GB",
            "firstSeen": tables.iso(), "installState": "installed",
            "installedAt": tables.iso()}


async def seed(settings: Any, emulator: Emulator, users: int, tenants: int) -> None:
    from azure.data.tables.aio import TableServiceClient

    from proactive.storage import tables, user_index
    from proactive.storage.reference_keys import tenant_pk, user_pk
    from proactive_devtools.provision import provision

    await provision(settings)
    rows = [user_rows(i, tenants, emulator.url) for i in range(users)]
    async with TableServiceClient.from_connection_string(settings.storage_connection) as svc:
        table = svc.get_table_client(settings.table_name("references"))
        async def insert(row: dict[str, Any]) -> None:
            await retried(partial(table.create_entity,
                                  {**row, "PartitionKey": user_pk(row["aadObjectId"])}))

        async def upsert(batch: list[dict[str, Any]]) -> None:
            await retried(partial(table.submit_transaction, [("upsert", e) for e in batch]))

        await bounded([partial(insert, r) for r in rows], 64)
        by_tenant: dict[str, list[dict[str, Any]]] = {
            user_index.index_pk(tenant_id(t)): [{
                "PartitionKey": user_index.index_pk(tenant_id(t)), "RowKey": user_index.MARKER,
                "indexed": True}] for t in range(tenants)}
        for r in rows:
            entry = user_index.entry({**r, "PartitionKey": user_pk(r["aadObjectId"])})
            assert entry is not None
            by_tenant.setdefault(entry["PartitionKey"], []).append(entry)
        batches = [part[i:i + 100] for part in by_tenant.values()
                   for i in range(0, len(part), 100)]
        await bounded([partial(upsert, b) for b in batches], 8)
        for t in range(tenants):
            tenant = tenant_id(t)
            await table.upsert_entity({"PartitionKey": tenant_pk(tenant),
                                       "RowKey": tables.safe_key(tenant), "tenantId": tenant,
                                       "serviceUrl": emulator.url, "botId": "28:bench-bot"})


async def retried(make: Any) -> None:
    """A write tried again when a loaded Azurite drops the connection (an
    insert that did land before is found there: done). Inserts, not upserts:
    Azurite's in-memory upsert slowed to a crawl after a few thousand rows."""
    from azure.core.exceptions import ResourceExistsError, ServiceRequestError

    for attempt in range(5):
        try:
            await make()
            return
        except ResourceExistsError:
            return
        except ServiceRequestError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.5)


def relaunch(azurite: Any, debug_log: Path | None) -> None:
    """Azurite started again on the same data (on disk), with or without its
    debug log. Seeding runs without it: at 100k rows Azurite accepted rows
    faster than its log could write their lines, the lines queued up in its
    memory (0.9 GB at 10k rows) and were written at a few rows' worth a second,
    so the log ran minutes behind and counting the send from it was impossible.
    Stopping writes the data out (a SIGINT: LokiJS saves on close), which can
    take a while at 100k rows."""
    import signal

    from proactive_devtools.processes import stop_process

    stop_process(azurite.proc, timeout=600, sig=signal.SIGINT)
    azurite.debug_log = debug_log
    azurite.restart()


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def count_ops(log: Path, start: int, prefix: str) -> Counter[str]:
    """The operations on this run's tables and queue in Azurite's debug log
    from `start`, by kind (streamed: the log is large at 100k)."""
    return Counter(op_kind(table, operation)
                   for table, operation in stream_azurite_ops(log, start, prefix=prefix)
                   if operation != "Queue_GetProperties")  # the benchmark's own polling


async def logged(log: Path, start: int, prefix: str, size: int,
                 limit: float = 1800.0) -> Counter[str]:
    """The run's operations, counted once Azurite's log holds every
    recipient's outcome write (`deliveries replace`): it writes behind the
    requests, far behind at 100k, and a count after a quiet 0.5 s had left
    11 % out. After `limit` seconds the count is printed as incomplete."""
    deadline = time.monotonic() + limit
    while True:
        await settled_size(log)
        kinds = await asyncio.to_thread(count_ops, log, start, prefix)
        if kinds["deliveries replace"] >= size:
            return kinds
        if time.monotonic() > deadline:
            note(f"{size:,}: INCOMPLETE: the log holds {kinds['deliveries replace']:,} of "
                 f"{size:,} outcome writes after {limit:.0f} s")
            return kinds
        await asyncio.sleep(5.0)


async def one_size(size: int, args: argparse.Namespace, azurite: Any, log: Path,
                   emulator: Emulator) -> dict[str, Any]:
    from azure.storage.queue.aio import QueueClient

    from proactive.config import Settings

    tag = uuid.uuid4().hex[:8]
    values = app_settings(azurite.connection_string, tag, 50, connector=emulator.url)
    settings = Settings.from_env(values)
    started = time.monotonic()
    await asyncio.to_thread(relaunch, azurite, None)
    await seed(settings, emulator, size, args.tenants)
    await asyncio.to_thread(relaunch, azurite, log)
    note(f"{size:,}: seeded in {time.monotonic() - started:.0f} s")
    queue = QueueClient.from_connection_string(settings.storage_connection,
                                               settings.outbox_queue)
    key = f"scale-{tag}"
    for t in range(args.tenants):
        await queue.send_message(json.dumps({
            "version": 1, "op": "send", "key": key, "text": TEXT,
            "to": {"allUsers": True, "tenant": tenant_id(t)}}))
    await asyncio.to_thread(emulator.reset)
    offset = await settled_size(log)
    with tempfile.TemporaryDirectory() as tmp:
        proc, worker_log, _ = start_worker(values, Path(tmp), None)
        started = time.monotonic()
        deadline = started + args.timeout_factor * size / (50 * args.tenants) + 120
        peak = 0.0
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited: {worker_log.read_text()[-2000:]}")
                peak = max(peak, peak_rss_mb(proc.pid))
                delivered = (await asyncio.to_thread(emulator.counters)).get("delivered", 0)
                if delivered >= size and await queue_count(queue) == 0:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{size}: only {delivered} delivered; the worker's "
                                       f"log ends: {worker_log.read_text()[-3000:]}")
                await asyncio.sleep(1.0)
            wall = time.monotonic() - started
            peak = max(peak, peak_rss_mb(proc.pid))
        finally:
            stop(proc, timeout=30)
            await queue.close()
            if args.keep_logs:
                Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
                shutil.copy(worker_log, Path(args.keep_logs) / f"worker-{size}.log")
    kinds = await logged(log, offset, f"b{tag}", size)
    return {"size": size, "rss": peak, "kinds": kinds, "ops": sum(kinds.values()) / size,
            "wall": wall, "delivered": delivered}


async def run(args: argparse.Namespace) -> None:
    import logging

    from proactive_devtools.processes import start_azurite

    logging.getLogger("proactive").setLevel(logging.ERROR)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    header(f"Scale curve: one allUsers send per tenant ({args.tenants} tenants), "
           f"{', '.join(f'{s:,}' for s in sizes)} recipients, one worker each")
    note(machine_line())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "azurite-debug.log"
        # On disk, so that it can be restarted without its debug log for the
        # seeding (`relaunch`).
        azurite = start_azurite(debug_log=log, location=str(Path(tmp) / "azurite"))
        try:
            with emulator_process() as emulator:
                for size in sizes:
                    result = await one_size(size, args, azurite, log, emulator)
                    results.append(result)
                    print(f"  {size:,} recipients: {result['wall']:.0f} s, "
                          f"{result['delivered']:,} delivered")
                    figure("worker peak RSS", result["rss"], "MB")
                    figure("storage operations", result["ops"], "/recipient",
                           target=OPS_TARGET, fmt="{:,.2f}")
                    path = sum(n for k, n in result["kinds"].items() if not _beside_the_path(k))
                    figure("  without start-up (creation, timer tick)", path / size,
                           "/recipient", target=OPS_TARGET, fmt="{:,.2f}")
                    for name, count in result["kinds"].most_common():
                        if count / size >= 0.005:
                            note(f"    {name:<36} {count / size:6.3f} /recipient")
        finally:
            azurite.stop()
    if len(results) > 1:
        first, last = results[0], results[-1]
        growth = last["rss"] - first["rss"]
        print(f"  peak RSS {first['size']:,} -> {last['size']:,} recipients:")
        # The target is for 1k -> 100k (a shorter curve: the figure, no ratio).
        full = first["size"] <= 1000 and last["size"] >= 100_000
        figure("growth", growth, "MB", target=RSS_GROWTH_TARGET if full else None)
        figure("per 1,000 recipients", growth / (last["size"] - first["size"]) * 1000, "MB")
    note(machine_line())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000",
                        help="comma-separated audience sizes (default 1000,10000,100000)")
    parser.add_argument("--tenants", type=int, default=5)
    parser.add_argument("--keep-logs", metavar="DIR", default=None,
                        help="copy each size's worker log (its warnings: retries, "
                             "claims refused) into DIR")
    parser.add_argument("--timeout-factor", type=float, default=6.0,
                        help="give up after this many times the time at 50/s per tenant")
    asyncio.run(run(parse(parser, argv)))
    return 0


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    args.tenants = max(1, args.tenants)
    return args


if __name__ == "__main__":
    raise SystemExit(main())
