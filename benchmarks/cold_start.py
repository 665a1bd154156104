"""Benchmark 3: cold start — what `import function_app` costs beyond
`import azure.functions` (which the Functions Python worker has loaded before
it imports the app).

Each run is a fresh interpreter: import azure.functions, then time
`import function_app` (wall and CPU) and read the RSS before and after from
/proc/self/status. Median of `--runs` runs. Then one more run under
`-X importtime` lists the modules the app import adds, largest first.

    .venv/bin/python -m benchmarks.cold_start [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess

from benchmarks._common import (
    CALIBRATION,
    PYTHON,
    REPO,
    figure,
    figure_rounds,
    header,
    machine_line,
    median,
    note,
)

TARGET_MS = 60.0

_PROBE = r"""
import json, sys, time

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

import azure.functions  # loaded by the Functions worker before the app
before_modules = set(sys.modules)
rss0, cpu0, t0 = rss(), time.process_time(), time.perf_counter()
import function_app
wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
added = sorted(set(sys.modules) - before_modules)
print(json.dumps({"ms": wall * 1000, "cpu_ms": cpu * 1000, "mb": rss() - rss0,
                  "modules": len(added),
                  "heavy": [m for m in added if m.split(".")[0] in (
                      "httpx", "aiohttp", "azure", "msal", "jwt", "cryptography",
                      "jsonschema", "requests", "urllib3")
                      and not m.startswith("azure.functions")]}))
"""


def probe() -> dict[str, object]:
    out = subprocess.run([PYTHON, "-c", _PROBE], cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


_FIRST_CALL = r"""
import json, sys, time
import azure.functions, function_app
t0, cpu0 = time.perf_counter(), time.process_time()
import proactive.worker, proactive.runtime, proactive.receiving.endpoint  # what the triggers import
import httpx, httpx_aiohttp, azure.data.tables.aio, azure.storage.queue.aio  # Runtime.create
print(json.dumps({"ms": (time.perf_counter() - t0) * 1000,
                  "cpu_ms": (time.process_time() - cpu0) * 1000}))
"""


def first_call_imports() -> float:
    """ms of the imports deferred to the first invocation (not part of the target)."""
    out = subprocess.run([PYTHON, "-c", _FIRST_CALL], cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["ms"])


_FIRST_INVOCATION = r"""
import asyncio, json, sys, time
import azure.functions as func
import function_app
from proactive import triggers

modules0, t0, cpu0 = len(sys.modules), time.perf_counter(), time.process_time()
asyncio.run(triggers.outbox(func.QueueMessage(id="cold-1", body=sys.argv[1].encode())))
print(json.dumps({"ms": (time.perf_counter() - t0) * 1000,
                  "cpu_ms": (time.process_time() - cpu0) * 1000,
                  "modules": len(sys.modules) - modules0, "total_modules": len(sys.modules)}))
"""


def first_invocations(runs: int) -> tuple[list[dict[str, float]], list[float], int]:
    """The first outbox invocation of fresh processes, for real: one send
    each, against Azurite and the Connector emulator (loopback), after
    `import function_app`. Returns the runs, the calibration of each round
    (interleaved) and how many were delivered."""
    import asyncio
    import os
    import uuid

    from benchmarks._common import calibrate, emulator_process
    from benchmarks.whole_path import app_settings, seed, send_message
    from proactive.config import Settings
    from proactive_devtools.processes import start_azurite

    azurite = start_azurite()
    out: list[dict[str, float]] = []
    calibration: list[float] = []
    try:
        with emulator_process() as emulator:
            values = app_settings(azurite.connection_string, uuid.uuid4().hex[:8], 50,
                                  emulator.url)
            asyncio.run(seed(Settings.from_env(values), emulator, runs, 1, []))
            delivered = 0
            for i in range(runs):
                calibration.append(asyncio.run(calibrate(emulator.url)))
                before = emulator.counters().get("delivered", 0)
                result = subprocess.run(
                    [PYTHON, "-c", _FIRST_INVOCATION, send_message(f"cold-{i}", i)],
                    cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
                    env={**os.environ, **values})
                out.append(json.loads(result.stdout.strip().splitlines()[-1]))
                delivered += emulator.counters().get("delivered", 0) - before
    finally:
        azurite.stop()
    return out, calibration, delivered


def importtime_top(limit: int = 12) -> list[tuple[int, str]]:
    """Cumulative µs of the modules `import function_app` loads (top level of
    what it adds), from `python -X importtime`."""
    code = "import azure.functions\nimport sys\nprint('--mark--', file=sys.stderr)\n" \
           "import function_app\n"
    out = subprocess.run([PYTHON, "-X", "importtime", "-c", code], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=True)
    lines = out.stderr.split("--mark--", 1)[-1].splitlines()
    rows: list[tuple[int, str]] = []
    for line in lines:
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line[12:].split("|")
        if not cumulative.strip().isdigit():
            continue
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        if depth == 1:  # what the app's own import pulls in directly
            rows.append((int(cumulative), name.strip()))
    return sorted(rows, reverse=True)[:limit]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cold_start", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    runs = [probe() for _ in range(max(1, args.runs))]
    header(f"Cold start: `import function_app` after `import azure.functions`, "
           f"median of {len(runs)} fresh processes")
    note(machine_line())
    figure_rounds("import function_app (wall), all runs", [float(str(r["ms"])) for r in runs],
                  "ms", fmt="{:,.1f}")
    figure("import function_app (wall)", median([float(str(r["ms"])) for r in runs]), "ms",
           target=TARGET_MS, fmt="{:,.2f}")
    figure("import function_app (CPU)", median([float(str(r["cpu_ms"])) for r in runs]), "ms",
           fmt="{:,.2f}")
    figure("RSS added", median([float(str(r["mb"])) for r in runs]), "MB", fmt="{:,.2f}")
    figure("modules added", median([float(str(r["modules"])) for r in runs]), "", fmt="{:,.0f}")
    heavy = runs[-1]["heavy"]
    note(f"heavy libraries imported at cold start: {heavy or 'none'}")
    deferred = median([first_call_imports() for _ in range(max(1, min(5, args.runs)))])
    figure("deferred to the first invocation (imports)", deferred, "ms", fmt="{:,.0f}")
    note("(the triggers import the SDKs lazily: the first message or activity pays that, "
         "not the cold start)")
    firsts, calibration, delivered = first_invocations(max(3, min(5, args.runs)))
    cal = median(calibration)
    figure_rounds(f"calibration: {CALIBRATION}", calibration, "µs", fmt="{:,.0f}")
    figure_rounds("first outbox invocation (CPU)", [r["cpu_ms"] for r in firsts], "ms",
                  fmt="{:,.0f}", calibration_us=cal, per_us=1000)
    figure_rounds("first outbox invocation (wall)", [r["ms"] for r in firsts], "ms",
                  fmt="{:,.0f}")
    figure_rounds("modules it imports", [r["modules"] for r in firsts], "", fmt="{:,.0f}")
    note(f"(one send each, to Azurite and the emulator: {delivered} of {len(firsts)} delivered; "
         f"storage round trips before it: benchmarks.storage_ops)")
    note(machine_line())
    top = importtime_top()
    if top:
        note("largest imports it adds (-X importtime, cumulative): " + ", ".join(
            f"{name} {us / 1000:.2f} ms" for us, name in top[:6]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
