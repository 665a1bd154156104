"""The occurrences of a schedule in a time zone: the first one, and the one
after each. Pure: no I/O, no clock (callers pass `now`).

Rules run on *wall times* in their zone (`rrules`, `cron`), and each wall time
becomes an instant by the daylight-saving rules of `zones.to_instant`. A
series never fires twice at one instant, so a repeated hour fires once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo

from proactive.contract.schedule import cron
from proactive.contract.schedule.errors import ScheduleError
from proactive.contract.schedule.rrules import Rule, can_match_a_day, split_rrule
from proactive.contract.schedule.spec import Spec, Until, check_cron, parse_until
from proactive.contract.schedule.walls import wall_times
from proactive.contract.schedule.zones import ONE_SECOND, iso_wall, load_zone, to_instant, wall_of

# Occurrences a series may have before `now` when it is scheduled (a rule
# started long ago); past this, give a later start.
MAX_PAST_OCCURRENCES = 100_000


@dataclass(frozen=True)
class Occurrence:
    wall: datetime  # naive wall time in the plan's zone (UTC for 'at')
    instant: datetime  # UTC
    seq: int = 1  # 1-based position in the series


class Plan:
    """A schedule in a resolved time zone: its first occurrence, and the one
    after each occurrence."""

    def __init__(self, spec: Spec, timezone: str) -> None:
        self.spec = spec
        self.timezone = timezone
        self.zone = load_zone(timezone)

    @cached_property
    def _until(self) -> Until | None:
        return parse_until(self.spec.until) if self.spec.until else None

    @cached_property
    def _rule(self) -> Rule:
        return split_rrule(self.spec.rule)[0]

    def _walls(self, start: datetime, after: datetime | None,
               resume: datetime | None = None) -> Iterator[datetime]:
        """The rule's wall times from the series' `start`, or after `after`;
        `resume`: from the period holding it on (skipping those before)."""
        if self.spec.kind == "rrule":
            yield from wall_times(self._rule, start, after=after, resume=resume)
            return
        sched = check_cron(self.spec.rule, start, check_fires=False)
        if after is not None:
            t = after
        elif resume is not None and resume > start:  # a cron has no grid: any point will do
            t = resume - ONE_SECOND
        elif start > datetime.min:
            t = start - ONE_SECOND
        else:
            raise ScheduleError(f"a cron can't start at {start.isoformat()}, the first "
                                f"second there is: give a later 'start'")
        while True:
            try:
                t = cron.next_occurrence(sched, t)
            except (ValueError, OverflowError):  # never fires again within 50 years
                return
            yield t

    def _ended(self, wall: datetime, instant: datetime, seq: int) -> bool:
        if self.spec.count is not None and seq > self.spec.count:
            return True
        until = self._until
        if until is None:
            return False
        if until.instant is not None:
            return instant > until.instant
        if until.wall is not None:
            return wall > until.wall
        assert until.day is not None
        return wall.date() > until.day

    def _series(self, start: datetime, after: Occurrence | None,
                resume: datetime | None = None) -> Iterator[Occurrence]:
        """Occurrences of the series from `start` (from `resume` on, when given:
        then `seq` counts from there), or those after `after`, each at a later
        instant than the one before."""
        seq = 1 if after is None else after.seq + 1
        last = None if after is None else to_instant(after.wall, self.zone)
        for wall in self._walls(start, None if after is None else after.wall, resume):
            instant = to_instant(wall, self.zone)
            if last is not None and instant <= last:
                continue  # a skipped hour folded it onto an instant already used
            if self._ended(wall, instant, seq):
                return
            yield Occurrence(wall, instant, seq)
            last = instant
            seq += 1

    def first(self, now: datetime) -> Occurrence | None:
        """The first occurrence at or after `now` (a one-off: its time, even
        if past: it goes out at once). None if the series has ended; a
        ScheduleError if it never fires from its start (without a start in
        the spec: `default_start`)."""
        spec = self.spec
        if spec.kind == "at":
            assert spec.at is not None
            return Occurrence(spec.at.replace(tzinfo=None), spec.at)
        if spec.kind == "local":
            assert spec.wall is not None
            return Occurrence(spec.wall, to_instant(spec.wall, self.zone))
        start = spec.start or default_start(now, self.zone)
        if spec.kind == "rrule" and not can_match_a_day(self._rule):
            raise ScheduleError(f"the RRULE {spec.rule!r} never fires: no day of the "
                                f"calendar matches its BYxxx parts")
        if next(self._walls(start, None), None) is None:  # bounded: see rrules
            raise ScheduleError(f"the {spec.kind} {spec.rule!r} never fires from its start "
                                f"{iso_wall(start)}")
        floor = now.replace(microsecond=0)
        # Without a count, what came before now doesn't matter: the search
        # starts a day back (more than a daylight-saving shift), not at a
        # start that may be centuries ago. With one, past occurrences count.
        resume = None
        if spec.count is None:
            near = wall_of(now - timedelta(days=1), self.zone)
            resume = near if near > start else None
        for n, occ in enumerate(self._series(start, None, resume)):
            if occ.instant >= floor:
                return occ
            if n >= MAX_PAST_OCCURRENCES:
                raise ScheduleError(f"more than {MAX_PAST_OCCURRENCES} occurrences lie between "
                                    f"'start' and now: give a later 'start'")
        return None

    def after(self, occ: Occurrence, now: datetime) -> Occurrence | None:
        """The next occurrence once `occ` has fired at `now`: the first after
        both. Occurrences missed meanwhile (downtime) are not fired one by one."""
        if not self.spec.recurring:
            return None
        floor = max(occ.instant, now.replace(microsecond=0))
        for nxt in self.following(occ, limit=None):
            if nxt.instant > floor:
                return nxt
        return None

    def following(self, occ: Occurrence, limit: int | None = 10_000) -> Iterator[Occurrence]:
        """The occurrences after `occ` (after its wall time: if the zone changed
        since it fired, the same wall time in the new zone is not another
        occurrence), in order, at most `limit`. A series is continued from its
        start (without one: from `occ`), so it keeps the original's periods."""
        if not self.spec.recurring:
            return
        for n, nxt in enumerate(self._series(self.spec.start or occ.wall, occ)):
            if limit is not None and n >= limit:
                return
            yield nxt


def default_start(now: datetime, zone: ZoneInfo) -> datetime:
    """Where a series without a `start` starts: the first whole minute at or
    after `now`, as a wall time of `zone`. Not the minute `now` is in: that
    minute's occurrence is already past, and it would use up one of the
    series' `count` without a delivery (a count counts deliveries)."""
    wall = wall_of(now, zone)
    minute = wall.replace(second=0, microsecond=0)
    return minute if minute == wall else minute + timedelta(minutes=1)


def lateness(due: datetime, now: datetime) -> float:
    """Seconds an occurrence went out after its time (0 when on time)."""
    return max(0.0, math.floor((now - due).total_seconds() * 1000) / 1000)
