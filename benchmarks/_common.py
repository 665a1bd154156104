"""Helpers shared by the benchmarks: child processes (the Connector emulator,
Azurite), CPU time of other processes read from /proc, and printing figures
with their ratio to a target.

Only loopback addresses are used; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import selectors
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
_TICKS = os.sysconf("SC_CLK_TCK")


# --- printing -----------------------------------------------------------------

def header(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def figure(label: str, value: float, unit: str, *, target: float | None = None,
           lower_is_better: bool = True, fmt: str = "{:,.1f}", indent: int = 2) -> None:
    """One figure, with its ratio to the target (ratio < 1 is better for a
    'lower is better' target, > 1 for a 'higher is better' one)."""
    text = f"{' ' * indent}{label:<{46 - indent}} {fmt.format(value):>12} {unit}"
    if target:
        ratio = value / target
        ok = ratio <= 1 if lower_is_better else ratio >= 1
        sign = "≤" if lower_is_better else "≥"
        text += (f"   target {sign} {fmt.format(target)} {unit}: ratio {ratio:.2f}"
                 f" ({'meets' if ok else 'MISSES'} target)")
    print(text, flush=True)


def note(text: str) -> None:
    print(f"  {text}", flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- CPU time of any process (Linux /proc) -------------------------------------

def proc_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process (0.0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces: split after its closing ')'.
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            continue
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its live descendants (bounded walk)."""
    total, todo, seen = 0.0, [pid], set[int]()
    while todo and len(seen) < 256:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += proc_cpu_seconds(p)
        todo += _children(p)
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already in user
    return (total - idle) / _TICKS, total / _TICKS


def machine_load_note(before: tuple[float, float], after: tuple[float, float],
                      ours: float) -> str:
    """How busy the machine was between two machine_cpu() readings, and how
    much of that was not the benchmark's own processes (`ours` CPU seconds)."""
    busy, total = after[0] - before[0], after[1] - before[1]
    cores = os.cpu_count() or 1
    if total <= 0:
        return "machine load: unknown"
    wall = total / cores
    others = max(0.0, busy - ours) / wall
    return (f"machine: {busy / wall:.2f} of {cores} cores busy, "
            f"{others:.2f} cores by processes outside this benchmark"
            + ("  <- other load: wall-time figures are pessimistic" if others > 0.2 else ""))


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- the Connector emulator in its own process ------------------------------------

@dataclass
class Emulator:
    proc: subprocess.Popen[str]
    url: str  # "http://127.0.0.1:PORT/"

    def admin(self, name: str, body: dict[str, Any] | None = None,
              query: str = "") -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}_admin/{name}{query}", data=data,
            headers={"Content-Type": "application/json"},
            method="GET" if body is None else "POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def counters(self) -> dict[str, int]:
        return dict(self.admin("state", query="?deliveries=0")["counters"])

    def reset(self) -> None:
        self.admin("reset", {"everything": True})

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid)


@contextmanager
def emulator_process(*extra: str) -> Iterator[Emulator]:
    """`python -m proactive emulator --port 0` in a child process, so its CPU
    is not counted in the benchmark's process."""
    proc = subprocess.Popen(
        [PYTHON, "-m", "proactive", "emulator", "--host", "127.0.0.1", "--port", "0", *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True)
    try:
        url = ""
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        with selectors.DefaultSelector() as selector:  # bounded wait for its first lines
            selector.register(proc.stdout, selectors.EVENT_READ)
            while not url and time.monotonic() < deadline:
                if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    break
                line = proc.stdout.readline()
                if not line:
                    break
                if "serviceUrl:" in line:  # "Connector emulator serviceUrl: http://..."
                    url = line.split("serviceUrl:", 1)[1].strip()
        if not url:
            raise RuntimeError("the Connector emulator did not start")
        if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
            raise RuntimeError(f"emulator is not on loopback: {url}")
        yield Emulator(proc, url if url.endswith("/") else url + "/")
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """Stop a child this module started (its own process group)."""
    from proactive_devtools.processes import stop_process

    stop_process(proc, timeout)


def run_module(module: str, *args: str) -> int:
    """Run `python -m <module>` as a child, output passed through."""
    return subprocess.call([PYTHON, "-m", module, *args], cwd=REPO)
