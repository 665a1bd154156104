"""Schedules without storage: parsing, daylight saving, leap days, recurrence,
catch-up after downtime. The clock is always passed in, never read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from dateutil.rrule import rrulestr

from proactive.contract.schedule.errors import ScheduleError
from proactive.contract.schedule.spec import occurrence_key, parse_spec, split_occurrence_key
from proactive.contract.schedule.zones import load_zone, to_instant
from proactive.scheduling.recurrence import Occurrence, Plan

NY, BERLIN = "America/New_York", "Europe/Berlin"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def wall(text: str) -> datetime:
    return datetime.fromisoformat(text)


def series(spec: dict, zone: str, now: str, n: int) -> list[Occurrence]:
    """The first n occurrences from `now`, each fired on time."""
    plan = Plan(parse_spec(spec), zone)
    occ = plan.first(utc(now))
    out: list[Occurrence] = []
    while occ is not None and len(out) < n:
        out.append(occ)
        occ = plan.after(occ, occ.instant)
    return out


def instants(occurrences: list[Occurrence]) -> list[str]:
    return [o.instant.strftime("%Y-%m-%dT%H:%MZ") for o in occurrences]


# --- daylight saving: a wall time that doesn't exist, and one that exists twice ---

@pytest.mark.parametrize(("zone", "local", "expected"), [
    # Spring forward: 02:00-02:59 don't exist; they move to the jump (03:00 local).
    (NY, "2026-03-08T02:30", "2026-03-08T07:00"),  # 03:00 EDT
    (NY, "2026-03-08T02:00", "2026-03-08T07:00"),
    (NY, "2026-03-08T03:00", "2026-03-08T07:00"),  # the first valid instant itself
    (NY, "2026-03-08T01:59", "2026-03-08T06:59"),  # still EST
    (BERLIN, "2026-03-29T02:30", "2026-03-29T01:00"),  # 03:00 CEST
    (BERLIN, "2026-03-29T02:59:59", "2026-03-29T01:00"),
    # Fall back: 01:00-01:59 (NY) / 02:00-02:59 (Berlin) happen twice: the first.
    (NY, "2026-11-01T01:30", "2026-11-01T05:30"),  # 01:30 EDT, not EST (06:30Z)
    (NY, "2026-11-01T00:59", "2026-11-01T04:59"),
    (NY, "2026-11-01T02:00", "2026-11-01T07:00"),  # EST
    (BERLIN, "2026-10-25T02:30", "2026-10-25T00:30"),  # 02:30 CEST, not CET (01:30Z)
    (BERLIN, "2026-10-25T03:00", "2026-10-25T02:00"),
    # Ordinary days.
    (NY, "2026-07-01T09:00", "2026-07-01T13:00"),
    (BERLIN, "2026-12-01T09:00", "2026-12-01T08:00"),
])
def test_wall_times_become_instants_by_the_dst_rules(zone: str, local: str,
                                                     expected: str) -> None:
    assert to_instant(wall(local), load_zone(zone)) == utc(expected)
    occ = Plan(parse_spec({"local": local, "timezone": zone}), zone).first(utc("2026-01-01"))
    assert occ is not None and occ.instant == utc(expected)


def test_a_skipped_day_moves_to_the_first_valid_instant() -> None:
    # Samoa skipped 30 December 2011 entirely (UTC-10 to UTC+14).
    instant = to_instant(wall("2011-12-30T12:00"), load_zone("Pacific/Apia"))
    assert instant.astimezone(load_zone("Pacific/Apia")).isoformat() == \
        "2011-12-31T00:00:00+14:00"


# --- recurring over a DST change ---------------------------------------------------

def test_a_daily_rrule_keeps_its_wall_time_across_spring_forward() -> None:
    occ = series({"rrule": "FREQ=DAILY;BYHOUR=9;BYMINUTE=0", "start": "2026-03-06T00:00"},
                 NY, "2026-03-06T00:00", 4)
    assert instants(occ) == ["2026-03-06T14:00Z", "2026-03-07T14:00Z",
                             "2026-03-08T13:00Z", "2026-03-09T13:00Z"]  # 09:00 EST, then EDT
    assert [o.seq for o in occ] == [1, 2, 3, 4]


def test_a_weekly_rrule_in_berlin_across_fall_back() -> None:
    occ = series({"rrule": "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0",
                  "start": "2026-10-01T00:00"}, BERLIN, "2026-10-15T00:00", 3)
    assert instants(occ) == ["2026-10-19T07:00Z", "2026-10-26T08:00Z", "2026-11-02T08:00Z"]


def test_a_time_in_the_skipped_hour_fires_at_the_jump_then_resumes() -> None:
    occ = series({"cron": "30 2 * * *", "start": "2026-03-07T00:00"}, NY,
                 "2026-03-07T00:00", 3)
    assert instants(occ) == ["2026-03-07T07:30Z", "2026-03-08T07:00Z", "2026-03-09T06:30Z"]


def test_a_time_in_the_repeated_hour_fires_once() -> None:
    occ = series({"cron": "30 1 * * *", "start": "2026-10-31T00:00"}, NY,
                 "2026-10-31T00:00", 3)
    assert instants(occ) == ["2026-10-31T05:30Z", "2026-11-01T05:30Z", "2026-11-02T06:30Z"]


def test_a_frequent_series_never_fires_twice_in_the_repeated_or_skipped_hour() -> None:
    back = series({"cron": "*/30 * * * *", "start": "2026-11-01T00:30"}, NY,
                  "2026-11-01T00:00", 5)
    # 00:30 01:00 01:30 EDT, then 02:00 EST: the second 01:00-01:59 is not repeated.
    assert instants(back) == ["2026-11-01T04:30Z", "2026-11-01T05:00Z", "2026-11-01T05:30Z",
                              "2026-11-01T07:00Z", "2026-11-01T07:30Z"]
    forward = series({"cron": "*/30 * * * *", "start": "2026-03-08T01:00"}, NY,
                     "2026-03-08T00:00", 4)
    # 01:00 01:30 EST, then 02:00, 02:30 and 03:00 are one instant (03:00 EDT), once.
    assert instants(forward) == ["2026-03-08T06:00Z", "2026-03-08T06:30Z",
                                 "2026-03-08T07:00Z", "2026-03-08T07:30Z"]
    assert [o.seq for o in forward] == [1, 2, 3, 4]
    assert len({o.instant for o in back + forward}) == 9


def test_a_series_in_utc_is_unaffected() -> None:
    occ = series({"cron": "0 9 * * *"}, "UTC", "2026-03-07T10:00", 3)
    assert instants(occ) == ["2026-03-08T09:00Z", "2026-03-09T09:00Z", "2026-03-10T09:00Z"]


# --- leap days -----------------------------------------------------------------------

def test_leap_day_one_off_and_yearly() -> None:
    occ = Plan(parse_spec({"local": "2028-02-29T09:00", "timezone": BERLIN}),
               BERLIN).first(utc("2026-01-01"))
    assert occ is not None and occ.instant == utc("2028-02-29T08:00")
    with pytest.raises(ScheduleError, match="not a real date"):
        parse_spec({"local": "2027-02-29T09:00"})
    yearly = series({"rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;BYHOUR=9;BYMINUTE=0",
                     "start": "2026-01-01T00:00"}, NY, "2026-01-01T00:00", 3)
    assert instants(yearly) == ["2028-02-29T14:00Z", "2032-02-29T14:00Z", "2036-02-29T14:00Z"]
    cron = series({"cron": "0 9 29 2 *"}, "UTC", "2028-03-01T00:00", 2)
    assert instants(cron) == ["2032-02-29T09:00Z", "2036-02-29T09:00Z"]


def test_the_last_day_of_each_month_across_a_leap_february() -> None:
    occ = series({"rrule": "FREQ=MONTHLY;BYMONTHDAY=-1;BYHOUR=17;BYMINUTE=0",
                  "start": "2028-01-01T00:00"}, "UTC", "2028-01-01T00:00", 3)
    assert instants(occ) == ["2028-01-31T17:00Z", "2028-02-29T17:00Z", "2028-03-31T17:00Z"]


# --- catch-up after downtime -----------------------------------------------------------

def test_after_downtime_a_series_fires_once_then_continues_on_schedule() -> None:
    plan = Plan(parse_spec({"cron": "0 9 * * *", "start": "2026-06-01T00:00"}), BERLIN)
    missed = plan.first(utc("2026-06-01T00:00"))
    assert missed is not None and missed.instant == utc("2026-06-01T07:00")
    # The app was down from before 1 June 09:00 until 4 June 10:00 (local):
    # the 1 June occurrence goes out late, once; 2, 3 and 4 June are not replayed.
    now = utc("2026-06-04T08:00")
    nxt = plan.after(missed, now)
    assert nxt is not None and nxt.instant == utc("2026-06-05T07:00")
    assert nxt.seq == 5  # its place in the series is kept


def test_count_and_until_end_a_series() -> None:
    counted = series({"cron": "0 9 * * *", "count": 3, "start": "2026-06-01T00:00"}, "UTC",
                     "2026-06-01T00:00", 10)
    assert len(counted) == 3
    by_rrule = series({"rrule": "FREQ=DAILY;COUNT=2", "start": "2026-06-01T09:00"}, "UTC",
                      "2026-06-01T00:00", 10)
    assert instants(by_rrule) == ["2026-06-01T09:00Z", "2026-06-02T09:00Z"]
    until_day = series({"cron": "0 9 * * *", "until": "2026-06-03", "start": "2026-06-01T00:00"},
                       BERLIN, "2026-06-01T00:00", 10)
    assert len(until_day) == 3  # the whole last day counts
    until_instant = series({"rrule": "FREQ=DAILY;BYHOUR=9;BYMINUTE=0",
                            "until": "2026-06-02T07:00:00Z", "start": "2026-06-01T00:00"},
                           BERLIN, "2026-06-01T00:00", 10)
    assert instants(until_instant) == ["2026-06-01T07:00Z", "2026-06-02T07:00Z"]
    # A count that runs out during downtime: the late one still goes, then nothing.
    plan = Plan(parse_spec({"cron": "0 9 * * *", "count": 3, "start": "2026-06-01T00:00"}),
                "UTC")
    first = plan.first(utc("2026-06-01T00:00"))
    assert first is not None
    assert plan.after(first, utc("2026-06-10T00:00")) is None


def test_a_one_off_in_the_past_is_still_its_own_time_and_has_no_next() -> None:
    plan = Plan(parse_spec({"at": "2026-01-01T09:00:00Z"}), "UTC")
    occ = plan.first(utc("2026-05-01T00:00"))
    assert occ is not None and occ.instant == utc("2026-01-01T09:00")
    assert plan.after(occ, utc("2026-05-01T00:00")) is None


def test_without_a_start_a_series_starts_when_scheduled() -> None:
    plan = Plan(parse_spec({"rrule": "FREQ=DAILY;BYHOUR=9;BYMINUTE=0"}), BERLIN)
    occ = plan.first(utc("2026-06-01T08:30"))  # 10:30 in Berlin: today's 09:00 has passed
    assert occ is not None and occ.instant == utc("2026-06-02T07:00")
    occ = plan.first(utc("2026-06-01T06:59:59"))
    assert occ is not None and occ.instant == utc("2026-06-01T07:00")


def test_a_counted_series_started_long_ago_is_walked_and_has_ended() -> None:
    # With a count the past occurrences count: they are walked (at most COUNT).
    plan = Plan(parse_spec({"rrule": "FREQ=MINUTELY", "start": "2020-01-01T00:00",
                            "count": 100_000}), "UTC")
    assert plan.first(utc("2026-01-01")) is None


_NOW = utc("2026-01-07T10:00:30")  # Wednesday 11:00:30 in Berlin


def _grid(start: datetime, step: int) -> datetime:
    """The first wall time from 11:01 on 2026-01-07 on a grid of `step` minutes."""
    after = datetime(2026, 1, 7, 11, 1)
    minutes = -(-int((after - start).total_seconds() // 60) // step) * step
    return start + timedelta(minutes=minutes)


@pytest.mark.parametrize("schedule, expected", [
    ({"rrule": "FREQ=MINUTELY", "start": "2020-01-01T00:00"}, datetime(2026, 1, 7, 11, 1)),
    ({"rrule": "FREQ=MINUTELY;INTERVAL=7", "start": "1800-01-01T00:03"},
     _grid(datetime(1800, 1, 1, 0, 3), 7)),
    ({"rrule": "FREQ=HOURLY;INTERVAL=5", "start": "1800-01-01T02:00"},
     _grid(datetime(1800, 1, 1, 2, 0), 300)),
    ({"cron": "* * * * *", "start": "1800-01-01T00:00"}, datetime(2026, 1, 7, 11, 1)),
    ({"cron": "0 9 * * 1", "start": "1800-01-01T00:00"}, datetime(2026, 1, 12, 9, 0)),
])
def test_without_a_count_a_start_long_ago_is_skipped_over_not_walked(
        schedule: dict[str, str], expected: datetime) -> None:
    occ = Plan(parse_spec(schedule), BERLIN).first(_NOW)
    assert occ is not None and occ.wall == expected


# --- rebasing an RRULE on its own occurrences changes nothing ------------------------------

@pytest.mark.parametrize("rule", [
    "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH;BYHOUR=9;BYMINUTE=30",
    "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;BYHOUR=17;BYMINUTE=0",
    "FREQ=MONTHLY;INTERVAL=3",
    "FREQ=YEARLY;BYWEEKNO=1,20;BYDAY=MO",
    "FREQ=DAILY;INTERVAL=3;BYHOUR=8,20;BYMINUTE=15",
    "FREQ=HOURLY;INTERVAL=5;BYMINUTE=0,30",
    "FREQ=MINUTELY;INTERVAL=7",
])
def test_each_next_occurrence_matches_the_rule_from_its_start(rule: str) -> None:
    start = wall("2026-01-07T10:20")
    plan = Plan(parse_spec({"rrule": rule, "start": start.isoformat()}), "UTC")
    expected = list(rrulestr(rule, dtstart=start, cache=False).xafter(start, count=40,
                                                                       inc=True))
    got = series({"rrule": rule, "start": start.isoformat()}, "UTC", "2026-01-01T00:00", 40)
    assert [o.wall for o in got] == expected
    assert plan.first(utc("2026-01-01")) == got[0]


# --- occurrence keys ---------------------------------------------------------------------

def test_occurrence_keys_name_the_series_and_the_instant() -> None:
    instant = datetime(2026, 12, 1, 9, 0, tzinfo=load_zone(BERLIN))
    assert occurrence_key("standup", instant) == "standup:2026-12-01T08:00Z"
    assert occurrence_key("s", utc("2026-12-01T08:00:30")) == "s:2026-12-01T08:00:30Z"
    assert split_occurrence_key("msg:abc:2026-12-01T08:00Z") == \
        ("msg:abc", utc("2026-12-01T08:00"))
    assert split_occurrence_key("standup") is None
    assert split_occurrence_key("x:2026-13-01T08:00Z") is None


# --- refused when scheduled, with a reason -------------------------------------------------

@pytest.mark.parametrize(("schedule", "reason", "says"), [
    ({"rrule": "FREQ=DAILY;BYMONTHDAY=32"}, "invalid-schedule", "BYMONTHDAY values are"),
    ({"rrule": "FREQ=DAILY;INTERVAL=0"}, "invalid-schedule", "INTERVAL values are"),
    ({"rrule": "FREQ=WEEKLY;BYDAY=MX"}, "invalid-schedule", "invalid RRULE"),
    ({"cron": "0 25 * * *"}, "invalid-schedule", "invalid cron"),
    ({"cron": "0 9 * * * * *"}, "invalid-schedule", "5 fields"),
    ({"local": "2026-12-01T09:00", "timezone": "Europe/Atlantis"}, "invalid-schedule",
     "unknown time zone 'Europe/Atlantis'"),
    ({"local": "2026-12-01T09:00", "timezone": "localtime"}, "invalid-schedule",
     "unknown time zone"),
    ({"at": "2026-12-01T09:00"}, "schema", "offset"),
    ({"cron": "0 9 * * *", "at": "2026-12-01T09:00:00Z"}, "schema", "exactly one"),
])
def test_unusable_schedules_are_refused_with_a_reason(schedule: dict, reason: str,
                                                      says: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_spec(schedule)
    assert caught.value.reason == reason
    assert says in caught.value.detail


def test_canonical_form_round_trips() -> None:
    for schedule in ({"at": "2026-12-01T09:00:00Z"},
                     {"local": "2026-12-01T09:00:00", "timezone": BERLIN},
                     {"rrule": "FREQ=WEEKLY;BYDAY=MO", "start": "2026-12-01T09:00:00",
                      "count": 4},
                     {"cron": "0 9 * * 1-5", "until": "2027-01-01", "timezone": NY}):
        assert parse_spec(schedule).to_json() == schedule
    # Fractions of a second round up: never early.
    assert parse_spec({"at": "2026-12-01T09:00:00.2+01:00"}).to_json() == \
        {"at": "2026-12-01T08:00:01Z"}
    assert utc("2026-01-01") + timedelta(0) == utc("2026-01-01T00:00")
