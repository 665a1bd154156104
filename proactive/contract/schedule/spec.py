"""The `schedule` object of an outbox send: its shape and what it means,
checked once, when the message is parsed. Pure: no I/O, no clock.

Four kinds, exactly one per schedule object (see README "Scheduling"):

    {"at": "2026-12-01T09:00:00Z"}                      once, at a UTC instant
    {"local": "2026-12-01T09:00", "timezone"?: ...}     once, at a wall time
    {"rrule": "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0",
     "start"?, "timezone"?, "until"?, "count"?}         recurring (RFC 5545)
    {"cron": "0 9 * * 1-5", "start"?, "timezone"?,
     "until"?, "count"?}                                recurring (cron)

No "timezone" means the recipient's (or the default setting). A series
without "start" starts the minute it is scheduled: what depends on its start
(an INTERVAL lining up with a BYHOUR, say) is checked then, by
`recurrence.Plan.first`; what does not is checked here. Either way the check
is bounded (see `rrules`), and a problem is a ScheduleError, never another
exception.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from proactive.contract.schedule import cron
from proactive.contract.schedule.errors import ScheduleError
from proactive.contract.schedule.rrules import MAX_COUNT, Rule, can_match_a_day, split_rrule
from proactive.contract.schedule.zones import ceil_second, iso_instant, iso_wall, load_zone

__all__ = ["INSTANT", "KINDS", "MAX_SERIES_KEY", "UNTIL", "WALL", "ScheduleError", "Spec",
           "Until", "check_cron", "occurrence_key", "parse_spec", "parse_until",
           "split_occurrence_key"]

KINDS = ("at", "local", "rrule", "cron")
MAX_RULE = 1000
MAX_ZONE = 100
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
# A cron pattern repeats with the 400-year calendar and has no interval to
# line up with its start, so any start tells whether it fires.
_CRON_PROBE = datetime(2000, 1, 1)


# --- occurrence keys ------------------------------------------------------------------

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


# --- the schedule object ------------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    kind: str  # at | local | rrule | cron
    at: datetime | None = None  # 'at': the UTC instant (whole seconds)
    wall: datetime | None = None  # 'local': the wall time
    rule: str = ""  # rrule (checked, without COUNT/UNTIL) or cron text
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


def parse_spec(data: Any, *, check_fires: bool = True) -> Spec:
    """Validate a schedule object; ScheduleError says what is wrong. Shape
    first (reason `schema`, as the JSON Schema), then meaning. A schedule
    read back from storage was checked when it was scheduled: there
    `check_fires=False` skips looking for its first occurrence again."""
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
                            f"{', '.join(sorted(map(str, extra)))}", "schema")
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
        return Spec("at", at=_at(at))
    if kind == "local":
        return Spec("local", wall=_wall(local, "local"), timezone=timezone)
    start = _wall(start_text, "start") if start_text else None
    if until:
        parse_until(until)
    if kind == "cron":
        check_cron(rule, start or _CRON_PROBE, check_fires=check_fires)
        spec = Spec("cron", rule=" ".join(rule.split()), start=start, timezone=timezone,
                    until=until, count=count)
    else:
        parsed, rule_until, rule_count = split_rrule(rule)
        if rule_until:
            parse_until(rule_until)
        if (rule_until and until) or (rule_count is not None and count is not None):
            raise ScheduleError("give UNTIL / COUNT either in the rrule or as 'until' / "
                                "'count', not both")
        until, count = until or rule_until, count if count is not None else rule_count
        if check_fires:
            _check_rrule(parsed, start)
        spec = Spec("rrule", rule=parsed.text, start=start, timezone=timezone, until=until,
                    count=count)
    if until and count is not None:
        raise ScheduleError("a recurrence takes 'until' or 'count', not both (RFC 5545)")
    return spec


def _check_rrule(rule: Rule, start: datetime | None) -> None:
    """Refuse a rule no day can ever match; with a start, one that never fires
    from it (without, that waits for the start it gets when scheduled)."""
    if not can_match_a_day(rule):
        raise ScheduleError(f"the RRULE {rule.text!r} never fires: no day of the calendar "
                            f"matches its BYxxx parts")
    if start is not None:
        from proactive.contract.schedule.walls import wall_times

        if next(wall_times(rule, start), None) is None:
            raise ScheduleError(f"the RRULE {rule.text!r} never fires from its start "
                                f"{iso_wall(start)}")


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


def _at(text: str) -> datetime:
    """The instant of `at`, a fraction of a second rounded up (never early),
    however many digits it has (fromisoformat drops those past six)."""
    m = re.fullmatch(r"(?P<time>[^.]+)(?:\.(?P<fraction>[0-9]+))?(?P<offset>Z|[+-].+)", text)
    if m is None:  # can't happen after the INSTANT pattern; be safe
        raise ScheduleError(f"'at' is not a real date-time: {text!r}")
    instant = _instant(m["time"] + m["offset"], "at")
    try:
        if (m["fraction"] or "").strip("0"):
            instant += timedelta(seconds=1)
        return ceil_second(instant)
    except OverflowError:
        raise ScheduleError(f"'at' {text!r} rounds up past the last date "
                            f"(9999-12-31T23:59:59Z)") from None


def _instant(text: str, name: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ScheduleError(f"'{name}' is not a real date-time: {text!r} ({exc})") from exc


def _wall(text: str, name: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ScheduleError(f"'{name}' is not a real date-time: {text!r} ({exc})") from exc


@dataclass(frozen=True)
class Until:
    instant: datetime | None = None
    wall: datetime | None = None  # inclusive
    day: date | None = None  # inclusive: the whole local day


def parse_until(text: str) -> Until:
    if "T" not in text:
        try:
            return Until(day=date.fromisoformat(text))
        except ValueError as exc:
            raise ScheduleError(f"'until' is not a real date: {text!r}") from exc
    if text.endswith("Z") or re.search(r"[+-][0-9]{2}:[0-9]{2}$", text):
        return Until(instant=_instant(text, "until"))
    return Until(wall=_wall(text, "until"))


def check_cron(text: str, start: datetime, *, check_fires: bool = True) -> cron.Schedule:
    """The parsed cron; ScheduleError if it is not one or never fires from `start`."""
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
    if not check_fires:
        return sched
    try:
        cron.next_occurrence(sched, start)
    except (ValueError, OverflowError) as exc:
        raise ScheduleError(f"the cron {text!r} never fires") from exc
    return sched


def message_spec(schedule: Any, key: str) -> Spec:
    """An outbox message's `schedule` under its `key`, or InvalidMessage (the
    contract's error: the message is parked with why)."""
    from proactive.errors import InvalidMessage

    try:
        spec = parse_spec(schedule)
    except ScheduleError as exc:
        raise InvalidMessage(exc.reason, exc.detail) from exc
    if spec.recurring and len(key) > MAX_SERIES_KEY:
        raise InvalidMessage("schema", f"the 'key' of a recurring schedule is at most "
                                       f"{MAX_SERIES_KEY} characters (each occurrence's key "
                                       f"adds its time)")
    return spec
