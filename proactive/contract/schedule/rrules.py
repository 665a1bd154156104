"""RRULE text (RFC 5545): its parts checked strictly, and its wall times,
computed by python-dateutil with bounded work. Pure: no I/O, no clock.

Two things dateutil does not do for us:

- Refuse what RFC 5545 forbids. dateutil takes `BYDAY=10TU` and fails later
  with an IndexError, and Python's int() reads `+5`, `1_0` or Arabic-Indic
  digits; every part is matched against its RFC grammar here first.
- Stop. dateutil searches until the year 9999 for an occurrence that never
  comes (`FREQ=MINUTELY;BYMONTH=2;BYMONTHDAY=30`: seconds of CPU). So a rule
  is first probed for any day its BYxxx parts allow (a yearly rule over one
  400-year cycle of the Gregorian calendar, after which it repeats), and every
  search runs in windows moved by whole 400-year cycles next to the year 9999,
  where dateutil ends by itself.

A series is continued from its true start: dateutil's first period begins at
DTSTART, so a rule restarted at one of its occurrences can differ from the
original (`FREQ=WEEKLY;BYDAY=MO,TU;BYSETPOS=2` restarted on a Tuesday skips a
week). Restarts therefore happen only at the start of a period of the
original's grid, with the defaults the start gave (BYHOUR, BYMINUTE ...)
written out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from proactive.contract.schedule.errors import ScheduleError

MAX_COUNT = 100_000
FREQS = ("YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY", "SECONDLY")
YEARLY, MONTHLY, WEEKLY, DAILY, HOURLY, MINUTELY = range(6)
DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
# RFC 5545 ranges of the numeric parts (0 is never allowed where negatives are).
_RANGES = {"BYSECOND": (0, 59), "BYMINUTE": (0, 59), "BYHOUR": (0, 23), "BYMONTH": (1, 12),
           "BYMONTHDAY": (-31, 31), "BYYEARDAY": (-366, 366), "BYWEEKNO": (-53, 53),
           "BYSETPOS": (-366, 366), "INTERVAL": (1, 10_000)}
_DAY_PARTS = ("BYMONTH", "BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY")
_NUMBER = re.compile(r"[+-]?[0-9]{1,6}")  # ASCII digits only: int() takes more
_WEEKDAY = re.compile(r"(?P<n>[+-]?[0-9]{1,3})?(?P<day>MO|TU|WE|TH|FR|SA|SU)")
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # the longest each month has
# Gregorian calendar: the same days and weekdays every 400 years.
CYCLE = 400
_LAST_CYCLE = 9999 - CYCLE + 1  # 9600: the last whole cycle dateutil can reach
# How far a search looks for the next occurrence. Beyond: there is none.
SEARCH_YEARS = CYCLE
_END = datetime(9999, 12, 1)


@dataclass(frozen=True)
class Rule:
    """An RRULE without COUNT and UNTIL, every part checked, names upper case."""

    parts: tuple[tuple[str, str], ...]

    @property
    def text(self) -> str:
        return ";".join(f"{name}={value}" for name, value in self.parts)

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.parts if key == name), None)

    @property
    def freq(self) -> int:
        return FREQS.index(self.get("FREQ") or "")

    @property
    def interval(self) -> int:
        return int(self.get("INTERVAL") or 1)

    @property
    def wkst(self) -> int:
        return DAYS.index(self.get("WKST") or "MO")

    def numbers(self, name: str) -> list[int]:
        value = self.get(name)
        return [int(item) for item in value.split(",")] if value else []

    def with_parts(self, **parts: str) -> Rule:
        known = dict(self.parts)
        known.update(parts)
        return Rule(tuple(known.items()))


def split_rrule(text: str) -> tuple[Rule, str, int | None]:
    """The checked rule, and its UNTIL (as 'until' text: a date, wall time or
    instant) and COUNT, which the series applies itself."""
    body = text.strip()
    if "\n" in body or "\r" in body or "DTSTART" in body.upper():
        raise ScheduleError("'rrule' is one RRULE (like FREQ=WEEKLY;BYDAY=MO;BYHOUR=9): "
                            "give the first time as 'start' and the zone as 'timezone'")
    if body.upper().startswith("RRULE:"):
        body = body[6:]
    parts: dict[str, str] = {}
    until, count = "", None
    for part in body.split(";"):
        name, sep, value = part.partition("=")
        name, value = name.strip().upper(), value.strip().upper()
        if not sep or not name or not value:
            raise ScheduleError(f"invalid RRULE part {part!r} (NAME=VALUE;...)")
        if name in parts or (name == "UNTIL" and until) or (name == "COUNT" and count):
            raise ScheduleError(f"invalid RRULE: {name} appears twice")
        if name == "UNTIL":
            until = _until(value)
        elif name == "COUNT":
            if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_COUNT:
                raise ScheduleError(f"invalid RRULE: COUNT must be 1 to {MAX_COUNT}")
            count = int(value)
        else:
            parts[name] = value
    if "FREQ" not in parts:
        raise ScheduleError("invalid RRULE: FREQ is required (like FREQ=DAILY)")
    rule = Rule(tuple(parts.items()))
    _check(rule)
    return rule, until, count


def _until(value: str) -> str:
    m = re.fullmatch(r"([0-9]{4})([0-9]{2})([0-9]{2})(?:T([0-9]{2})([0-9]{2})([0-9]{2})(Z?))?",
                     value)
    if not m:
        raise ScheduleError(f"invalid RRULE UNTIL {value!r} (YYYYMMDD or YYYYMMDDTHHMMSS[Z])")
    y, mo, d, h, mi, s, z = m.groups()
    return f"{y}-{mo}-{d}" if h is None else f"{y}-{mo}-{d}T{h}:{mi}:{s}{z}"


def _check(rule: Rule) -> None:
    """Each part by its RFC 5545 grammar and range; ScheduleError names it."""
    for name, value in rule.parts:
        if name == "FREQ":
            if value not in FREQS:
                raise ScheduleError(f"invalid RRULE: FREQ={value} (YEARLY, MONTHLY, WEEKLY, "
                                    f"DAILY, HOURLY or MINUTELY)")
            if value == "SECONDLY":
                raise ScheduleError("invalid RRULE: FREQ=SECONDLY fires more than once a minute")
        elif name == "WKST":
            if value not in DAYS:
                raise ScheduleError(f"invalid RRULE: WKST={value} (MO ... SU)")
        elif name == "BYDAY":
            _check_byday(rule, value)
        elif name in _RANGES:
            _check_numbers(name, value)
        else:
            raise ScheduleError(f"invalid RRULE: unknown part {name} (RFC 5545: FREQ, INTERVAL, "
                                f"WKST, BYxxx, COUNT, UNTIL)")
    if len(rule.numbers("BYSECOND")) > 1:
        raise ScheduleError("invalid RRULE: more than one BYSECOND fires more than "
                            "once a minute")
    positions = rule.numbers("BYSETPOS")
    if positions and all(abs(p) > _most_per_period(rule) for p in positions):
        raise ScheduleError(f"invalid RRULE: BYSETPOS={rule.get('BYSETPOS')} is beyond the "
                            f"{_most_per_period(rule)} times a period of the rule can have")
    months = rule.numbers("BYMONTH")
    days = rule.numbers("BYMONTHDAY")
    if months and days:
        longest = max(_MONTH_DAYS[m - 1] for m in months)
        if all(abs(d) > longest for d in days):
            raise ScheduleError(f"the RRULE never fires: BYMONTHDAY={rule.get('BYMONTHDAY')} "
                                f"falls in no month of BYMONTH={rule.get('BYMONTH')}")


def _most_per_period(rule: Rule) -> int:
    """An upper bound of the times one period of the rule holds (what
    BYSETPOS picks from): days in the period times times in a day."""
    freq = rule.freq
    weekdays = len({item[-2:] for item in (rule.get("BYDAY") or "").split(",") if item})
    only_weekdays = weekdays and not any(rule.get(name) for name in (
        "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO"))
    if freq == YEARLY:
        days = 366
    elif freq == MONTHLY:
        days = 5 * weekdays if only_weekdays else 31
    elif freq == WEEKLY:
        days = weekdays if only_weekdays else 7
    else:
        days = 1
    times = 1
    for name, finer_than in (("BYHOUR", HOURLY), ("BYMINUTE", MINUTELY), ("BYSECOND", 6)):
        if freq < finer_than:
            times *= max(1, len(set(rule.numbers(name))))
    return days * times


def _check_numbers(name: str, value: str) -> None:
    """Refuse out-of-range numbers here: dateutil takes some (BYMONTHDAY=32)
    and would then search until the year 9999 for an occurrence."""
    lo, hi = _RANGES[name]
    for item in value.split(","):
        if not _NUMBER.fullmatch(item) or (lo >= 0 and not item.isdigit()):
            raise ScheduleError(f"invalid RRULE: {name}={value} (whole numbers)")
        number = int(item)
        if not lo <= number <= hi or (lo < 0 and number == 0):
            raise ScheduleError(f"invalid RRULE: {name} values are {lo} to {hi}"
                                f"{' except 0' if lo < 0 else ''} (got {number})")


def _check_byday(rule: Rule, value: str) -> None:
    """Weekdays, each with an optional ordinal: the nth in the month (MONTHLY,
    or YEARLY with BYMONTH: 1 to 5) or the year (YEARLY: 1 to 53), and only
    there (RFC 5545: not with other FREQs, nor YEARLY with BYWEEKNO)."""
    freq = rule.get("FREQ")
    in_month = freq == "MONTHLY" or (freq == "YEARLY" and rule.get("BYMONTH") is not None)
    limit = 5 if in_month else 53
    for item in value.split(","):
        m = _WEEKDAY.fullmatch(item)
        if not m:
            raise ScheduleError(f"invalid RRULE: BYDAY={value} (weekdays MO ... SU, each "
                                f"optionally with an ordinal like 1MO or -1FR)")
        if m["n"] is None:
            continue
        if freq not in ("MONTHLY", "YEARLY"):
            raise ScheduleError(f"invalid RRULE: BYDAY={value}: an ordinal ({item}) needs "
                                f"FREQ=MONTHLY or YEARLY")
        if freq == "YEARLY" and rule.get("BYWEEKNO") is not None:
            raise ScheduleError(f"invalid RRULE: BYDAY={value}: an ordinal ({item}) can't be "
                                f"combined with BYWEEKNO")
        n = int(m["n"])
        if not 1 <= abs(n) <= limit:
            context = f"FREQ={freq}" + (" and BYMONTH" if freq == "YEARLY" and in_month else "")
            raise ScheduleError(f"invalid RRULE: BYDAY ordinals are 1 to {limit} or -{limit} to "
                                f"-1 with {context} (got {item})")


# --- dateutil -------------------------------------------------------------------------

def _dateutil(rule: Rule, dtstart: datetime) -> Any:
    from dateutil.rrule import rrulestr

    try:
        return rrulestr(rule.text, dtstart=dtstart, cache=False)
    except Exception as exc:  # dateutil raises ValueError, TypeError, KeyError...
        raise ScheduleError(f"invalid RRULE {rule.text!r}: {exc}") from exc


def can_match_a_day(rule: Rule) -> bool:
    """Whether any day of the calendar passes the rule's BYxxx day parts
    (BYMONTH, BYWEEKNO, BYYEARDAY, BYMONTHDAY, BYDAY), over one whole 400-year
    cycle. Cheap: a yearly rule, one dateutil period per year."""
    parts = {name: value for name, value in rule.parts if name in _DAY_PARTS}
    if not parts:
        return True
    if rule.freq == MONTHLY and "BYMONTH" not in parts and re.search(r"[0-9]", parts.get(
            "BYDAY", "")):
        parts["BYMONTH"] = ",".join(str(m) for m in range(1, 13))  # ordinals within a month
    if rule.freq > MONTHLY and "BYDAY" in parts:
        parts["BYDAY"] = re.sub(r"[+-]?[0-9]+", "", parts["BYDAY"])  # ignored there: weekdays
    probe = Rule((("FREQ", "YEARLY"), ("WKST", DAYS[rule.wkst]), *parts.items(),
                  ("BYHOUR", "0"), ("BYMINUTE", "0"), ("BYSECOND", "0")))
    return next(_run(probe, datetime(_LAST_CYCLE, 1, 1)), None) is not None


def _run(rule: Rule, dtstart: datetime) -> Iterator[datetime]:
    """dateutil's occurrences from `dtstart`; the end of its range ends them."""
    try:
        iterator = iter(_dateutil(rule, dtstart))
    except ScheduleError as exc:
        if "empty" in str(exc.__cause__):  # the INTERVAL never meets the BYxxx from here
            return
        raise
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except (ValueError, OverflowError):  # past 9999-12-31, or an empty interval combination
            return


def with_defaults(rule: Rule, start: datetime) -> Rule:
    """The rule with what it takes from its start written out (RFC 5545:
    parts not in the rule come from DTSTART; as dateutil reads them), so it
    means the same whatever DTSTART it is run from."""
    extra: dict[str, str] = {}
    freq = rule.freq
    if not any(rule.get(name) for name in ("BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY")):
        if freq == YEARLY:
            if rule.get("BYMONTH") is None:
                extra["BYMONTH"] = str(start.month)
            extra["BYMONTHDAY"] = str(start.day)
        elif freq == MONTHLY:
            extra["BYMONTHDAY"] = str(start.day)
        elif freq == WEEKLY:
            extra["BYDAY"] = DAYS[start.weekday()]
    if rule.get("BYHOUR") is None and freq < HOURLY:
        extra["BYHOUR"] = str(start.hour)
    if rule.get("BYMINUTE") is None and freq < MINUTELY:
        extra["BYMINUTE"] = str(start.minute)
    if rule.get("BYSECOND") is None:
        extra["BYSECOND"] = str(start.second)
    return rule.with_parts(**extra)


def period_start(rule: Rule, start: datetime, moment: datetime) -> datetime:
    """The start of the rule's period (of the grid its `start` and INTERVAL
    lay out) that is the last to begin at or before `moment`; `start` itself
    when that is the first period (which begins at `start`)."""
    freq, n = rule.freq, rule.interval
    if freq == YEARLY:
        year = moment.year - (moment.year - start.year) % n
        begin = datetime(year, 1, 1)
    elif freq == MONTHLY:
        months = moment.year * 12 + moment.month - 1
        months -= (months - (start.year * 12 + start.month - 1)) % n
        begin = datetime(months // 12, months % 12 + 1, 1)
    elif freq == WEEKLY:
        week = _week_start(moment, rule.wkst)
        weeks = (week - _week_start(start, rule.wkst)).days // 7
        begin = week - timedelta(weeks=weeks % n)
    else:
        unit = {DAILY: timedelta(days=1), HOURLY: timedelta(hours=1),
                MINUTELY: timedelta(minutes=1)}[freq]
        first = _truncate(start, freq)
        begin = first + unit * (((_truncate(moment, freq) - first) // unit) // n * n)
    return max(begin, start)


def _week_start(moment: datetime, wkst: int) -> datetime:
    day = datetime(moment.year, moment.month, moment.day)
    return day - timedelta(days=(day.weekday() - wkst) % 7)


def _truncate(moment: datetime, freq: int) -> datetime:
    if freq == DAILY:
        return datetime(moment.year, moment.month, moment.day)
    if freq == HOURLY:
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)
