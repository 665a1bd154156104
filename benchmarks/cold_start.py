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

from benchmarks._common import PYTHON, REPO, figure, header, median, note

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
    top = importtime_top()
    if top:
        note("largest imports it adds (-X importtime, cumulative): " + ", ".join(
            f"{name} {us / 1000:.2f} ms" for us, name in top[:6]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
