"""CPU of checking a schedule and finding its first occurrence, for the cases of
issue 16 §3: an hourly/minutely INTERVAL that never meets its days, a batch of
25 of them (what one API request may carry), a cron whose start is in 1800, and
extreme dates. For an A/B, run it also on a checkout of the code before
(`git archive <rev> proactive | tar -x -C /tmp/old`, copy this file to
/tmp/old/benchmarks/, run it there) at the same moment.

`python -m benchmarks.schedule_rules` prints a table (CPU seconds, best of 3)
and the machine's load, which matters: figures are only comparable within a run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

ISSUE_RULE = "FREQ=MINUTELY;INTERVAL=7;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO;BYHOUR=23;BYMINUTE=59"
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def _first(schedule: dict[str, Any]) -> None:
    from proactive.scheduling import Plan, ScheduleError, parse_spec

    try:
        spec = parse_spec(schedule)
        Plan(spec, spec.timezone or "UTC").first(NOW)
    except ScheduleError:
        pass


def _batch(schedule: dict[str, str], count: int) -> None:
    for _ in range(count):
        _first(schedule)


CASES: list[tuple[str, Callable[[], None]]] = [
    ("issue rule, with start (refused)",
     lambda: _first({"rrule": ISSUE_RULE, "start": "2026-01-01T00:00"})),
    ("issue rule, no start (refused when scheduled)", lambda: _first({"rrule": ISSUE_RULE})),
    ("batch of 25 issue rules", lambda: _batch({"rrule": ISSUE_RULE}, 25)),
    ("cron '0 9 * * 1' from 1800", lambda: _first({"cron": "0 9 * * 1",
                                                    "start": "1800-01-01T00:00"})),
    ("cron '* * * * *' from 1800", lambda: _first({"cron": "* * * * *",
                                                    "start": "1800-01-01T00:00"})),
    ("at 9999-12-31T23:59:59.5Z (refused)", lambda: _first({"at": "9999-12-31T23:59:59.5Z"})),
    ("local year 1 in Asia/Tokyo (refused)",
     lambda: _first({"local": "0001-01-01T00:00", "timezone": "Asia/Tokyo"})),
]


def measure(work: Callable[[], None], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best


def main() -> int:
    print(f"schedule rules: CPU s, best of 3; load {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    for name, work in CASES:
        print(f"  {name:<48} {measure(work):8.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
