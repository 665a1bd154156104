"""Helpers shared by the benchmarks: child processes (the Connector emulator,
Azurite), CPU time of other processes read from /proc, and printing figures
with their ratio to a target.

Only loopback addresses are used; every wait is bounded.
"""

from __future__ import annotations

import json
import os
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
    from proactive_devtools.processes import start_emulator

    proc, url = start_emulator(*extra)
    try:
        yield Emulator(proc, url)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """Stop a child this module started (its own process group)."""
    from proactive_devtools.processes import stop_process

    stop_process(proc, timeout)


def run_module(module: str, *args: str) -> int:
    """Run `python -m <module>` as a child, output passed through."""
    return subprocess.call([PYTHON, "-m", module, *args], cwd=REPO)


# --- reproducible figures: rounds, the machine, a calibration ----------------------

def spread(values: Sequence[float], fmt: str = "{:,.1f}") -> str:
    """'median [min–max, n rounds]' of one figure's rounds."""
    if not values:
        return "n/a"
    return (f"{fmt.format(median(values))} [{fmt.format(min(values))}–"
            f"{fmt.format(max(values))}, {len(values)} rounds]")


def figure_rounds(label: str, values: Sequence[float], unit: str, *,
                  target: float | None = None, lower_is_better: bool = True,
                  fmt: str = "{:,.1f}", calibration_us: float | None = None,
                  per_us: float = 1.0, indent: int = 2) -> None:
    """One figure measured in several interleaved rounds: median, range, the
    ratio of the median to the target, and (for a CPU figure, `per_us` µs per
    unit) the median as a multiple of the run's calibration, which is what
    compares across machines."""
    value = median(values)
    text = f"{' ' * indent}{label:<{46 - indent}} {spread(values, fmt)} {unit}"
    if calibration_us:
        text += f"  = {value * per_us / calibration_us:,.2f}× calibration"
    if target:
        ratio = value / target
        ok = ratio <= 1 if lower_is_better else ratio >= 1
        sign = "≤" if lower_is_better else "≥"
        text += (f"   target {sign} {fmt.format(target)}: ratio {ratio:.2f}"
                 f" ({'meets' if ok else 'MISSES'})")
    print(text, flush=True)


def machine_line() -> str:
    """The machine as the run sees it: cores, cores this process may use, load."""
    one, five, _ = os.getloadavg()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    cores = os.cpu_count() or 1
    return (f"machine: {cores} cores ({usable} usable here), load average {one:.2f} (1 min) "
            f"{five:.2f} (5 min), Python {sys.version.split()[0]}"
            + ("  <- loaded: absolute figures are pessimistic, read the calibration ratios"
               if one > cores * 0.5 else ""))


CALIBRATION = "bare aiohttp POST to the emulator"


async def calibrate(service_url: str, sends: int = 600, concurrency: int = 16) -> float:
    """CPU µs of this process per bare aiohttp POST of a small activity to the
    local emulator (after 100 warm-up posts): the unit every CPU figure of the
    run is also given in, so figures compare across machines."""
    import asyncio

    import aiohttp

    url = f"{service_url.rstrip('/')}/v3/conversations/a:calibration/activities"
    body = json.dumps({"type": "message", "text": "calibration"}).encode()
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        async def post(count: int) -> None:
            left = [count]

            async def worker() -> None:
                while left[0] > 0:
                    left[0] -= 1
                    async with session.post(url, data=body, headers=headers) as response:
                        json.loads(await response.read())

            await asyncio.gather(*(worker() for _ in range(concurrency)))

        await post(100)
        cpu0 = time.process_time()
        await post(sends)
        return (time.process_time() - cpu0) / sends * 1e6


# --- storage operations counted by Azurite itself (its --debug log) ------------------

def azurite_ops(log: Path, start: int = 0, end: int | None = None,
                prefix: str = "") -> tuple[list[tuple[str, str]], int]:
    """The storage operations Azurite logged in its debug log between byte
    offsets `start` and `end` (default: now), in order, as (table or '',
    operation) with the table's `prefix` removed; and the end offset."""
    stop_at = [start]
    ops = list(stream_azurite_ops(log, start, end, prefix, stop_at))
    return ops, stop_at[0]


def stream_azurite_ops(log: Path, start: int = 0, end: int | None = None, prefix: str = "",
                       stop_at: list[int] | None = None) -> Iterator[tuple[str, str]]:
    """azurite_ops one at a time, reading the log a line at a time (it is
    large at 100k recipients); `stop_at[0]` is set to the offset after the
    last whole line read. Azurite logs 'tableName=X' and 'Operation=Y' once
    per request, keyed by its request id: counted from outside, whatever
    client made them."""
    tables: dict[str, str] = {}
    offset = start
    with open(log, "rb") as f:
        f.seek(start)
        for raw in f:
            # A request's lines may straddle `end`: only whole lines count.
            if not raw.endswith(b"\n") or (end is not None and offset + len(raw) > end):
                break
            offset += len(raw)
            parts = raw.decode(errors="replace").split(" ", 3)
            if len(parts) < 4:
                continue
            request, message = parts[1], parts[3]
            if "tableName=" in message:
                name = message.rsplit("tableName=", 1)[1].strip()
                tables[request] = name[len(prefix):] if prefix and name.startswith(prefix) \
                    else name
            elif "DispatchMiddleware: Operation=" in message:
                yield tables.pop(request, ""), message.rsplit("=", 1)[1].strip()
    if stop_at is not None:
        stop_at[0] = offset


def op_kind(table: str, operation: str) -> str:
    """A readable kind: 'deliveries insert', 'queue dequeue'..."""
    names = {"Table_InsertEntity": "insert", "Table_UpdateEntity": "replace",
             "Table_MergeEntity": "merge", "Table_QueryEntitiesWithPartitionAndRowKey":
             "point read", "Table_QueryEntities": "query", "Table_Batch": "batch",
             "Table_Create": "create table", "Table_DeleteEntity": "delete",
             "Messages_Dequeue": "dequeue", "Messages_Enqueue": "enqueue",
             "MessageId_Delete": "delete", "MessageId_Update": "update",
             "Queue_Create": "create queue", "Queue_GetProperties": "properties",
             "Messages_Peek": "peek"}
    name = names.get(operation, operation)
    if operation.startswith(("Messages", "MessageId", "Queue_")):
        return f"queue {name}"
    if operation == "Table_Create":  # the name is in the body
        return name
    return f"{table or 'table'} {name}"


def calibration_rounds(rounds: int = 3) -> list[float]:
    """The calibration on an emulator of its own (for benchmarks whose own
    emulator has limits, or that have none): `rounds` measurements."""
    import asyncio

    with emulator_process() as emulator:
        return [asyncio.run(calibrate(emulator.url)) for _ in range(rounds)]
