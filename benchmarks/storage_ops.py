"""Storage operations per delivered message, counted by Azurite itself.

Azurite runs with `--debug`, which logs every request it serves with its
operation and table; the counts come from that log, so they hold whatever
client made the requests (the product's REST client, the SDK, the host's
queue polling). Scenarios, each through a fresh `python -m proactive host`
worker (benchmarks/_worker.py) against the Connector emulator:

- sends: `--messages` single sends (`{"to": {"user": ...}}`, no tenant) to
  20 users spread over 10 tenants. Target ≤ 3.5 storage operations/message.
- broadcast: one `{"allUsers": true}` send to 200 users of one tenant.
  Target ≤ 2.5 storage operations/recipient.
- cold: one send, to a fresh worker: the storage round trips it makes
  before the delivery (everything before the outcome write that follows
  the claim). Target ≤ 4.
- engagement (benchmarks/engagement_ops.py): a read receipt covering 50
  messages (target: one write) and an acknowledgement press.

Rounds are interleaved (sends, broadcast, sends, ...); each prints the
median and range, the worker's CPU per message, and the run's calibration
(the CPU of a bare aiohttp request, benchmarks._common.calibrate).
The benchmark's own polling (queue properties) is not counted.

    .venv/bin/python -m benchmarks.storage_ops [--rounds 3] [--messages 400]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks._common import (
    CALIBRATION,
    Emulator,
    azurite_ops,
    calibrate,
    emulator_process,
    figure_rounds,
    header,
    machine_line,
    note,
    op_kind,
    proc_cpu_seconds,
    stop,
)
from benchmarks.whole_path import app_settings, queue_count, seed, send_message, start_worker

TARGETS = {"sends": 3.5, "broadcast": 2.5}
COLD_TARGET = 4
WARMUP = 20


def broadcast_message(key: str, tenant: str) -> str:
    return json.dumps({"version": 1, "op": "send", "key": key,
                       "to": {"allUsers": True, "tenant": tenant}, "text": "All-hands at 15:00"})


async def one_run(kind: str, azurite: Any, log: Path, emulator: Emulator, messages: int,
                  timeout: float) -> dict[str, Any]:
    """One scenario through a fresh worker: ops by kind, cold-start ops, CPU."""
    from azure.storage.queue.aio import QueueClient

    from benchmarks.whole_path import tenant_id
    from proactive.config import Settings

    tag = uuid.uuid4().hex[:8]
    values = app_settings(azurite.connection_string, tag, 50, emulator.url)
    settings = Settings.from_env(values)
    if kind == "sends":
        users, tenants, expected = 20, 10, messages
        bodies = [send_message(f"s{tag}-{i}", i % users) for i in range(messages)]
    elif kind == "cold":
        users, tenants, expected = 1, 1, 1
        bodies = [send_message(f"c{tag}", 0)]
    else:
        users, tenants, expected = 200, 1, 200
        bodies = [broadcast_message(f"b{tag}", tenant_id(0))]
    await seed(settings, emulator, users, tenants, bodies)
    await asyncio.to_thread(emulator.reset)
    start = await settled_size(log)
    with tempfile.TemporaryDirectory() as tmp:
        proc, worker_log, _ = start_worker(values, Path(tmp), None)
        queue = QueueClient.from_connection_string(settings.storage_connection,
                                                   settings.outbox_queue)
        try:
            deadline = time.monotonic() + timeout
            cpu0 = delivered0 = None
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited: {worker_log.read_text()[-2000:]}")
                delivered = (await asyncio.to_thread(emulator.counters)).get("delivered", 0)
                if cpu0 is None and delivered >= min(WARMUP, expected // 4):
                    cpu0, delivered0 = proc_cpu_seconds(proc.pid), delivered
                if delivered >= expected and await queue_count(queue) == 0:
                    break
                await asyncio.sleep(0.05)
            else:
                raise TimeoutError(f"{kind}: only {delivered} of {expected} delivered")
            cpu = proc_cpu_seconds(proc.pid) - (cpu0 or 0.0)
            per_cpu = cpu / max(1, delivered - (delivered0 or 0)) * 1e3
        finally:
            stop(proc, timeout=30)
            await queue.close()
    await settled_size(log)  # the last requests' lines
    ops, _ = azurite_ops(log, start, prefix=f"b{tag}")
    ops = [op for op in ops if op[1] != "Queue_GetProperties"]  # our own polling
    return {"kinds": Counter(op_kind(*op) for op in ops), "total": len(ops),
            "per": len(ops) / expected, "cold": _cold_start(ops), "cpu_ms": per_cpu,
            "expected": expected}


def _beside_the_path(kind: str) -> bool:
    return kind.startswith(("create table", "queue create", "schedules "))


async def settled_size(log: Path, quiet: float = 0.5, limit: float = 10.0) -> int:
    """The log's size once Azurite has stopped writing to it (it writes
    behind the requests): so the seeding's lines are not counted."""
    size, since, deadline = -1, time.monotonic(), time.monotonic() + limit
    while time.monotonic() < deadline:
        now = log.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        await asyncio.sleep(0.05)
    return size


def _cold_start(ops: list[tuple[str, str]]) -> list[str]:
    """The round trips before the first delivery: up to the first outcome
    write on the deliveries table after the first claim (its insert)."""
    claimed = False
    for i, (table, operation) in enumerate(ops):
        if table == "deliveries" and operation == "Table_InsertEntity":
            claimed = True
        elif claimed and table == "deliveries" and operation in (
                "Table_UpdateEntity", "Table_MergeEntity"):
            return [op_kind(*op) for op in ops[:i]]
    return [op_kind(*op) for op in ops]


async def run(args: argparse.Namespace) -> None:
    import logging

    from proactive_devtools.processes import start_azurite

    logging.getLogger("proactive").setLevel(logging.ERROR)
    header(f"Storage operations per message, counted by Azurite ({args.rounds} interleaved "
           f"rounds: {args.messages} sends to 20 users in 10 tenants; a broadcast to 200 users)")
    note(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "azurite-debug.log"
        azurite = start_azurite(debug_log=log)
        try:
            with emulator_process() as emulator:
                results: dict[str, list[dict[str, Any]]] = {"sends": [], "broadcast": [],
                                                            "cold": []}
                calibration: list[float] = []
                for _ in range(args.rounds):
                    calibration.append(await calibrate(emulator.url))
                    for kind in results:
                        results[kind].append(await one_run(kind, azurite, log, emulator,
                                                           args.messages, args.timeout))
                cal = sorted(calibration)[len(calibration) // 2]
                figure_rounds(f"calibration: {CALIBRATION}", calibration, "µs", fmt="{:,.0f}")
                for kind, runs in results.items():
                    if kind == "cold":
                        continue
                    unit = "/message" if kind == "sends" else "/recipient"
                    print(f"  {kind}:")
                    figure_rounds("storage operations", [r["per"] for r in runs], unit,
                                  target=TARGETS[kind], fmt="{:,.2f}", indent=4)
                    figure_rounds("  without start-up (creation, timer tick)",
                                  [sum(n for k, n in r["kinds"].items()
                                       if not _beside_the_path(k)) / r["expected"]
                                   for r in runs], unit, target=TARGETS[kind],
                                  fmt="{:,.2f}", indent=4)
                    kinds: Counter[str] = Counter()
                    for r in runs:
                        kinds.update(r["kinds"])
                    for name, count in kinds.most_common():
                        note(f"    {name:<36} {count / len(runs) / runs[0]['expected']:6.3f}"
                             f" {unit}")
                    figure_rounds("worker CPU (incl. host queue ops)",
                                  [r["cpu_ms"] for r in runs], "ms" + unit, fmt="{:,.2f}",
                                  calibration_us=cal, per_us=1000, indent=4)
                cold = results["cold"]
                figure_rounds("cold start: storage round trips before the 1st delivery",
                              [len(r["cold"]) for r in cold], "", fmt="{:,.0f}")
                path = [[k for k in r["cold"] if not _beside_the_path(k)] for r in cold]
                figure_rounds("  of which on the message's path", [len(p) for p in path], "",
                              fmt="{:,.0f}")
                figure_rounds("  the worker's own (not the host's queue receive)",
                              [len([k for k in p if not k.startswith("queue ")]) for p in path],
                              "", target=COLD_TARGET, fmt="{:,.0f}")
                note(f"  in order (round 1): {', '.join(cold[0]['cold'])}")
                note("  beside the path: table/queue creation is the local host's provisioning "
                     "(in Azure the deployment creates them); the schedules queries are the "
                     "timer's start-up tick (run_on_startup), concurrent with the first message")
                from benchmarks import engagement_ops

                engagement_ops.report(await engagement_ops.measure(azurite, log, emulator.url))
                note(machine_line())
        finally:
            azurite.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.storage_ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    args.rounds, args.messages = max(1, args.rounds), max(WARMUP * 2, args.messages)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
