"""`send --watch`, `install --watch` and `progress --watch`: a live bar (rich) with rate, ETA and
the counts by reason, ending with the final state.

The end: the send's `state` is `done`, `failed` (an audience could not be
read) or `cancelled`, as the progress row says; the row turns final by itself
once every page is split and every person counted (reading it settles it), so
the counters alone never end the watch early (a later page may still come).
Not at a terminal, one JSON line per change instead of a bar, and the final
progress as JSON at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

FINAL = ("done", "cancelled", "failed")
# Counters of recipients with a result (proactive/storage/progress.py; an
# `install` counts installed / already_installed instead of sent).
FINISHED = ("sent", "failed", "skipped", "installed", "already_installed", "unknown")
Fetch = Callable[[], "dict[str, Any] | None"]


def add_watch(cmd: argparse.ArgumentParser, what: str) -> None:
    """--watch, one word for one idea on send, install and progress; --wait
    (what send and install called it first) still works, unlisted."""
    cmd.add_argument("--watch", action="store_true", help=what)
    cmd.add_argument("--wait", dest="watch", action="store_true", help=argparse.SUPPRESS)
    cmd.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                     help="with --watch: seconds between looks (default 1)")


def settled(progress: dict[str, Any]) -> bool:
    return progress.get("state") in FINAL


def reasons(counts: dict[str, Any]) -> str:
    parts = [f"{k.split('_', 1)[1].replace('_', '-')} {v}" for k, v in sorted(counts.items())
             if k.startswith(("failed_", "skipped_")) and v]
    return ", ".join(parts)


def _done_words(counts: dict[str, Any]) -> str:
    if counts.get("installed") or counts.get("already_installed"):
        return (f"installed {counts.get('installed', 0)} already "
                f"{counts.get('already_installed', 0)}")
    # A crash or a lost answer left these unknown (README "Exactly once, as far
    # as Teams allows"): ambiguous ones may have two copies, unknown ones none.
    unsure = "".join(f" {name} {counts[name]}" for name in ("unknown", "ambiguous")
                     if counts.get(name))
    return f"sent {counts.get('sent', 0)}{unsure}"


def state_of(progress: dict[str, Any]) -> str:
    return str(progress.get("state"))


def watch(fetch: Fetch, key: str, *, interval: float = 1.0,
          sleep: Callable[[float], None] = time.sleep, missing_after: float = 0.0) -> int:
    """Poll `fetch` until the send settles; 0 when it did, 1 if there is no such
    send after `missing_after` seconds of looking (0: wait for it to appear, as
    `send --wait` does for its own message)."""
    looks = int(missing_after / interval) + 1 if missing_after > 0 else 0
    if looks:
        fetch = _or_missing(fetch, looks)
    try:
        if sys.stdout.isatty():
            return _bar(fetch, key, interval, sleep)
        return _lines(fetch, key, interval, sleep)
    except _Missing:
        print(f"error: no send with key {key!r} (looked for {missing_after:g} s)",
              file=sys.stderr)
        return 1


class _Missing(Exception):
    pass


def _or_missing(fetch: Fetch, looks: int) -> Fetch:
    seen = {"missing": 0}

    def fetched() -> dict[str, Any] | None:
        progress = fetch()
        if progress is None:
            seen["missing"] += 1
            if seen["missing"] >= looks:
                raise _Missing
        return progress

    return fetched


def _lines(fetch: Fetch, key: str, interval: float, sleep: Callable[[float], None]) -> int:
    last: dict[str, Any] | None = None
    while True:
        progress = fetch()
        if progress is not None and progress != last:
            print(json.dumps(progress, default=str), flush=True)
            last = progress
        if progress is not None and settled(progress):
            why = {"detail": progress["detail"]} if progress.get("detail") else {}
            print(json.dumps({"key": key, "state": state_of(progress), **why}), flush=True)
            return 0
        sleep(interval)


def _bar(fetch: Fetch, key: str, interval: float, sleep: Callable[[float], None]) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=False)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TaskProgressColumn(), TextColumn("{task.fields[rate]}/s"),
               TimeRemainingColumn(), TextColumn("{task.fields[why]}"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(key, total=None, rate="-", why="waiting for the send to start")
        while True:
            progress = fetch()
            if progress is not None:
                counts = progress.get("counts", {})
                done = sum(int(counts.get(k, 0)) for k in FINISHED)
                speed = bar.tasks[0].speed
                bar.update(task, total=int(counts.get("queued", 0)) or None, completed=done,
                           rate=f"{speed:.1f}" if speed else "-",
                           why=f"{_done_words(counts)} failed {counts.get('failed', 0)} "
                               f"skipped {counts.get('skipped', 0)}  {reasons(counts)}")
                if settled(progress):
                    break
            sleep(interval)
    from rich.markup import escape

    why = f" ({progress['detail']})" if progress.get("detail") else ""  # e.g. no-recipients
    console.print(f"{escape(key)}: [bold]{state_of(progress)}[/bold]{escape(why)}")
    return 0
