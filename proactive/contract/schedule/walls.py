"""An RRULE's wall times from its start: dateutil's, in windows of whole
400-year cycles (so every search is bounded), and hourly or minutely rules a
day at a time (grid.py). Above rrules.py (parsing and checking) and grid.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from proactive.contract.schedule import grid
from proactive.contract.schedule.rrules import (
    _END,
    _LAST_CYCLE,
    CYCLE,
    DAILY,
    HOURLY,
    MINUTELY,
    MONTHLY,
    SEARCH_YEARS,
    WEEKLY,
    YEARLY,
    Rule,
    _run,
    _truncate,
    _week_start,
    period_start,
    with_defaults,
)


def wall_times(rule: Rule, start: datetime, *, after: datetime | None = None,
               resume: datetime | None = None) -> Iterator[datetime]:
    """The rule's wall times from its `start` on, or those after `after` (one
    of its occurrences), in order: what dateutil yields for the whole rule
    from `start`; with `resume`, those from the start of its period on.
    Ends when none comes within SEARCH_YEARS (or by 9999).
    Each window of the search costs at most one 400-year cycle of dateutil
    periods, whatever the rule."""
    rule = with_defaults(rule, start)
    if after is None and resume is not None and resume > start:
        begin = period_start(rule, start, resume)  # a period of the grid: exact from there
    elif after is None:
        begin = start
    elif rule.get("BYSETPOS") is None:
        begin = after  # an occurrence: its period's grid and defaults line up
    else:  # BYSETPOS counts within a whole period: restart where it begins
        begin = period_start(rule, start, after)
    if grid.applies(rule):  # hourly and minutely: a day at a time (grid.py)
        yield from _by_day(rule, start, begin, after)
        return
    floor = begin  # what earlier windows have not covered yet
    last = begin  # the last wall time yielded
    while begin.year <= 9999 and (begin - last).days <= SEARCH_YEARS * 366:
        # Move the window by whole cycles next to 9999, where dateutil stops by
        # itself; stop a month short (its last week may reach into 10000).
        shift = CYCLE * max(0, (_LAST_CYCLE - begin.year + CYCLE - 1) // CYCLE)
        if shift and floor.replace(year=floor.year + shift) >= _END:
            shift -= CYCLE
        cut = _END.replace(year=9999 - shift)
        if floor >= cut:
            return
        for wall in _run(rule, begin.replace(year=begin.year + shift)):
            wall = wall.replace(year=wall.year - shift)
            if wall >= cut:
                break
            if wall >= floor and (after is None or wall > after):
                last = wall
                yield wall
        if shift == 0:
            return
        # Go on from the last period to begin by the cut (whole), or the next.
        nxt: datetime | None = period_start(rule, start, cut)
        if nxt is not None and nxt <= begin:
            nxt = _next_period(rule, nxt)
        if nxt is None:
            return
        begin, floor = nxt, cut


def _by_day(rule: Rule, start: datetime, begin: datetime, after: datetime | None
            ) -> Iterator[datetime]:
    """wall_times of an hourly or minutely rule: the next day its grid meets
    (found by arithmetic), dateutil's wall times of that day, and on."""
    last = begin
    while True:
        point = grid.next_day(rule, start, begin, last + timedelta(days=SEARCH_YEARS * 366))
        if point is None:
            return
        for wall in grid.day_walls(rule, point):
            if wall >= begin and (after is None or wall > after):
                last = wall
                yield wall
        begin = datetime(point.year, point.month, point.day) + grid.ONE_DAY


def _next_period(rule: Rule, begin: datetime) -> datetime | None:
    """The start of the period `INTERVAL` periods after `begin`; None past 9999."""
    freq, n = rule.freq, rule.interval
    if freq == YEARLY:
        return datetime(begin.year + n, 1, 1) if begin.year + n <= 9999 else None
    if freq == MONTHLY:
        months = begin.year * 12 + begin.month - 1 + n
        return datetime(months // 12, months % 12 + 1, 1) if months // 12 <= 9999 else None
    unit = {WEEKLY: timedelta(weeks=1), DAILY: timedelta(days=1), HOURLY: timedelta(hours=1),
            MINUTELY: timedelta(minutes=1)}[freq]
    first = _week_start(begin, rule.wkst) if freq == WEEKLY else _truncate(begin, freq)
    try:
        return first + unit * n
    except OverflowError:
        return None
