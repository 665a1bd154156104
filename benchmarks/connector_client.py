"""Benchmark 1: CPU per Connector send in the client process.

`ConnectorClient.send` (httpx over aiohttp's transport, built as
`Runtime.create` builds it) posting activities to the Connector emulator,
which runs in its own process with no limits, so only the client's CPU is
counted: `time.process_time()` delta / sends, at a fixed concurrency.

Baselines, measured the same way against the same emulator:
- `ConnectorClient` over a plain `httpx.AsyncClient` (httpx's own transport);
- a bare `httpx` request over the aiohttp transport (no ConnectorClient);
- a bare `httpx.AsyncClient` request;
- raw `aiohttp.ClientSession` (the floor, and the calibration: target ≤ 2× it).

    .venv/bin/python -m benchmarks.connector_client [--sends 2000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks._common import (
    Emulator,
    emulator_process,
    figure_rounds,
    header,
    machine_cpu,
    machine_line,
    machine_load_note,
    median,
    note,
)

TARGET_RATIO = 2.0  # ≤ 2× a bare aiohttp request's CPU, same run
ORIENTATION = {"raw aiohttp": 190, "httpx + aiohttp transport": 430, "plain httpx": 2050}

ACTIVITY: dict[str, Any] = {
    "type": "message",
    "text": "Build **4711** is green: all 1,234 tests passed",
    "textFormat": "markdown",
    "summary": "CI",
    "channelData": {"notification": {"alert": True}},
}

Send = Callable[[int], Awaitable[Any]]


async def _drive(send: Send, count: int, concurrency: int) -> tuple[float, float]:
    """`count` sends through `concurrency` workers: (CPU seconds, wall seconds)."""
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            i = next_index
            next_index += 1
            await send(i)

    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.process_time() - cpu0, time.perf_counter() - wall0


# --- the variants ----------------------------------------------------------------

def _product_http() -> Any:
    """The HTTP client exactly as `proactive.runtime.Runtime.create` builds it."""
    import httpx
    from httpx_aiohttp import AiohttpTransport

    return httpx.AsyncClient(transport=AiohttpTransport(),
                             limits=httpx.Limits(max_connections=64))


def _connector(http: Any, service_url: str, session: Any = None) -> Any:
    from proactive.config import Settings
    from proactive.teams.clouds import resolve_cloud
    from proactive.teams.connector import ConnectorClient

    settings = Settings(local_dev=True)  # loopback serviceUrl, no token
    return ConnectorClient(http, None, resolve_cloud(settings), local_dev=True, session=session,
                           local_connectors=[service_url])


async def _variant(name: str, service_url: str) -> tuple[Send, Callable[[], Awaitable[None]]]:
    """A send function for one variant, and how to close it."""
    import httpx

    conv = "a:bench-connector"
    url = f"{service_url.rstrip('/')}/v3/conversations/{conv}/activities"
    headers = {"Content-Type": "application/json"}

    if name == "ConnectorClient.send (product)":
        # As Runtime.create builds it: the calls over its own aiohttp session.
        from proactive.runtime import connector_session

        http = _product_http()
        session = connector_session()
        client = _connector(http, service_url, session)

        async def close_both() -> None:
            await session.close()
            await http.aclose()

        return (lambda i: client.send(service_url, conv, ACTIVITY)), close_both
    if name == "ConnectorClient over httpx + aiohttp transport":
        http = _product_http()
        client = _connector(http, service_url)
        return (lambda i: client.send(service_url, conv, ACTIVITY)), http.aclose
    if name == "ConnectorClient over plain httpx":
        http = httpx.AsyncClient(limits=httpx.Limits(max_connections=64))
        client = _connector(http, service_url)
        return (lambda i: client.send(service_url, conv, ACTIVITY)), http.aclose
    if name in ("bare httpx + aiohttp transport", "bare plain httpx"):
        http = (_product_http() if "aiohttp" in name
                else httpx.AsyncClient(limits=httpx.Limits(max_connections=64)))

        async def bare(i: int) -> Any:
            body = json.dumps(ACTIVITY, separators=(",", ":")).encode()
            response = await http.request("POST", url, content=body, headers=headers,
                                          timeout=15.0)
            return json.loads(response.content)

        return bare, http.aclose
    if name == "raw aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        timeout = aiohttp.ClientTimeout(total=15.0)

        async def raw(i: int) -> Any:
            body = json.dumps(ACTIVITY, separators=(",", ":")).encode()
            async with session.post(url, data=body, headers=headers,
                                    timeout=timeout) as response:
                return json.loads(await response.read())

        return raw, session.close
    raise ValueError(name)


VARIANTS = ("ConnectorClient.send (product)", "ConnectorClient over httpx + aiohttp transport",
            "ConnectorClient over plain httpx",
            "bare httpx + aiohttp transport", "bare plain httpx", "raw aiohttp")


async def measure(emulator: Emulator, name: str, *, sends: int, concurrency: int,
                  warmup: int) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, delivered) for one variant."""
    await asyncio.to_thread(emulator.reset)
    send, close = await _variant(name, emulator.url)
    try:
        await _drive(send, warmup, concurrency)  # connections, imports, caches
        cpu, wall = await _drive(send, sends, concurrency)
    finally:
        await close()
    delivered = (await asyncio.to_thread(emulator.counters)).get("delivered", 0)
    return cpu, wall, delivered - warmup


async def run(sends: int, concurrency: int, rounds: int, warmup: int,
              variants: tuple[str, ...]) -> None:
    header(f"Connector client: {sends:,} sends at concurrency {concurrency}, "
           f"{rounds} interleaved round(s)")
    note(machine_line())
    with emulator_process() as emulator:
        note(f"emulator (own process, no limits): {emulator.url}")
        results: dict[str, list[tuple[float, float, int]]] = {v: [] for v in variants}
        machine0, ours0 = machine_cpu(), time.process_time() + emulator.cpu_seconds()
        for _ in range(rounds):
            for name in variants:  # interleaved, so drift hits every variant alike
                results[name].append(await measure(emulator, name, sends=sends,
                                                   concurrency=concurrency, warmup=warmup))
        # The calibration is the raw aiohttp variant of the same rounds.
        raw = [cpu / sends * 1e6 for cpu, _, _ in results.get("raw aiohttp", [])]
        cal = median(raw) if raw else None
        for name in variants:
            per_send = [cpu / sends * 1e6 for cpu, _, _ in results[name]]
            lost = [sends - d for _, _, d in results[name] if d != sends]
            print(f"  {name}:")
            figure_rounds("CPU per send (client process)", per_send, "µs", fmt="{:,.0f}",
                          calibration_us=cal, indent=4)
            figure_rounds("sends/s", [sends / wall for _, wall, _ in results[name]], "/s",
                          fmt="{:,.0f}", indent=4)
            if lost:
                note(f"  WARNING: emulator counted fewer deliveries than sends: {lost}")
        if cal:
            product = [cpu / sends * 1e6 / cal
                       for cpu, _, _ in results["ConnectorClient.send (product)"]]
            figure_rounds("product ÷ raw aiohttp (calibration)", product, "×",
                          target=TARGET_RATIO, fmt="{:,.2f}")
        note(machine_line())
        ours = time.process_time() + emulator.cpu_seconds() - ours0
        note(machine_load_note(machine0, machine_cpu(), ours))
        note("orientation (from the issue): " + ", ".join(
            f"{k} ≈ {v:,} µs" for k, v in ORIENTATION.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.connector_client",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--only-product", action="store_true",
                        help="ConnectorClient.send and raw aiohttp (the calibration) only")
    args = parser.parse_args(argv)
    variants = (VARIANTS[0], VARIANTS[-1]) if args.only_product else VARIANTS
    asyncio.run(run(max(1, args.sends), max(1, args.concurrency), max(1, args.rounds),
                    max(0, args.warmup), variants))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
