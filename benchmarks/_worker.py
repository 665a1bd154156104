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
import sys
from collections import Counter
from typing import Any

COUNTS: Counter[str] = Counter()


def _label(method: str, url: str) -> str:
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


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    profile = ""
    if argv[:1] == ["--profile"]:
        profile, argv = argv[1], argv[2:]
    if argv[:1] == ["--no-tenant-pacer"]:
        argv = argv[1:]
        import time

        from proactive import pacing

        async def acquire(self: Any, tenant: str) -> float:
            return time.time()

        pacing.TenantPacer.acquire = acquire  # type: ignore[method-assign]
    install()
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


if __name__ == "__main__":
    raise SystemExit(main())
