"""Hourly and minutely rules, a day at a time: skip to the next day their grid
meets, by arithmetic, instead of letting dateutil walk every day between. Pure.

A FREQ=HOURLY or MINUTELY rule fires at the points of a grid (its start, then
every INTERVAL hours or minutes) that its BYxxx parts allow. dateutil finds the
next one by walking the days from the last: with days that come rarely and an
INTERVAL that rarely or never meets them
(`FREQ=MINUTELY;INTERVAL=7;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO;BYHOUR=23;BYMINUTE=59`)
that is 146,097 days of work, seconds of CPU, to find nothing. Here the days
the day parts allow come from a yearly rule (one dateutil period per year), and
whether the grid meets one is a remainder: a day whose first grid offset is `o`
(units since the start) holds a grid point at a period `p` of the day when
(o + p) % INTERVAL == 0. dateutil then runs for that day only, from a grid
point, so the wall times are exactly its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from proactive.contract.schedule.rrules import (
    _DAY_PARTS,
    DAYS,
    HOURLY,
    MINUTELY,
    Rule,
    _run,
    _truncate,
)

ONE_DAY = timedelta(days=1)
_LAST_DAY = datetime(9999, 12, 1)  # as rrules: dateutil's last month is left alone


def applies(rule: Rule) -> bool:
    """Whether `wall_times` should go a day at a time (hourly and minutely
    rules without BYSETPOS, which counts within a period)."""

    return rule.freq in (HOURLY, MINUTELY) and rule.get("BYSETPOS") is None


def _unit(rule: Rule) -> int:

    return 60 if rule.freq == HOURLY else 1


def _periods(rule: Rule) -> list[int]:
    """The periods of a day (hours, or minutes of the day) the rule's BYHOUR
    and BYMINUTE allow; a rule with its start's defaults written out."""

    hours = sorted(set(rule.numbers("BYHOUR"))) or list(range(24))
    if rule.freq == HOURLY:
        return hours
    minutes = sorted(set(rule.numbers("BYMINUTE"))) or list(range(60))
    return [h * 60 + m for h in hours for m in minutes]


def _days(rule: Rule, first: datetime, horizon: datetime) -> Iterator[datetime]:
    """The days from `first` (midnight) up to `horizon` that the day parts allow."""

    parts = [(name, value) for name, value in rule.parts if name in _DAY_PARTS]
    if not parts:
        day = first
        while day < horizon:
            yield day
            day += ONE_DAY
        return
    if not any(name in ("BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY") for name, _ in parts):
        # A yearly rule with BYMONTH alone takes its day of the month from its
        # start: every day of those months is meant here.
        parts.append(("BYMONTHDAY", ",".join(str(d) for d in range(1, 32))))
    probe = Rule((("FREQ", "YEARLY"), ("WKST", DAYS[rule.wkst]), *parts,
                  ("BYHOUR", "0"), ("BYMINUTE", "0"), ("BYSECOND", "0")))
    for day in _run(probe, first):
        if day >= horizon:
            return
        yield day


def next_day(rule: Rule, start: datetime, begin: datetime, horizon: datetime
             ) -> datetime | None:
    """The start of the first period (a grid point; the one holding `begin`
    at the earliest) on the first day (from `begin`'s) that the day parts allow
    and the grid meets at an allowed period; None when there is none before
    `horizon`. The caller drops wall times before `begin`. `rule` has its start's
    defaults written out; `start` lays out the grid."""

    unit, n = _unit(rule), rule.interval
    origin = _truncate(start, rule.freq)
    periods = _periods(rule)
    meets = {p % n for p in periods}  # a day meets the grid when -offset is one of these
    floor = _truncate(begin, rule.freq)  # begin's period: it may hold times from begin on
    every_day = not any(name in _DAY_PARTS for name, _ in rule.parts)
    for seen, day in enumerate(_days(rule, datetime(begin.year, begin.month, begin.day),
                                     min(horizon, _LAST_DAY))):
        offset = int((day - origin).total_seconds()) // 60 // unit  # whole units: exact
        if day < floor:  # begin's own day: only its periods from begin on
            firsts = [p for p in periods if (offset + p) % n == 0
                      and day + timedelta(minutes=p * unit) >= floor]
            if firsts:
                return day + timedelta(minutes=firsts[0] * unit)
        elif (-offset) % n in meets:
            p = next(p for p in periods if (offset + p) % n == 0)
            return day + timedelta(minutes=p * unit)
        if every_day and seen > n:  # the remainders repeat every n days: never
            return None
    return None


def day_walls(rule: Rule, point: datetime) -> Iterator[datetime]:
    """dateutil's wall times of the day of `point` (a grid point), from it."""

    end = datetime(point.year, point.month, point.day) + ONE_DAY
    for wall in _run(rule, point):
        if wall >= end:
            return
        yield wall
