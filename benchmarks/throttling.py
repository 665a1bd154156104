"""Benchmark: what 429s cost a broadcast, and whether a scaled limit holds
(issue 19, item 3).

The Connector emulator runs in its own process with Teams' limits
(`--rate-limits`: per tenant and per conversation); one worker (`python -m
proactive host` through benchmarks/_worker.py) sends one `{"allUsers": true}`
send to one tenant's users, seeded as in benchmarks.delivery_engine. Each
run starts with an empty `pacing` table and a reset emulator. Runs, in order:

1. clean: `--users` users at Teams' 50/s; the steady rate (10-90 % of the
   deliveries, by the emulator's clock) is the reference;
2. 1.5 % random 429s: every Connector call is answered 429 (Retry-After 2 s,
   the middle of the 1-3 s seen from Teams) with probability 0.015, whatever
   the rate. Target: steady rate >= 80 % of the clean run's;
3. a storm: once a third have their message, every call is answered 429 for
   10 s. Target: the rate is back to the clean run's (a 2 s window holding
   >= 90 % of it) within 10 s of the storm's end;
4. scaled limits: the emulator's tenant limit and the worker's
   PROACTIVE_TENANT_RPS at 10/s, then 20/s (`--scaled-seconds` of sends
   each). Target: the emulator answers no 429 and sees at most the limit in
   any sliding second.

Figures are printed with the ratio to each target; nothing is asserted.
Each run happens once (minutes): the machine line says how loaded it was.

    .venv/bin/python -m benchmarks.throttling [--users 2000] [--runs clean,random,storm,scaled]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks._common import emulator_process, figure, header, machine_line, note, stop
from benchmarks.delivery_engine import Bench, Case, steady_rate, tenant_id, timeline
from benchmarks.whole_path import bounded, queue_count

CEILING = 50.0
RANDOM_SHARE = 0.015
RETRY_AFTER = 2.0
STORM_SECONDS = 10.0
KEEP_TARGET = 0.8  # random 429s: share of the clean rate kept
RECOVERY_TARGET = 10.0  # seconds after the storm
RECOVERED = 0.9  # share of the clean rate a 2 s window must hold


def max_in_window(times: list[float], span: float = 1.0) -> int:
    """The most deliveries in any sliding window of `span` seconds."""
    times, best, start = sorted(times), 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - span:
            start += 1
        best = max(best, end - start + 1)
    return best


async def emulator_now(bench: Bench) -> float:
    state = await asyncio.to_thread(bench.emulator.admin, "state", None, "?deliveries=0")
    return float(state["now"])


async def one_run(bench: Bench, name: str, users: int, *, rps: float = CEILING,
                  fault_rate: float = 0.0, storm: bool = False) -> dict[str, Any]:
    emulator = bench.emulator
    header(f"Throttling: {name}")
    note(machine_line())
    tenant = 20 + int(rps)  # a tenant of its own per limit: its own users
    case = Case(0, name, {tenant: users}, 1, key=f"throttle-{uuid.uuid4().hex[:8]}",
                text=f"Throttling {name} {uuid.uuid4().hex[:6]}")
    await bench.seed(case.tenants)
    await asyncio.to_thread(emulator.admin, "config", {
        "faultRate": fault_rate, "faultStatuses": [429], "seed": 4711, "tenantRps": rps,
        "retryAfter": RETRY_AFTER if fault_rate or storm else None})
    await asyncio.to_thread(emulator.reset)
    await bench.clear_pacing()
    bench.values["PROACTIVE_TENANT_RPS"] = str(int(rps))
    queue = bench.rt.outbox.queue
    await bounded([functools.partial(queue.send_message, b) for b in bench.messages(case)], 4)
    proc, log, _ = bench.start_worker(None, None)
    started = time.monotonic()
    deadline = started + 8 * users / rps + 180
    storm_at: tuple[float, float] | None = None
    back = float("nan")
    storm_started = 0.0
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: not done after {time.monotonic() - started:.0f} s")
            if storm and storm_at is None:
                counters = await asyncio.to_thread(emulator.counters)
                if not storm_started and counters.get("delivered", 0) >= users // 3:
                    await asyncio.to_thread(emulator.admin, "config", {"faultRate": 1.0})
                    storm_started = await emulator_now(bench)
                    began = time.monotonic()
                    await asyncio.sleep(STORM_SECONDS - (time.monotonic() - began))
                    await asyncio.to_thread(emulator.admin, "config", {"faultRate": 0.0})
                    storm_at = (storm_started, await emulator_now(bench))
                    back = await shared_rate_back(bench, tenant_id(tenant))
                await asyncio.sleep(0.2)
                continue
            if await queue_count(queue) == 0 and (await asyncio.to_thread(
                    emulator.counters)).get("delivered", 0) >= users:
                break
            await asyncio.sleep(0.5)
    finally:
        stop(proc, timeout=30)
    state = await asyncio.to_thread(emulator.admin, "state")
    times = sorted(d["time"] for d in state["deliveries"] if d.get("text") == case.text)
    statuses = state["statuses"]
    rate, _ = steady_rate(times)
    note(f"{users:,} users, {len(times):,} delivered, wall {time.monotonic() - started:.0f} s; "
         f"{state['counters'].get('requests', 0):,} Connector requests, "
         f"{statuses.get('429', 0):,} answered 429 ({state['counters'].get('faults', 0):,} of "
         f"them injected)")
    if times:
        note(f"deliveries/s per 5 s: {timeline(times, times[0])}")
    return {"rate": rate, "times": times, "storm": storm_at, "back": back, "statuses": statuses,
            "faults": state["counters"].get("faults", 0),
            "throttled": state["counters"].get("throttled", 0)}


async def shared_rate_back(bench: Bench, tenant: str, limit: float = 30.0) -> float:
    """Seconds from now (the storm's end) until the tenant's shared rate, as
    every worker computes it from the `pacing` row, is back at the ceiling."""
    began = time.monotonic()
    while time.monotonic() - began < limit:
        if await bench.rt.tenant_pacer.current_rate(tenant) >= 0.99 * CEILING:
            return time.monotonic() - began
        await asyncio.sleep(0.1)
    return float("nan")


def window_rate(times: list[float], start: float, seconds: float) -> float:
    return sum(1 for t in times if start <= t < start + seconds) / seconds


def recovery_seconds(times: list[float], end: float, clean: float) -> float:
    """Seconds after `end` until a 2 s window of deliveries first holds
    RECOVERED x the clean rate (nan: never)."""
    after = [t for t in times if t >= end]
    for i, t in enumerate(after):
        j = i
        while j < len(after) and after[j] < t + 2.0:
            j += 1
        if (j - i) / 2.0 >= RECOVERED * clean:
            return t - end
    return float("nan")


async def run(args: argparse.Namespace) -> None:
    from proactive.runtime import Runtime
    from proactive_devtools.processes import start_azurite
    from proactive_devtools.provision import provision

    logging.getLogger("proactive").setLevel(logging.ERROR)
    wanted = set(args.runs.split(","))
    args.users_lists, args.trace_pacing, args.host_queues = 0, False, ""
    with emulator_process("--rate-limits", "--tenant-rps", str(CEILING),
                          "--seed", "4711") as emulator, tempfile.TemporaryDirectory() as tmp:
        azurite = start_azurite()
        try:
            bench = Bench(args, azurite, emulator, Path(tmp))
            await provision(bench.settings)
            bench.rt = await Runtime.create(bench.settings)
            try:
                clean = float("nan")
                if "clean" in wanted or "random" in wanted or "storm" in wanted:
                    clean = (await one_run(bench, "clean, 50/s", args.users))["rate"]
                    figure("clean steady rate (the reference)", clean, "/s")
                if "random" in wanted:
                    got = await one_run(bench, "1.5 % random 429s", args.users,
                                        fault_rate=RANDOM_SHARE)
                    figure("steady rate with 1.5 % random 429s", got["rate"], "/s")
                    figure("... share of the clean rate", got["rate"] / clean, "",
                           target=KEEP_TARGET, lower_is_better=False, fmt="{:,.2f}")
                if "storm" in wanted:
                    got = await one_run(bench, "a 10 s storm of 429s", args.users, storm=True)
                    if got["storm"]:
                        start, end = got["storm"]
                        note(f"storm from {start - got['times'][0]:.1f} s to "
                             f"{end - got['times'][0]:.1f} s after the first delivery")
                        figure("shared rate back at the ceiling after the storm",
                               got["back"], "s", target=RECOVERY_TARGET)
                        figure("deliveries: a 2 s window at 90 % of clean after",
                               recovery_seconds(got["times"], end, clean), "s",
                               target=RECOVERY_TARGET)
                        for lo in (0, 10, 20):
                            figure(f"... delivered/s {lo}-{lo + 10} s after the storm",
                                   window_rate(got["times"], end + lo, 10.0), "/s")
                        note("after a storm, the users it hit come back one per queue "
                             "message (each with its own claim, count and queue work): on a "
                             "loaded machine that costs CPU, not pacing")
                for rps in (10, 20) if "scaled" in wanted else ():
                    got = await one_run(bench, f"scaled limit {rps}/s", rps * args.scaled_seconds,
                                        rps=rps)
                    figure(f"most deliveries in a sliding second at {rps}/s",
                           max_in_window(got["times"]), "", target=rps, fmt="{:,.0f}")
                    figure("... requests answered 429", got["throttled"], "", fmt="{:,.0f}")
                    figure("... steady rate", got["rate"], "/s", fmt="{:,.2f}")
            finally:
                await bench.rt.close()
        finally:
            azurite.stop()
    note(machine_line())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throttling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2000, help="users of runs 1-3")
    parser.add_argument("--runs", default="clean,random,storm,scaled")
    parser.add_argument("--scaled-seconds", type=int, default=30,
                        help="seconds of sends at each scaled limit")
    parser.add_argument("--max-attempts", type=int, default=20,
                        help="PROACTIVE_MAX_ATTEMPTS (a storm uses up a few per user)")
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
