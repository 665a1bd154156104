"""Time zones and daylight saving: wall times to instants and back. Pure.

A wall time that does not exist (spring forward) moves forward to the first
valid instant, the moment the clocks jump; an ambiguous one (fall back) is the
first of the two (README "Scheduling").
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from proactive.contract.schedule.errors import ScheduleError

ONE_SECOND = timedelta(seconds=1)


def load_zone(name: str) -> ZoneInfo:
    """The IANA zone, or ScheduleError naming it."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*", name or "") \
            or name.lower() in ("localtime", "posixrules"):
        raise ScheduleError(f"unknown time zone {name!r} (an IANA name like 'Europe/Berlin')")
    try:
        return ZoneInfo(name)
    except Exception as exc:  # ZoneInfoNotFoundError, ValueError, OSError
        raise ScheduleError(f"unknown time zone {name!r} (an IANA name like "
                            f"'Europe/Berlin')") from exc


def zone_or_none(name: str) -> ZoneInfo | None:
    try:
        return load_zone(name)
    except ScheduleError:
        return None


def to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a naive wall time in `zone`.

    Exists once: that instant. Ambiguous (fall back, the hour repeats): the
    first of the two. Doesn't exist (spring forward, the clocks jump): the
    first valid instant after it, i.e. the moment of the jump (02:30 in
    New York on the spring-forward day is 03:00 EDT)."""
    wall = wall.replace(tzinfo=None, fold=0)
    try:
        instant = wall.replace(tzinfo=zone).astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        raise _out_of_range(iso_wall(wall), zone) from None
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    # In a gap: fold=0 read it with the offset before the jump (an instant after
    # it), fold=1 with the offset after (an instant before it). Find the jump.
    try:
        lo = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    except OverflowError:
        raise _out_of_range(iso_wall(wall), zone) from None
    hi = instant
    if lo >= hi:  # not a gap after all (can't happen with tzdata); be safe
        return hi
    before = lo.astimezone(zone).utcoffset()
    while hi - lo > ONE_SECOND:
        mid = lo + timedelta(seconds=(hi - lo).total_seconds() // 2)
        if mid.astimezone(zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi


def wall_of(instant: datetime, zone: ZoneInfo) -> datetime:
    try:
        return instant.astimezone(zone).replace(tzinfo=None, fold=0)
    except OverflowError:
        raise _out_of_range(iso_instant(instant), zone) from None


def ceil_second(moment: datetime) -> datetime:
    if not moment.microsecond:
        return moment
    try:
        return moment.replace(microsecond=0) + ONE_SECOND
    except OverflowError:  # 9999-12-31T23:59:59.5Z: the next second is year 10000
        raise ScheduleError(f"{moment.isoformat()} rounds up past the last date "
                            f"(9999-12-31T23:59:59Z)") from None


def _out_of_range(text: str, zone: ZoneInfo) -> ScheduleError:
    return ScheduleError(f"{text} in {zone.key} falls outside the dates an instant can have "
                         f"(years 1 to 9999 in UTC)")


def iso_instant(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_wall(wall: datetime) -> str:
    return wall.strftime("%Y-%m-%dT%H:%M:%S")
