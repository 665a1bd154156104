"""Schedules of outbox sends: parsing, time zones, daylight saving and the
occurrences of a series. Pure: no I/O, no clock (callers pass `now`).

Four kinds, exactly one per schedule object (see README "Scheduling"):

    {"at": "2026-12-01T09:00:00Z"}                      once, at a UTC instant
    {"local": "2026-12-01T09:00", "timezone"?: ...}     once, at a wall time
    {"rrule": "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0",
     "start"?, "timezone"?, "until"?, "count"?}         recurring (RFC 5545)
    {"cron": "0 9 * * 1-5", "start"?, "timezone"?,
     "until"?, "count"?}                                recurring (cron)

No "timezone" means the recipient's (or the default setting). Recurrence
rules run on *wall times* in their zone, and each wall time becomes an instant
by the daylight-saving rules of `to_instant`: a wall time that does not exist
(spring forward) moves forward to the first valid instant, the moment the
clocks jump; an ambiguous one (fall back) is the first of the two. A series
never fires twice at one instant, so a repeated hour fires once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

from proactive.scheduling import cron

KINDS = ("at", "local", "rrule", "cron")
MAX_RULE = 1000
MAX_ZONE = 100
MAX_COUNT = 100_000
# Occurrences a series may have before `now` when it is scheduled (a rule
# started long ago); past this, give a later start.
MAX_PAST_OCCURRENCES = 100_000
# Room for the occurrence suffix ":YYYY-MM-DDTHH:MM:SSZ" in a 200-char key.
MAX_SERIES_KEY = 200 - 21

# The JSON Schema uses the same patterns (anchored there with ^...$).
_DAY = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_OFFSET = r"(Z|[+-][0-9]{2}:[0-9]{2})"
WALL = _DAY + r"T[0-9]{2}:[0-9]{2}(:[0-9]{2})?"
INSTANT = _DAY + r"T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?" + _OFFSET
UNTIL = _DAY + r"(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?" + _OFFSET + "?)?"
_FIELDS = {
    "at": {"at"},
    "local": {"local", "timezone"},
    "rrule": {"rrule", "start", "timezone", "until", "count"},
    "cron": {"cron", "start", "timezone", "until", "count"},
}
_OCCURRENCE_KEY = re.compile(r"(?P<series>.+):(?P<at>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}"
                             r"(?::[0-9]{2})?Z)")
_ONE_SECOND = timedelta(seconds=1)
# RFC 5545 ranges of the numeric BYxxx parts (0 is never allowed where negatives are).
_RANGES = {"BYSECOND": (0, 59), "BYMINUTE": (0, 59), "BYHOUR": (0, 23), "BYMONTH": (1, 12),
           "BYMONTHDAY": (-31, 31), "BYYEARDAY": (-366, 366), "BYWEEKNO": (-53, 53),
           "BYSETPOS": (-366, 366), "INTERVAL": (1, 10_000)}


class ScheduleError(ValueError):
    """A schedule that can't be used. `reason` is `schema` for a wrong shape
    (what the JSON Schema refuses too) or `invalid-schedule` for a well-formed
    one that does not work (unknown zone, bad RRULE or cron, no occurrence)."""

    def __init__(self, detail: str, reason: str = "invalid-schedule") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# --- time zones and daylight saving ------------------------------------------

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
    instant = wall.replace(tzinfo=zone).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    # In a gap: fold=0 read it with the offset before the jump (an instant after
    # it), fold=1 with the offset after (an instant before it). Find the jump.
    lo = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    hi = instant
    if lo >= hi:  # not a gap after all (can't happen with tzdata); be safe
        return hi
    before = lo.astimezone(zone).utcoffset()
    while hi - lo > _ONE_SECOND:
        mid = lo + timedelta(seconds=(hi - lo).total_seconds() // 2)
        if mid.astimezone(zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi


def wall_of(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def ceil_second(moment: datetime) -> datetime:
    return moment if not moment.microsecond else \
        moment.replace(microsecond=0) + _ONE_SECOND


def iso_instant(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_wall(wall: datetime) -> str:
    return wall.strftime("%Y-%m-%dT%H:%M:%S")


def occurrence_key(series: str, instant: datetime) -> str:
    """The delivery key of one occurrence of a series: `standup:2026-12-01T08:00Z`
    (seconds only when not zero)."""
    instant = instant.astimezone(UTC)
    text = instant.strftime("%Y-%m-%dT%H:%M:%SZ" if instant.second else "%Y-%m-%dT%H:%MZ")
    return f"{series}:{text}"


def split_occurrence_key(key: str) -> tuple[str, datetime] | None:
    """(series key, instant) when `key` has the shape of an occurrence key."""
    m = _OCCURRENCE_KEY.fullmatch(key)
    if not m:
        return None
    text = m["at"][:-1]
    try:
        instant = datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        return None
    return m["series"], instant


# --- the schedule object ------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    kind: str  # at | local | rrule | cron
    at: datetime | None = None  # 'at': the UTC instant (whole seconds)
    wall: datetime | None = None  # 'local': the wall time
    rule: str = ""  # rrule (without COUNT/UNTIL) or cron text
    start: datetime | None = None  # recurring: first wall time (None: when scheduled)
    timezone: str = ""  # '' = the recipient's zone
    until: str = ""  # ISO: with an offset an instant, without a wall time, or a date
    count: int | None = None

    @property
    def recurring(self) -> bool:
        return self.kind in ("rrule", "cron")

    @property
    def zoned(self) -> bool:
        """Whether the schedule reads wall times (so needs a zone)."""
        return self.kind != "at"

    def to_json(self) -> dict[str, Any]:
        """The canonical schedule object (valid against the JSON Schema)."""
        if self.kind == "at":
            assert self.at is not None
            return {"at": iso_instant(self.at)}
        out: dict[str, Any] = {}
        if self.kind == "local":
            assert self.wall is not None
            out["local"] = iso_wall(self.wall)
        else:
            out[self.kind] = self.rule
            if self.start is not None:
                out["start"] = iso_wall(self.start)
            if self.until:
                out["until"] = self.until
            if self.count is not None:
                out["count"] = self.count
        if self.timezone:
            out["timezone"] = self.timezone
        return out

    def with_start(self, start: datetime) -> Spec:
        return replace(self, start=start.replace(microsecond=0, tzinfo=None, fold=0))


def parse_spec(data: Any) -> Spec:
    """Validate a schedule object; ScheduleError says what is wrong. Shape
    first (reason `schema`, as the JSON Schema), then meaning."""
    if not isinstance(data, Mapping):
        raise ScheduleError("'schedule' must be an object", "schema")
    kinds = [kind for kind in KINDS if kind in data]
    if len(kinds) != 1:
        raise ScheduleError("'schedule' needs exactly one of 'at', 'local', 'rrule', 'cron'",
                            "schema")
    kind = kinds[0]
    extra = set(data) - _FIELDS[kind]
    if extra:
        raise ScheduleError(f"'schedule' with '{kind}' does not take: "
                            f"{', '.join(sorted(extra))}", "schema")
    wall_shape = "a wall time without offset, like 2026-12-01T09:00"
    timezone = _string(data, "timezone", limit=MAX_ZONE)
    if kind == "at":
        at = _string(data, "at", pattern=INSTANT,
                     shape="a date-time with an offset, like 2026-12-01T09:00:00Z")
    elif kind == "local":
        local = _string(data, "local", pattern=WALL, shape=wall_shape)
    else:
        rule = _string(data, kind, limit=MAX_RULE, required=True)
        start_text = _string(data, "start", pattern=WALL, shape=wall_shape)
        until = _string(data, "until", pattern=UNTIL,
                        shape="a date, a wall time, or a date-time with an offset")
        count = data.get("count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool)
                                  or not 1 <= count <= MAX_COUNT):
            raise ScheduleError(f"'count' must be a whole number from 1 to {MAX_COUNT}",
                                "schema")
    # The shape is right: now what it means.
    if timezone:
        load_zone(timezone)
    if kind == "at":
        return Spec("at", at=ceil_second(_instant(at, "at")))
    if kind == "local":
        return Spec("local", wall=_wall(local, "local"), timezone=timezone)
    start = _wall(start_text, "start") if start_text else None
    if until:
        _until(until)
    if kind == "cron":
        _cron(rule)
        spec = Spec("cron", rule=" ".join(rule.split()), start=start, timezone=timezone,
                    until=until, count=count)
    else:
        body, rule_until, rule_count = _rrule_parts(rule)
        if (rule_until and until) or (rule_count is not None and count is not None):
            raise ScheduleError("give UNTIL / COUNT either in the rrule or as 'until' / "
                                "'count', not both")
        until, count = until or rule_until, count if count is not None else rule_count
        spec = Spec("rrule", rule=body, start=start, timezone=timezone, until=until,
                    count=count)
    if until and count is not None:
        raise ScheduleError("a recurrence takes 'until' or 'count', not both (RFC 5545)")
    # The rule must be usable: building it checks what dateutil / cron refuse.
    Plan(spec, timezone or "UTC").check()
    return spec


def _string(data: Mapping[str, Any], name: str, *, limit: int = 100, pattern: str = "",
            shape: str = "", required: bool = False) -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise ScheduleError(f"'{name}' is required", "schema")
        return ""
    if not isinstance(value, str) or not value.strip():
        raise ScheduleError(f"'schedule.{name}' must be a non-empty string", "schema")
    if pattern and not re.fullmatch(pattern, value):
        raise ScheduleError(f"'schedule.{name}' must be {shape}", "schema")
    if len(value) > limit:
        raise ScheduleError(f"'schedule.{name}' is longer than {limit} characters", "schema")
    return value


def _instant(text: str, name: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError as exc:
        raise ScheduleError(f"'{name}' is not a real date-time: {text!r} ({exc})") from exc


def _wall(text: str, name: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ScheduleError(f"'{name}' is not a real date-time: {text!r} ({exc})") from exc


@dataclass(frozen=True)
class _Until:
    instant: datetime | None = None
    wall: datetime | None = None  # inclusive
    day: date | None = None  # inclusive: the whole local day


def _until(text: str) -> _Until:
    if "T" not in text:
        try:
            return _Until(day=date.fromisoformat(text))
        except ValueError as exc:
            raise ScheduleError(f"'until' is not a real date: {text!r}") from exc
    if text.endswith("Z") or re.search(r"[+-][0-9]{2}:[0-9]{2}$", text):
        return _Until(instant=_instant(text, "until"))
    return _Until(wall=_wall(text, "until"))


def _rrule_parts(text: str) -> tuple[str, str, int | None]:
    """The RRULE body without COUNT and UNTIL, and those as 'until' / 'count'."""
    body = text.strip()
    if "\n" in body or "\r" in body or "DTSTART" in body.upper():
        raise ScheduleError("'rrule' is one RRULE (like FREQ=WEEKLY;BYDAY=MO;BYHOUR=9): "
                            "give the first time as 'start' and the zone as 'timezone'")
    if body.upper().startswith("RRULE:"):
        body = body[6:]
    parts: list[str] = []
    until, count = "", None
    names: set[str] = set()
    for part in body.split(";"):
        name, sep, value = part.partition("=")
        name = name.strip().upper()
        if not sep or not name or not value.strip():
            raise ScheduleError(f"invalid RRULE part {part!r} (NAME=VALUE;...)")
        if name in names:
            raise ScheduleError(f"invalid RRULE: {name} appears twice")
        names.add(name)
        value = value.strip()
        if name == "UNTIL":
            until = _rrule_until(value)
        elif name == "COUNT":
            if not value.isdigit() or not 1 <= int(value) <= MAX_COUNT:
                raise ScheduleError(f"invalid RRULE: COUNT must be 1 to {MAX_COUNT}")
            count = int(value)
        else:
            _check_range(name, value)
            parts.append(f"{name}={value.upper()}")
    if "FREQ" not in names:
        raise ScheduleError("invalid RRULE: FREQ is required (like FREQ=DAILY)")
    return ";".join(parts), until, count


def _check_range(name: str, value: str) -> None:
    """Refuse out-of-range numbers here: dateutil takes some (BYMONTHDAY=32)
    and would then search until the year 9999 for an occurrence."""
    if name not in _RANGES:
        return
    lo, hi = _RANGES[name]
    for item in value.split(","):
        try:
            number = int(item)
        except ValueError:
            raise ScheduleError(f"invalid RRULE: {name}={value} (whole numbers)") from None
        if not lo <= number <= hi or (lo < 0 and number == 0):
            raise ScheduleError(f"invalid RRULE: {name} values are {lo} to {hi}"
                                f"{' except 0' if lo < 0 else ''} (got {number})")


def _rrule_until(value: str) -> str:
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})(Z?))?", value.upper())
    if not m:
        raise ScheduleError(f"invalid RRULE UNTIL {value!r} (YYYYMMDD or YYYYMMDDTHHMMSS[Z])")
    y, mo, d, h, mi, s, z = m.groups()
    text = f"{y}-{mo}-{d}" if h is None else f"{y}-{mo}-{d}T{h}:{mi}:{s}{z}"
    _until(text)
    return text


def _cron(text: str) -> cron.Schedule:
    fields = text.split()
    if len(fields) not in (5, 6):
        raise ScheduleError(f"invalid cron {text!r}: 5 fields (minute hour day month "
                            f"day-of-week) or 6 (with seconds first)")
    try:
        sched = cron.parse_schedule(text)
    except ValueError as exc:
        raise ScheduleError(f"invalid cron {text!r}: {exc}") from exc
    if len(sched.fields[0]) != 1:
        raise ScheduleError(f"invalid cron {text!r}: it would fire more than once a minute")
    return sched


# --- occurrences ---------------------------------------------------------------

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
    def _until(self) -> _Until | None:
        return _until(self.spec.until) if self.spec.until else None

    @cached_property
    def _cron(self) -> cron.Schedule:
        return _cron(self.spec.rule)

    def _rrule(self, dtstart: datetime) -> Any:
        from dateutil.rrule import rrulestr

        try:
            rule = rrulestr(self.spec.rule, dtstart=dtstart, cache=False)
        except Exception as exc:  # dateutil raises ValueError, TypeError, KeyError...
            raise ScheduleError(f"invalid RRULE {self.spec.rule!r}: {exc}") from exc
        if getattr(rule, "_freq", 0) > 5:  # SECONDLY
            raise ScheduleError("invalid RRULE: FREQ=SECONDLY fires more than once a minute")
        if len(getattr(rule, "_bysecond", None) or ()) > 1:
            raise ScheduleError("invalid RRULE: more than one BYSECOND fires more than "
                                "once a minute")
        return rule

    def check(self) -> None:
        """Refuse a rule dateutil or the cron parser can't use, or one that
        never fires."""
        if self.spec.kind == "rrule":
            start = self.spec.start or datetime(2000, 1, 1)
            if next(iter(self._rrule(start)), None) is None:
                raise ScheduleError(f"the RRULE {self.spec.rule!r} never fires")
        elif self.spec.kind == "cron":
            try:
                cron.next_occurrence(self._cron, self.spec.start or datetime(2000, 1, 1))
            except ValueError as exc:
                raise ScheduleError(f"the cron {self.spec.rule!r} never fires") from exc

    def _walls(self, base: datetime) -> Iterator[datetime]:
        """The rule's wall times from `base` on (inclusive). `base` is the
        start or an earlier occurrence: rebasing an RRULE on one of its own
        occurrences yields the same later occurrences (its defaults, period
        and BYSETPOS all line up), and it saves iterating from the start."""
        if self.spec.kind == "rrule":
            yield from self._rrule(base)
            return
        t = base - _ONE_SECOND
        while True:
            try:
                t = cron.next_occurrence(self._cron, t)
            except ValueError:  # never fires again within 50 years
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

    def _series(self, base: datetime, seq: int, last: datetime | None) -> Iterator[Occurrence]:
        """Occurrences from wall time `base` (whose position is `seq`), each at
        a later instant than the one before (`last`)."""
        for wall in self._walls(base):
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
        if past: it goes out at once). None if the series has ended."""
        spec = self.spec
        if spec.kind == "at":
            assert spec.at is not None
            return Occurrence(spec.at.replace(tzinfo=None), spec.at)
        if spec.kind == "local":
            assert spec.wall is not None
            return Occurrence(spec.wall, to_instant(spec.wall, self.zone))
        start = spec.start or wall_of(now, self.zone).replace(second=0, microsecond=0)
        floor = now.replace(microsecond=0)
        for n, occ in enumerate(self._series(start, 1, None)):
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
        occurrence), in order, at most `limit`."""
        if not self.spec.recurring:
            return
        series = self._series(occ.wall, occ.seq, None)
        next(series, None)  # occ itself
        for n, nxt in enumerate(series):
            if limit is not None and n >= limit:
                return
            yield nxt


def lateness(due: datetime, now: datetime) -> float:
    """Seconds an occurrence went out after its time (0 when on time)."""
    return max(0.0, math.floor((now - due).total_seconds() * 1000) / 1000)
