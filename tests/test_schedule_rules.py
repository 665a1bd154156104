"""RRULE and cron rules as outside testers attacked them: a series continued
from any occurrence is the whole rule's, RFC 5545 bounds are refused with a
reason (never another exception, for any input), a rule that never fires is
refused cheaply, a series without a start is checked from the start it gets,
and cron / `at` text is read strictly. No storage; the clock is passed in."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dateutil.rrule import rrulestr
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proactive.scheduling import Plan, ScheduleError, parse_spec
from proactive.scheduling.recurrence import Occurrence


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def refused(schedule: dict[str, Any]) -> ScheduleError:
    with pytest.raises(ScheduleError) as caught:
        parse_spec(schedule)
    return caught.value


def cpu_seconds(work: Callable[[], Any]) -> float:
    started = time.process_time()
    with contextlib.suppress(ScheduleError):
        work()
    return time.process_time() - started


# --- 1. a series continued from occurrence N is the rule's own --------------------------

@pytest.mark.parametrize("rule", [
    "FREQ=WEEKLY;BYDAY=MO,TU;BYSETPOS=2;BYHOUR=9;BYMINUTE=0",  # the tester's case
    "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE,FR;BYSETPOS=2,-1;BYHOUR=9;BYMINUTE=0",
    "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=2,3;BYHOUR=8;BYMINUTE=30",
    "FREQ=MONTHLY;BYMONTHDAY=1,15,-1;BYSETPOS=-2",
    "FREQ=YEARLY;BYMONTH=3,9;BYDAY=SU;BYSETPOS=1,-1;BYHOUR=10;BYMINUTE=0",
    "FREQ=DAILY;BYHOUR=9,12,17;BYMINUTE=0;BYSETPOS=2",
    "FREQ=HOURLY;INTERVAL=5;BYMINUTE=0,20,40;BYSETPOS=-1",
    "FREQ=WEEKLY;WKST=SU;BYDAY=SU,SA;BYSETPOS=1",
])
def test_a_series_continued_from_any_occurrence_is_the_whole_rules_next(rule: str) -> None:
    start = datetime(2026, 1, 5, 7, 30)  # a Monday
    truth = list(rrulestr(rule, dtstart=start, cache=False).xafter(start, count=30, inc=True))
    plan = Plan(parse_spec({"rrule": rule, "start": start.isoformat()}), "UTC")
    for n, (wall, nxt) in enumerate(itertools.pairwise(truth), start=1):
        occ = Occurrence(wall, wall.replace(tzinfo=UTC), n)
        after = plan.after(occ, occ.instant)
        assert after is not None and (after.wall, after.seq) == (nxt, n + 1), (rule, wall)


_VALID_RULES = st.builds(
    lambda freq, interval, parts: ";".join([f"FREQ={freq}", f"INTERVAL={interval}", *parts]),
    st.sampled_from(["YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY"]),
    st.sampled_from([1, 1, 2, 3, 7, 53]),
    st.lists(st.sampled_from(["BYDAY=MO,TU", "BYDAY=FR", "BYMONTHDAY=1,15,-1", "BYMONTH=2,11",
                              "BYHOUR=9,17", "BYMINUTE=0,30", "BYSETPOS=2", "BYSETPOS=-1",
                              "WKST=SU"]),
             max_size=3, unique_by=lambda part: part.split("=")[0]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=_VALID_RULES, start=st.datetimes(datetime(2000, 1, 1), datetime(2399, 12, 31)))
@example(rule="FREQ=WEEKLY;INTERVAL=1;BYDAY=MO,TU;BYSETPOS=2", start=datetime(2026, 1, 5))
@example(rule="FREQ=WEEKLY;INTERVAL=3;BYDAY=MO,TU;BYSETPOS=2", start=datetime(2398, 3, 1, 9))
def test_every_occurrence_of_a_series_is_the_whole_rules_across_centuries(
        rule: str, start: datetime) -> None:
    start = start.replace(second=0, microsecond=0)
    try:
        spec = parse_spec({"rrule": rule, "start": start.isoformat()})
    except ScheduleError:
        return  # never fires from this start: dateutil agrees (checked elsewhere)
    truth = list(rrulestr(rule, dtstart=start, cache=False).xafter(start, count=20, inc=True))
    plan = Plan(spec, "UTC")
    occ, got = plan.first(start.replace(tzinfo=UTC)), list[datetime]()
    while occ is not None and len(got) < len(truth):
        got.append(occ.wall)
        occ = plan.after(occ, occ.instant)
    assert got == truth[:len(got)]
    if len(got) < len(truth):  # a series ends where the next is 400 years away
        assert truth[len(got)] - (got[-1] if got else start) > timedelta(days=400 * 365)


def test_the_weekly_second_of_monday_and_tuesday_fires_every_tuesday() -> None:
    plan = Plan(parse_spec({"rrule": "FREQ=WEEKLY;BYDAY=MO,TU;BYSETPOS=2;BYHOUR=9;BYMINUTE=0",
                            "start": "2026-01-05T00:00"}), "UTC")
    occ = plan.first(utc("2026-01-05T00:00"))
    days: list[str] = []
    while occ is not None and len(days) < 4:
        days.append(occ.wall.date().isoformat())
        occ = plan.after(occ, occ.instant)
    assert days == ["2026-01-06", "2026-01-13", "2026-01-20", "2026-01-27"]


# --- 2. RFC 5545 bounds, refused with a reason that names the part ------------------------

@pytest.mark.parametrize(("rule", "says"), [
    ("FREQ=MONTHLY;BYDAY=10TU", "BYDAY ordinals are 1 to 5"),
    ("FREQ=MONTHLY;BYDAY=-6FR", "BYDAY ordinals are 1 to 5"),
    ("FREQ=YEARLY;BYDAY=99MO", "BYDAY ordinals are 1 to 53"),
    ("FREQ=YEARLY;BYDAY=54MO", "BYDAY ordinals are 1 to 53"),
    ("FREQ=YEARLY;BYMONTH=3;BYDAY=6MO", "BYDAY ordinals are 1 to 5"),
    ("FREQ=MONTHLY;BYDAY=0MO", "BYDAY ordinals are 1 to 5"),
    ("FREQ=WEEKLY;BYDAY=1MO", "needs FREQ=MONTHLY or YEARLY"),
    ("FREQ=DAILY;BYDAY=-1FR", "needs FREQ=MONTHLY or YEARLY"),
    ("FREQ=YEARLY;BYWEEKNO=20;BYDAY=1MO", "can't be combined with BYWEEKNO"),
    ("FREQ=MONTHLY;BYDAY=MO,XX", "BYDAY="),
    ("FREQ=FORTNIGHTLY", "FREQ=FORTNIGHTLY"),
    ("FREQ=DAILY;WKST=XX", "WKST=XX"),
    ("FREQ=DAILY;BYEASTER=0", "unknown part BYEASTER"),
    ("FREQ=DAILY;BYHOUR=+9", "BYHOUR=+9"),
    ("FREQ=DAILY;BYHOUR=1_0", "BYHOUR=1_0"),
    ("FREQ=DAILY;BYHOUR=\u0661", "BYHOUR="),  # an Arabic-Indic 1
    ("FREQ=DAILY;INTERVAL=\u0662", "INTERVAL="),
    ("FREQ=DAILY;COUNT=\u0663", "COUNT"),
])
def test_out_of_bounds_rules_are_refused_naming_the_part(rule: str, says: str) -> None:
    error = refused({"rrule": rule})
    assert error.reason == "invalid-schedule"
    assert says in error.detail


def test_byday_ordinals_count_within_their_period_and_no_further() -> None:
    for rule in ("FREQ=MONTHLY;BYDAY=10TU", "FREQ=YEARLY;BYDAY=99MO",
                 "FREQ=YEARLY;BYMONTH=2;BYDAY=6SU"):
        assert "BYDAY ordinals" in refused({"rrule": rule}).detail
    for rule, first in (("FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=9;BYMINUTE=0", "2026-01-30T09:00"),
                        ("FREQ=YEARLY;BYDAY=20MO;BYHOUR=9;BYMINUTE=0", "2026-05-18T09:00"),
                        ("FREQ=YEARLY;BYMONTH=2;BYDAY=5SU;BYHOUR=9;BYMINUTE=0",
                         "2032-02-29T09:00")):
        plan = Plan(parse_spec({"rrule": rule, "start": "2026-01-01T00:00"}), "UTC")
        occ = plan.first(utc("2026-01-01T00:00"))
        assert occ is not None and occ.instant == utc(first), rule


_PART_NAMES = st.sampled_from(["FREQ", "INTERVAL", "WKST", "BYSECOND", "BYMINUTE", "BYHOUR",
                               "BYDAY", "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYMONTH",
                               "BYSETPOS", "COUNT", "UNTIL", "BYEASTER", "freq", "X"])
_ATOMS = st.one_of(
    st.sampled_from(["YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY", "SECONDLY",
                     "MO", "TU", "SU", "1MO", "-1FR", "10TU", "99MO", "+5", "1_0", "",
                     "\u0665", "20261231", "20261231T090000Z", "2026", "*"]),
    st.integers(-400, 400).map(str),
    st.builds(lambda n, d: f"{n}{d}", st.integers(-60, 60),
              st.sampled_from(["MO", "TU", "WE", "TH", "FR", "SA", "SU"])),
    st.text(max_size=4))
_PART = st.builds(lambda name, values: f"{name}={','.join(values)}", _PART_NAMES,
                  st.lists(_ATOMS, min_size=1, max_size=4))
_RRULES = st.one_of(
    st.builds(lambda freq, parts: ";".join([f"FREQ={freq}", *parts]),
              st.sampled_from(["YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY"]),
              st.lists(_PART, max_size=5)),
    st.lists(_PART, min_size=1, max_size=6).map(";".join),
    st.text(max_size=40))
_CRON_FIELD = st.one_of(
    st.sampled_from(["*", "*/5", "*/", "5/", "1-5", "5-1", "+5", "1_0", "\u0665", "0", "9",
                     "59", "60", "7", "31", "L", "?", "1,2", "*/0", "0-59/15", "-1", "30",
                     "2", "29", "1-5/2", "5/10"]),
    st.integers(0, 70).map(str), st.text(max_size=3))
_CRONS = st.one_of(st.lists(_CRON_FIELD, min_size=5, max_size=6).map(" ".join),
                   st.lists(_CRON_FIELD, min_size=0, max_size=8).map(" ".join),
                   st.text(max_size=30))
_FUZZ = settings(max_examples=250, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])
# Work per schedule, well above the real figures (milliseconds) so a loaded
# machine does not fail it; dateutil unbounded takes seconds.
_WORK = 1.0


def _use(schedule: dict[str, Any]) -> None:
    """Parse, then find the first occurrences from the start (or a fixed
    now): ScheduleError or a result."""
    spec = parse_spec(schedule)
    plan = Plan(spec, "UTC")
    occ = plan.first(spec.start.replace(tzinfo=UTC) if spec.start else utc("2026-06-01T12:34"))
    for _ in range(3):
        if occ is None:
            break
        occ = plan.after(occ, occ.instant)


_STARTS = st.one_of(st.none(), st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1)).map(
    lambda start: start.replace(microsecond=0).isoformat()))
_SCHEDULES = st.one_of(
    st.builds(lambda rule, start: {"rrule": rule, **({"start": start} if start else {})},
              _RRULES, _STARTS),
    st.builds(lambda text, start: {"cron": text, **({"start": start} if start else {})},
              _CRONS, _STARTS))


@_FUZZ
@given(schedule=_SCHEDULES)
@example(schedule={"rrule": "FREQ=MONTHLY;BYDAY=10TU"})  # the testers' cases first
@example(schedule={"rrule": "FREQ=YEARLY;BYDAY=99MO", "start": "2026-01-01T00:00"})
@example(schedule={"rrule": "FREQ=MINUTELY;BYMONTH=2;BYMONTHDAY=30"})
@example(schedule={"rrule": "FREQ=HOURLY;BYSETPOS=-241", "start": "2026-01-01T00:00"})
@example(schedule={"cron": "*/ */ * * 1_0"})
def test_any_rrule_or_cron_is_a_schedule_or_a_schedule_error_with_bounded_work(
        schedule: dict[str, Any]) -> None:
    assert cpu_seconds(lambda: _use(schedule)) < _WORK, schedule


# --- 3. a rule that never fires is refused cheaply ------------------------------------------

NEVER = ["FREQ=MINUTELY;BYMONTH=2;BYMONTHDAY=30",  # the tester's case
         "FREQ=HOURLY;BYMONTH=4,6,9,11;BYMONTHDAY=31",
         "FREQ=MINUTELY;BYMONTH=2;BYMONTHDAY=-30",
         "FREQ=DAILY;BYMONTH=1;BYYEARDAY=200",
         "FREQ=MINUTELY;BYMONTH=6;BYWEEKNO=1",
         "FREQ=HOURLY;BYMONTH=2;BYYEARDAY=-1",
         "FREQ=WEEKLY;BYMONTHDAY=31;BYMONTH=2,4"]


@pytest.mark.parametrize("rule", NEVER)
@pytest.mark.parametrize("start", [None, "2026-06-01T12:00"])
def test_a_rule_that_never_fires_is_refused_in_well_under_100_ms(rule: str,
                                                                   start: str | None) -> None:
    schedule = {"rrule": rule, **({"start": start} if start else {})}
    parse_spec({"rrule": "FREQ=DAILY"})  # imports and first calls out of the measure
    spent = cpu_seconds(lambda: parse_spec(schedule))
    assert "never" in refused(schedule).detail
    assert spent < 0.05, f"{rule}: {spent * 1000:.0f} ms"


def test_a_rule_that_lines_up_with_no_start_is_refused_once_it_has_one() -> None:
    # Mondays never fall on the 7-day grid of a Tuesday start.
    rule = "FREQ=DAILY;INTERVAL=7;BYDAY=MO"
    spent = cpu_seconds(lambda: parse_spec({"rrule": rule, "start": "2026-06-02T09:00"}))
    assert "never fires from its start" in refused({"rrule": rule,
                                                    "start": "2026-06-02T09:00"}).detail
    assert spent < 0.5


# --- 4. a series without a start is checked from the minute it is scheduled ------------------

def test_a_rule_that_fires_from_its_real_start_is_accepted() -> None:
    spec = parse_spec({"rrule": "FREQ=HOURLY;INTERVAL=2;BYHOUR=1"})  # refused before
    occ = Plan(spec, "UTC").first(utc("2026-06-01T13:10"))  # starts 13:10: odd hours
    assert occ is not None and occ.instant == utc("2026-06-02T01:10")


def test_validation_and_firing_agree_on_a_rule_that_depends_on_its_start() -> None:
    spec = parse_spec({"rrule": "FREQ=HOURLY;INTERVAL=2;BYHOUR=2;BYMINUTE=0"})
    even = Plan(spec, "UTC").first(utc("2026-06-01T12:10"))
    assert even is not None and even.instant == utc("2026-06-02T02:00")
    with pytest.raises(ScheduleError, match="never fires from its start 2026-06-01T13:10"):
        Plan(spec, "UTC").first(utc("2026-06-01T13:10"))  # odd hours: refused when scheduled
    # Scheduled, it keeps its start: every later occurrence is the rule's.
    started = spec.with_start(datetime(2026, 6, 1, 12, 10))
    plan = Plan(started, "UTC")
    occ = plan.first(utc("2026-06-01T12:10"))
    for day in range(2, 6):
        assert occ is not None and occ.instant == utc(f"2026-06-0{day}T02:00")
        occ = plan.after(occ, occ.instant + timedelta(minutes=5))


# --- 5. cron and `at` read strictly ------------------------------------------------------------

def test_cron_takes_ascii_numbers_ranges_stars_and_steps_only() -> None:
    for text in ("*/ 9 * * *", "5/ 9 * * *", "+5 9 * * *", "1_0 9 * * *", "\u0665 9 * * *",
                 "0 9 * * \u0661", "0 9 ** * *", "0 9 * * 1-", "0 -9 * * *", "0 9 * * 1/"):
        error = refused({"cron": text})
        assert error.reason == "invalid-schedule" and "invalid cron" in error.detail, text
    plan = Plan(parse_spec({"cron": "*/20 9-10 * * 1-5", "start": "2026-06-01T00:00"}), "UTC")
    occ = plan.first(utc("2026-06-01T00:00"))
    assert occ is not None and occ.instant == utc("2026-06-01T09:00")
    nxt = plan.after(occ, occ.instant)
    assert nxt is not None and nxt.instant == utc("2026-06-01T09:20")


@pytest.mark.parametrize(("at", "expected"), [
    ("2026-12-01T09:00:00.1234567Z", "2026-12-01T09:00:01Z"),
    ("2026-12-01T09:00:00.0000001Z", "2026-12-01T09:00:01Z"),
    ("2026-12-01T09:00:59.9999999+01:00", "2026-12-01T08:01:00Z"),
    ("2026-12-01T09:00:00.0000000Z", "2026-12-01T09:00:00Z"),
    ("2026-12-01T09:00:00.2Z", "2026-12-01T09:00:01Z"),
])
def test_any_fraction_of_a_second_rounds_up(at: str, expected: str) -> None:
    assert parse_spec({"at": at}).to_json() == {"at": expected}


# --- hourly and minutely rules a day at a time (contract/schedule/grid.py) ------------------------

ISSUE_RULE = "FREQ=MINUTELY;INTERVAL=7;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO;BYHOUR=23;BYMINUTE=59"


def test_an_interval_that_never_meets_its_days_is_refused_with_and_without_a_start() -> None:
    assert "never fires" in str(refused({"rrule": ISSUE_RULE, "start": "2026-01-01T00:00"}))
    plan = Plan(parse_spec({"rrule": ISSUE_RULE}), "UTC")  # checked when scheduled
    with pytest.raises(ScheduleError, match="never fires"):
        plan.first(utc("2026-06-01T12:34"))


def test_an_interval_that_meets_its_rare_days_finds_them() -> None:
    # Every 7 minutes from 2024-02-26 00:00 (a Monday): 2024-02-26 23:59 is
    # 1439 minutes on, not a multiple of 7; 00:00 + 7k reaches 23:59 on the
    # Mondays 29 Feb whose minute count from the start is a multiple of 7.
    spec = parse_spec({"rrule": "FREQ=MINUTELY;INTERVAL=7;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO;"
                                "BYHOUR=23;BYMINUTE=59", "start": "2024-02-26T23:59"})
    truth = list(itertools.islice(rrulestr(spec.rule, dtstart=datetime(2024, 2, 26, 23, 59),
                                           cache=False), 2))
    plan = Plan(spec, "UTC")
    first = plan.first(utc("2024-02-26T00:00"))
    assert first is not None and first.wall == truth[0]
    nxt = plan.after(first, first.instant)
    assert (nxt.wall if nxt else None) == (truth[1] if len(truth) > 1 else None)


_SUB_DAILY = st.builds(
    lambda freq, interval, parts: ";".join([f"FREQ={freq}", f"INTERVAL={interval}", *parts]),
    st.sampled_from(["HOURLY", "MINUTELY"]),
    st.sampled_from([1, 2, 5, 7, 13, 90, 1441]),
    st.lists(st.sampled_from(["BYDAY=MO,TU", "BYDAY=FR", "BYMONTHDAY=1,15,-1", "BYMONTH=2,11",
                              "BYHOUR=9,17", "BYMINUTE=0,30", "BYYEARDAY=60,-1",
                              "BYWEEKNO=1,20"]),
             max_size=3, unique_by=lambda part: part.split("=")[0]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=_SUB_DAILY, start=st.datetimes(datetime(2000, 1, 1), datetime(2399, 12, 31)))
@example(rule="FREQ=MINUTELY;INTERVAL=7;BYHOUR=9,17;BYMINUTE=0,30",
         start=datetime(2026, 1, 5, 9, 1))
@example(rule="FREQ=HOURLY;INTERVAL=1;BYMONTH=2,11", start=datetime(2026, 1, 5, 9, 31, 7))
@example(rule="FREQ=HOURLY;INTERVAL=5;BYMINUTE=0,30", start=datetime(2026, 1, 5, 9, 31))
def test_hourly_and_minutely_rules_are_dateutils_own(rule: str, start: datetime) -> None:
    """A day at a time gives what dateutil gives, over the next two years."""
    from proactive.contract.schedule.rrules import split_rrule
    from proactive.contract.schedule.walls import wall_times

    start = start.replace(microsecond=0)
    horizon = start + timedelta(days=2 * 366)
    parsed = split_rrule(rule)[0]
    got = list(itertools.takewhile(lambda w: w < horizon,
                                   itertools.islice(wall_times(parsed, start), 30)))
    try:
        truth = list(itertools.takewhile(lambda w: w < horizon, itertools.islice(
            rrulestr(rule, dtstart=start, cache=False), 30)))
    except ValueError:  # dateutil: "byxxx generates an empty set" from this start
        truth = []
    assert got == truth
    if got:  # continued from an occurrence: the same as the whole rule's
        rest = list(itertools.takewhile(lambda w: w < horizon, itertools.islice(
            wall_times(parsed, start, after=got[0]), 29)))
        assert rest == truth[1:]


@pytest.mark.parametrize("schedule", [
    {"at": "9999-12-31T23:59:59.5Z"},
    {"at": "0001-01-01T00:00:00+09:00"},
    {"local": "0001-01-01T00:00", "timezone": "Asia/Tokyo"},
    {"local": "9999-12-31T23:00", "timezone": "America/New_York"},
    {"rrule": "FREQ=DAILY", "start": "0001-01-01T00:00", "timezone": "Asia/Tokyo", "count": 3},
    {"cron": "0 * * * *", "start": "0001-01-01T00:00", "timezone": "Pacific/Kiritimati",
     "count": 3},
    {"cron": "0 * * * *", "start": "0001-01-01T01:00", "timezone": "Asia/Tokyo", "count": 3},
])
def test_extreme_dates_are_a_schedule_error_never_an_overflow(schedule: dict[str, Any]) -> None:
    with pytest.raises(ScheduleError):
        spec = parse_spec(schedule)
        Plan(spec, spec.timezone or "UTC").first(utc("2026-06-01T12:34"))
