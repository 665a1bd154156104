"""NCRONTAB / cron schedules: parsing and the next occurrence. Pure, cheap to
import; used by the local Functions host (timer triggers) and by scheduled
messages (`proactive.contract.schedule.spec`).

Six fields `sec min hour day month dow` (Sunday is 0 or 7), or classic five
fields (seconds 0), or a .NET TimeSpan interval ("hh:mm:ss"). As in NCrontab,
day of month and day of week must both match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_CRON_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


@dataclass(frozen=True)
class Schedule:
    text: str
    fields: tuple[frozenset[int], ...] = ()  # sec, min, hour, day, month, dow (Sunday=0)
    interval: timedelta | None = None  # TimeSpan schedules ("hh:mm:ss")


def parse_timespan(value: str | float) -> timedelta:
    """A .NET TimeSpan as host.json writes it ("[d.]hh:mm[:ss[.f]]"); a number is seconds."""
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    m = re.fullmatch(r"\s*(?:(\d+)\.)?(\d+):(\d+)(?::(\d+(?:\.\d+)?))?\s*", value)
    if not m:
        raise ValueError(f"not a TimeSpan: {value!r}")
    days, hours, minutes, seconds = m.groups()
    return timedelta(days=int(days or 0), hours=int(hours), minutes=int(minutes),
                     seconds=float(seconds or 0))


# One comma-separated item: `*`, `5` or `1-5`, optionally with a step `/2`.
# ASCII digits only: int() also reads "+5", "1_0" and other scripts' digits.
_ITEM = re.compile(r"(?P<span>\*|[0-9]{1,2}(?:-[0-9]{1,2})?)(?:/(?P<step>[0-9]{1,2}))?")


def _cron_field(text: str, lo: int, hi: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        m = _ITEM.fullmatch(part)
        if m is None:
            raise ValueError(f"{part!r} is not a number, range or '*', with an optional '/step'")
        span, step = m["span"], m["step"]
        if span == "*":
            first, last = lo, hi
        elif "-" in span:
            first, last = (int(x) for x in span.split("-", 1))
        else:  # "5/10" runs from 5 to the end of the range
            first = int(span)
            last = hi if step else first
        if not lo <= first <= last <= hi or (step and int(step) < 1):
            raise ValueError(f"{part!r} is outside {lo}-{hi}")
        values.update(range(first, last + 1, int(step or 1)))
    return frozenset(values)


def parse_schedule(text: str) -> Schedule:
    """Six-field NCRONTAB (`sec min hour day month dow`) or a TimeSpan interval."""
    text = text.strip()
    if ":" in text and " " not in text:
        if (interval := parse_timespan(text)) <= timedelta(0):
            raise ValueError(f"schedule interval must be positive: {text!r}")
        return Schedule(text, interval=interval)
    parts = text.split()
    if len(parts) == 5:  # the host takes classic five-field cron too (seconds = 0)
        parts = ["0", *parts]
    if len(parts) != 6:
        raise ValueError(f"NCRONTAB needs 6 fields (sec min hour day month dow): {text!r}")
    try:
        fields = [_cron_field(p, lo, hi) for p, (lo, hi) in zip(parts, _CRON_RANGES, strict=True)]
    except ValueError as exc:
        raise ValueError(f"bad NCRONTAB schedule {text!r}: {exc}") from exc
    fields[5] = frozenset(d % 7 for d in fields[5])  # 7 is Sunday too
    return Schedule(text, tuple(fields))


def next_occurrence(schedule: str | Schedule, after: datetime) -> datetime:
    """The first occurrence strictly after `after`, in its time zone (a naive
    `after` gives naive wall times). As in NCrontab, both day and day of week
    must match."""
    sched = parse_schedule(schedule) if isinstance(schedule, str) else schedule
    if sched.interval is not None:
        return after + sched.interval
    secs, mins, hours, days, months, dows = sched.fields
    t = after.replace(microsecond=0) + timedelta(seconds=1)
    limit = after + timedelta(days=366 * 50)  # Feb 29 on a given weekday recurs within 28 years
    while t < limit:  # skip by the largest unit that doesn't match
        if t.month not in months:
            t = t.replace(year=t.year + t.month // 12, month=t.month % 12 + 1, day=1,
                          hour=0, minute=0, second=0)
        elif t.day not in days or (t.weekday() + 1) % 7 not in dows:
            t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
        elif t.hour not in hours:
            t = t.replace(minute=0, second=0) + timedelta(hours=1)
        elif t.minute not in mins:
            t = t.replace(second=0) + timedelta(minutes=1)
        elif t.second not in secs:
            t += timedelta(seconds=1)
        else:
            return t
    raise ValueError(f"schedule {sched.text!r} never fires")
