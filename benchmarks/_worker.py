"""The benchmark's worker process: `python -m proactive host`, unchanged, with
every storage and Connector request counted on the way out.

    python -m benchmarks._worker COUNTS.json [--profile FILE] [--no-tenant-pacer]
        [host args...]

Counting wraps `azure.core`'s async pipeline (one call per storage HTTP
request, retries included) and `httpx.AsyncClient.send` (Connector calls):
a few µs per request, under 0.5 % of the path. The counts are written to
COUNTS.json when the host stops (SIGTERM/SIGINT: the host drains and returns).
`--profile FILE` runs the host under cProfile timed by CPU time (not wall
time, so waiting in epoll does not count) and writes the stats to FILE.
`--no-tenant-pacer` is a diagnosis, not the product: `TenantPacer.acquire`
returns at once, without its Table Storage reservations.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from typing import Any

COUNTS: Counter[str] = Counter()


def _label(method: str, url: str) -> str:
    label = _kind(method, url)
    if BY_TABLE and label.startswith("table "):
        # /<account>/<table>(...) or /<account>/<table>()
        name = url.split("?", 1)[0].rstrip("/").split("/")[-1].split("(", 1)[0]
        label += f" [{name}]"
    return label


# benchmarks.delivery_engine: count table requests per table as well.
BY_TABLE = bool(os.environ.get("BENCH_COUNT_BY_TABLE"))
# benchmarks.delivery_engine --trace-pacing: write every tenant slot (slot time,
# when acquire returned), every reservation (time, slots), every Defer (time,
# delay), every Connector answer
# (start, end, status) and every 429 fed back into the pacer (time, new rate)
# to this file at exit.
TRACE_FILE = os.environ.get("BENCH_TRACE_PACING", "")
TRACE: dict[str, list[Any]] = {"slots": [], "connector": [], "throttled": [], "deferred": [],
                               "reserved": [], "wakes": []}


def install_trace() -> None:
    import time

    import httpx

    from proactive.delivering import pacing

    original_acquire = pacing.TenantPacer.acquire
    original_throttled = pacing.TenantPacer.throttled

    async def acquire(self: Any, tenant: str, **kwargs: Any) -> float:
        if not getattr(self, "_bench_traced", False):  # its sleep, traced: how late it wakes
            self._bench_traced = True
            original_sleep = self.sleep

            async def sleep(wait: float) -> None:
                due = time.time() + wait
                await original_sleep(wait)
                TRACE["wakes"].append(time.time() - due)

            self.sleep = sleep
        try:
            at = await original_acquire(self, tenant, **kwargs)
        except pacing.Defer as exc:
            TRACE["deferred"].append((time.time(), exc.delay))
            raise
        TRACE["slots"].append((at, time.time()))
        return at

    async def throttled(self: Any, tenant: str) -> float:
        rate = await original_throttled(self, tenant)
        TRACE["throttled"].append((time.time(), rate))
        return rate

    original_reserve = pacing.TenantPacer._reserve

    async def reserve(self: Any, tenant: str, slots: Any, now: float) -> None:
        before = len(slots.times)
        await original_reserve(self, tenant, slots, now)
        TRACE["reserved"].append((time.time(), len(slots.times) - before))

    pacing.TenantPacer.acquire = acquire  # type: ignore[method-assign]
    pacing.TenantPacer.throttled = throttled  # type: ignore[method-assign]
    pacing.TenantPacer._reserve = reserve  # type: ignore[method-assign]
    original_send = httpx.AsyncClient.send

    async def send(self: Any, request: Any, **kwargs: Any) -> Any:
        if "/v3/" not in str(request.url):
            return await original_send(self, request, **kwargs)
        started = time.time()
        response = await original_send(self, request, **kwargs)
        TRACE["connector"].append((started, time.time(), response.status_code))
        return response

    httpx.AsyncClient.send = send  # type: ignore[method-assign]

    # The Runtime's Connector calls go over its own aiohttp session.
    from proactive.teams.connector import ConnectorClient

    original_aiohttp = ConnectorClient._aiohttp

    async def over_aiohttp(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        started = time.time()
        answer = await original_aiohttp(self, method, url, *args, **kwargs)
        TRACE["connector"].append((started, time.time(), answer[0]))
        return answer

    ConnectorClient._aiohttp = over_aiohttp  # type: ignore[method-assign]


def _kind(method: str, url: str) -> str:
    path = url.split("?", 1)[0]
    if "/v3/" in path:
        return f"connector {method}"
    if "/messages" in path:  # queue messages: /<account>/<queue>/messages[/<id>]
        return "queue " + {"GET": "receive", "POST": "send", "DELETE": "delete",
                           "PUT": "update"}.get(method, method)
    if path.endswith("()"):  # tables: /<account>/<table>()?$filter=...
        return "table query"
    if path.endswith(")"):  # /<account>/<table>(PartitionKey='..',RowKey='..')
        return "table " + {"GET": "point read", "PUT": "replace/upsert", "PATCH": "merge",
                           "MERGE": "merge", "DELETE": "delete"}.get(method, method)
    if method == "POST" and not path.endswith("/Tables"):
        return "table insert"
    return f"other {method}"


def install() -> None:
    from azure.core.pipeline import AsyncPipeline

    original_run = AsyncPipeline.run

    async def run(self: Any, request: Any, **kwargs: Any) -> Any:
        COUNTS[_label(request.method, request.url)] += 1
        return await original_run(self, request, **kwargs)

    AsyncPipeline.run = run  # type: ignore[method-assign]

    import httpx

    original_send = httpx.AsyncClient.send

    async def send(self: Any, request: Any, **kwargs: Any) -> Any:
        COUNTS[_label(request.method, str(request.url))] += 1
        return await original_send(self, request, **kwargs)

    httpx.AsyncClient.send = send  # type: ignore[method-assign]

    # The hot-path tables bypass azure-core: count proactive.storage.table_rest's requests
    # (one call per HTTP request, retries included) by the same labels.
    from proactive.storage.table_rest import RestTableClient

    original_request = RestTableClient._request

    async def request(self: Any, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        COUNTS[_label(method, self._base + path)] += 1
        return await original_request(self, method, path, *args, **kwargs)

    RestTableClient._request = request  # type: ignore[method-assign]

    # The Runtime's Connector calls go over its own aiohttp session, not httpx.
    from proactive.teams.connector import ConnectorClient

    original_aiohttp = ConnectorClient._aiohttp

    async def over_aiohttp(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        COUNTS[_label(method, url)] += 1
        return await original_aiohttp(self, method, url, *args, **kwargs)

    ConnectorClient._aiohttp = over_aiohttp  # type: ignore[method-assign]


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    profile = ""
    if argv[:1] == ["--profile"]:
        profile, argv = argv[1], argv[2:]
    if argv[:1] == ["--no-tenant-pacer"]:
        argv = argv[1:]
        import time

        from proactive.delivering import pacing

        async def acquire(self: Any, tenant: str, **kwargs: Any) -> float:
            return time.time()

        pacing.TenantPacer.acquire = acquire  # type: ignore[method-assign]
    install()
    if TRACE_FILE:
        install_trace()
    from proactive.cli import main as cli_main

    profiler = None
    if profile:
        import cProfile
        import time

        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
    try:
        return cli_main(["host", *argv])
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        with open(out, "w") as f:
            json.dump(dict(COUNTS), f)
        if TRACE_FILE:
            with open(TRACE_FILE, "w") as f:
                json.dump(TRACE, f)


if __name__ == "__main__":
    raise SystemExit(main())
