"""Benchmark: the bound on deliveries in flight (PROACTIVE_MAX_CALLS_IN_FLIGHT)
against throughput, with Teams answering in ~250 ms.

The Connector emulator (in this process) carries each request out at once and
holds its answer `--answer-seconds` (0.25): the user has the message while
the worker still waits. A worker that dies then has sent it, but not recorded
it: with `onUnknown` resend the user gets it again once the claim's lease
runs out. So the duplicates one crash can cause are the deliveries in flight
at that moment, between their claim and their record; the bound caps them,
and at ~250 ms answers it also caps the rate (bound / (answer time + the
claim and record writes)).

For each bound, one send to USERS users of one tenant goes through the real
pieces (Azurite, the Connector client over loopback HTTP, the tenant pacer at
Teams' 50/s) with the worker's part handling run in this process the way the
Functions host runs it (up to batchSize + newBatchThreshold = 48 messages at
once). Printed per bound:

- the sustained rate (deliveries/s, 10 %..90 % of them by the emulator's clock);
- calls in flight at Teams (sent, not yet answered) and deliveries in flight
  (claimed, not yet recorded), sampled every 20 ms over the steady window:
  mean and max. A crash at a random moment duplicates about the mean of the
  first (resend) and leaves the second `ambiguous`; never more than the bound
  (per tenant, per process).

Figures are taken on a shared machine: compare the rows of one run.

    .venv/bin/python -m benchmarks.in_flight [--users 400] [--bounds 1,2,4,8,16,32]
        [--answer-seconds 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

from benchmarks._common import figure, header, machine_line, note
from proactive.config import Settings
from proactive.receiving.activities import parse_activity
from proactive.runtime import Runtime
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from proactive_devtools.processes import start_azurite
from proactive_devtools.provision import provision
from tests.activities_data import TENANT, install

HOST_AT_ONCE = 48  # host.json batchSize 32 + newBatchThreshold 16


def user(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


async def run_bound(settings: Settings, emulator: ConnectorEmulator, users: int,
                    bound: int) -> dict[str, Any]:
    import dataclasses

    rt = await Runtime.create(dataclasses.replace(settings, max_calls_in_flight=bound))
    calls = 0
    real_send = rt.connector.send

    async def counted(*args: Any, **kwargs: Any) -> str:
        nonlocal calls
        calls += 1
        try:
            return await real_send(*args, **kwargs)
        finally:
            calls -= 1

    rt.connector.send = counted  # type: ignore[method-assign]
    key = f"bound-{bound}-{uuid.uuid4().hex[:6]}"
    samples: list[tuple[float, int, int]] = []  # (time, calls at Teams, claims held)
    try:
        message = {"version": 1, "op": "send", "key": key, "text": key,
                   "to": {"users": [user(i) for i in range(users)], "tenant": TENANT}}
        await process(rt, json.dumps(message), message_id=key)
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                gate = rt._in_flight.get(TENANT)
                held = bound - gate._value if gate is not None else 0
                samples.append((emulator.now(), calls, held))
                await asyncio.sleep(0.02)

        async def host() -> None:
            busy: set[asyncio.Task[Any]] = set()
            while not done.is_set():
                if len(busy) >= HOST_AT_ONCE:
                    await asyncio.wait(busy, return_when=asyncio.FIRST_COMPLETED)
                    continue
                batch = [m async for m in rt.outbox.queue.receive_messages(
                    messages_per_page=32, max_messages=32, visibility_timeout=120)]
                for m in batch:
                    async def one(m: Any = m) -> None:
                        await process(rt, m.content, message_id=m.id)
                        await rt.outbox.queue.delete_message(m)
                    task = asyncio.create_task(one())
                    busy.add(task)
                    task.add_done_callback(busy.discard)
                if not batch:
                    await asyncio.sleep(0.1)
            await asyncio.gather(*busy, return_exceptions=True)

        async def watch() -> None:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if sum(1 for d in emulator.deliveries if d.text == key) >= users:
                    break
                await asyncio.sleep(0.2)
            done.set()

        await asyncio.gather(sample(), host(), watch())
    finally:
        await rt.close()
    times = sorted(d.time for d in emulator.deliveries if d.text == key)
    lo, hi = times[len(times) // 10], times[len(times) * 9 // 10]
    steady = [(c, h) for t, c, h in samples if lo <= t <= hi]
    return {"delivered": len(times), "rate": (len(times) * 0.8) / max(hi - lo, 1e-9),
            "calls_mean": statistics.fmean(c for c, _ in steady) if steady else 0.0,
            "calls_max": max((c for c, _ in steady), default=0),
            "held_mean": statistics.fmean(h for _, h in steady) if steady else 0.0,
            "held_max": max((h for _, _, h in samples), default=0)}


async def main_async(users: int, bounds: list[int], answer: float) -> None:
    azurite = start_azurite()
    try:
        settings = Settings(storage_connection=azurite.connection_string,
                            table_prefix=f"b{uuid.uuid4().hex[:8]}",
                            outbox_queue=f"outbox{uuid.uuid4().hex[:8]}", local_dev=True)
        await provision(settings)
        async with ConnectorEmulator(answer_seconds=answer) as emulator:
            rt = await Runtime.create(settings)
            try:
                for i in range(users):
                    await rt.references.record(parse_activity(install(
                        service_url=emulator.url, aad=user(i), conversation=f"a:conv-{i}")))
            finally:
                await rt.close()
            header(f"deliveries in flight per tenant per process: {users} users, Teams "
                   f"answering in {answer * 1000:.0f} ms, tenant rate 50/s")
            note(machine_line())
            for bound in bounds:
                found = await run_bound(settings, emulator, users, bound)
                print(f"  bound {bound:>3}: {found['delivered']} delivered", flush=True)
                figure("    rate", found["rate"], "deliveries/s")
                figure("    calls at Teams, mean (duplicates per crash)",
                       found["calls_mean"], "", fmt="{:,.2f}")
                figure("    calls at Teams, max", found["calls_max"], "", fmt="{:,.0f}")
                figure("    claimed, not recorded, mean (ambiguous)", found["held_mean"],
                       "", fmt="{:,.2f}")
                figure("    claimed, not recorded, max", found["held_max"], "", fmt="{:,.0f}")
    finally:
        azurite.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--bounds", default="1,2,4,8,16,32")
    parser.add_argument("--answer-seconds", type=float, default=0.25)
    args = parser.parse_args()
    asyncio.run(main_async(args.users, [int(b) for b in args.bounds.split(",")],
                           args.answer_seconds))


if __name__ == "__main__":
    main()
