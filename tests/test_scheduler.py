"""Scheduled sends against real storage (Azurite) and the Connector emulator:
stored, claimed, dispatched once, in each recipient's zone. The clock is
injected (`now=`); nothing here waits for real time to pass."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from proactive.config import Settings
from proactive.contract import parse_message
from proactive.delivering.requeue import refuse
from proactive.receiving.activities import parse_activity
from proactive.runtime import Runtime
from proactive.scheduling import ScheduleError, store_send
from proactive.scheduling import timer as scheduler
from proactive.scheduling.store import ScheduleStore, list_items
from proactive.scheduling.timer import tick
from proactive.storage import deliveries as d
from proactive.storage.tables import safe_key
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from tests.activities_data import activity, install
from tests.sealed import app_made

NY_USER = "00000000-0000-4000-8000-00000000000a"
BERLIN_USER = "00000000-0000-4000-8000-00000000000b"
NOWHERE_USER = "00000000-0000-4000-8000-00000000000c"  # no time zone known
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Recorder:
    """Wraps Outbox.put: what the scheduler enqueued and with which delay
    (a delayed message can't be peeked). The messages still go on the queue."""

    def __init__(self, rt: Runtime) -> None:
        self.sent: list[tuple[dict[str, Any], float]] = []
        self._put = rt.outbox.put
        self.fail = 0
        rt.outbox.put = self.put  # type: ignore[method-assign]

    async def put(self, message: Any, *, delay: float = 0) -> str:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("the process died here")
        self.sent.append((message.to_json(), delay))
        return await self._put(message, delay=delay)

    @property
    def keys(self) -> list[str]:
        return [m["key"] for m, _ in self.sent]

    def take(self) -> list[tuple[dict[str, Any], float]]:
        out, self.sent = self.sent, []
        return out


@pytest.fixture
async def rt(settings: Settings, emulator: ConnectorEmulator) -> AsyncIterator[Runtime]:
    """Three users who installed the bot: in New York, in Berlin, and one whose
    client never told us a zone. The default zone is Asia/Tokyo."""
    runtime = await Runtime.create(dataclasses.replace(settings, default_timezone="Asia/Tokyo"))
    for user, zone in ((NY_USER, "America/New_York"), (BERLIN_USER, "Europe/Berlin"),
                       (NOWHERE_USER, None)):
        extra = {"localTimezone": zone} if zone else {}
        await runtime.references.record(parse_activity(install(
            service_url=emulator.url, aad=user, conversation=f"a:{user}", **extra)))
    try:
        yield runtime
    finally:
        await runtime.close()


@pytest.fixture
def queue(rt: Runtime) -> Recorder:
    return Recorder(rt)


def send(key: str, schedule: dict[str, Any], to: dict[str, Any] | None = None,
         text: str = "Stand-up in 5", **extra: Any) -> str:
    return json.dumps({"version": 1, "op": "send", "key": key,
                       "to": to or {"user": BERLIN_USER}, "text": text,
                       "schedule": schedule, **extra})


async def schedule(rt: Runtime, body: str, now: datetime = T0) -> str:
    message = parse_message(body, default_key="m")
    try:
        return await store_send(rt, message, now=now)
    except ScheduleError as exc:  # as the worker does: to the poison queue
        await refuse(rt, body, exc, message_id="m")
        return exc.reason


async def items(rt: Runtime, key: str = "") -> list[dict[str, Any]]:
    return await list_items(rt.schedules_table, key, active_only=not key)


async def deliver(rt: Runtime, sent: list[tuple[dict[str, Any], float]]) -> None:
    """Carry out what the scheduler enqueued, as the outbox worker would once
    the visibility delay is over."""
    for n, (message, _) in enumerate(sent):  # recorded before Outbox.put signs it
        await process(rt, await app_made(rt, message), message_id=f"q{n}")


async def record(rt: Runtime, key: str, user: str) -> dict[str, Any]:
    table = rt.deliveries.table
    return dict(await table.get_entity(safe_key(key), safe_key(f"user:{user}")))


# --- one-off --------------------------------------------------------------------------

async def test_an_instant_waits_in_the_table_and_goes_out_once_on_time(
        rt: Runtime, queue: Recorder, emulator: ConnectorEmulator) -> None:
    assert await schedule(rt, send("deploy", {"at": "2026-11-30T13:00:00Z"})) == "scheduled"
    [item] = await items(rt)
    assert (item["state"], item["due"], item["nextKey"]) == \
        ("scheduled", "2026-11-30T13:00:00Z", "deploy")
    assert queue.sent == []
    early = await tick(rt, T0 + timedelta(minutes=30))
    assert (early.read, early.dispatched) == (0, 0)  # nothing due: nothing read
    # The tick before its minute puts it on the queue, invisible until 13:00:00.
    report = await tick(rt, at("2026-11-30T12:59:20"))
    assert (report.due, report.dispatched) == (1, 1)
    [(message, delay)] = queue.sent
    assert delay == 40
    assert message == {"version": 1, "op": "send", "key": "deploy",
                       "to": {"user": BERLIN_USER}, "text": "Stand-up in 5"}
    for later in (at("2026-11-30T13:00:00"), at("2026-11-30T13:05:00")):
        assert (await tick(rt, later)).dispatched == 0
    await deliver(rt, queue.take())
    assert emulator.counters["delivered"] == 1
    [done] = await items(rt, "deploy")
    assert (done["state"], done["fired"], done["lastLateness"]) == ("done", 1, 0)


async def test_due_within_the_minute_goes_straight_onto_the_queue(
        rt: Runtime, queue: Recorder) -> None:
    assert await schedule(rt, send("soon", {"at": "2026-11-30T12:00:25Z"})) == "queued"
    [(message, delay)] = queue.sent
    assert (message["key"], delay) == ("soon", 25)
    assert await items(rt, "soon") == []  # never touched the table
    past = await schedule(rt, send("late", {"at": "2026-11-30T11:00:00Z"}))
    assert past == "queued" and queue.sent[-1][1] == 0  # overdue: at once


async def test_local_time_is_each_recipients_own_9_am(
        rt: Runtime, queue: Recorder, emulator: ConnectorEmulator) -> None:
    body = send("all-hands", {"local": "2026-12-01T09:00"},
                to={"users": [NY_USER, BERLIN_USER, NOWHERE_USER]}, part=True)
    assert await schedule(rt, body) == "scheduled"
    due = {i["recipient"]: (i["due"], i["timezone"], i["zoneSource"])
           for i in await items(rt, "all-hands")}
    assert due == {
        f"user:{NY_USER}": ("2026-12-01T14:00:00Z", "America/New_York", "recipient"),
        f"user:{BERLIN_USER}": ("2026-12-01T08:00:00Z", "Europe/Berlin", "recipient"),
        # No zone known yet: PROACTIVE_DEFAULT_TIMEZONE.
        f"user:{NOWHERE_USER}": ("2026-12-01T00:00:00Z", "Asia/Tokyo", "default"),
    }
    fired = []
    for moment in ("2026-12-01T00:00:00", "2026-12-01T08:00:00", "2026-12-01T14:00:00"):
        report = await tick(rt, at(moment))
        assert report.dispatched == 1
        fired += [m["to"]["users"][0] for m, _ in queue.sent]
        await deliver(rt, queue.take())
    assert fired == [NOWHERE_USER, BERLIN_USER, NY_USER]
    assert emulator.counters["delivered"] == 3
    assert (await record(rt, "all-hands", NY_USER))["state"] == d.SENT
    # Sent as parts of the many-user send: its progress counts them.
    progress = await rt.campaigns.progress("all-hands")
    assert progress is not None and progress.counts["sent"] == 3


async def test_a_windows_zone_from_a_teams_client_is_the_recipients_zone(
        rt: Runtime, emulator: ConnectorEmulator) -> None:
    # Teams on Windows reported "W. Europe Standard Time"; the root field a zone
    # that is not IANA either: 09:00 is 09:00 in Berlin, not the default's.
    user = "00000000-0000-4000-8000-00000000000d"
    await rt.references.record(parse_activity(install(
        service_url=emulator.url, aad=user, conversation=f"a:{user}", localTimezone="CET-1",
        entities=[{"type": "clientInfo", "timezone": "W. Europe Standard Time"}])))
    assert await schedule(rt, send("windows", {"local": "2026-12-01T09:00"},
                                   to={"user": user})) == "scheduled"
    [item] = await items(rt, "windows")
    assert (item["due"], item["timezone"], item["zoneSource"]) == \
        ("2026-12-01T08:00:00Z", "Europe/Berlin", "recipient")


async def test_a_scheduled_many_user_send_is_split_then_stored_per_user(rt: Runtime) -> None:
    # Through the worker (real clock: a time far ahead), as a producer would send it.
    body = send("year-end", {"local": "2099-12-31T17:00"},
                to={"users": [NY_USER, BERLIN_USER, NOWHERE_USER]})
    assert (await process(rt, body, message_id="s1")).reason == "split"
    parts = [m async for m in rt.outbox.queue.receive_messages(max_messages=32)]
    assert len(parts) == 1 and json.loads(parts[0].content)["schedule"]
    assert (await process(rt, parts[0].content, message_id=parts[0].id)).reason == "scheduled"
    assert sorted(i["due"] for i in await items(rt, "year-end")) == [
        "2099-12-31T08:00:00Z", "2099-12-31T16:00:00Z", "2099-12-31T22:00:00Z"]
    cancel = json.dumps({"version": 1, "op": "cancel", "key": "year-end"})
    assert (await process(rt, cancel, message_id="c")).reason == "cancelled"
    assert {i["state"] for i in await items(rt, "year-end")} == {"cancelled"}


async def test_a_named_zone_wins_over_the_recipients(rt: Runtime) -> None:
    await schedule(rt, send("k", {"local": "2026-12-01T09:00", "timezone": "America/New_York"}))
    [item] = await items(rt, "k")
    assert (item["due"], item["zoneSource"]) == ("2026-12-01T14:00:00Z", "named")


async def test_a_one_off_in_the_spring_forward_gap_fires_at_the_jump(
        rt: Runtime, queue: Recorder) -> None:
    await schedule(rt, send("gap", {"local": "2027-03-28T02:30"}), now=at("2027-03-01T00:00"))
    [item] = await items(rt, "gap")
    assert item["due"] == "2027-03-28T01:00:00Z"  # 03:00 CEST, the first valid instant
    assert item["dueLocal"] == "2027-03-28T03:00:00+02:00"


# --- recurring ----------------------------------------------------------------------------

async def test_a_weekly_series_fires_each_occurrence_under_its_own_key_across_dst(
        rt: Runtime, queue: Recorder, emulator: ConnectorEmulator) -> None:
    body = send("standup", {"rrule": "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0",
                            "start": "2026-10-01T00:00", "timezone": "America/New_York"},
                to={"user": BERLIN_USER})
    await schedule(rt, body, now=at("2026-10-20T00:00"))
    fired = []
    moment = at("2026-10-20T00:00")
    for _ in range(4):
        [item] = await items(rt, "standup")
        moment = datetime.fromisoformat(item["due"].replace("Z", "+00:00"))
        report = await tick(rt, moment)
        assert report.dispatched == 1
        fired += queue.keys
        await deliver(rt, queue.take())
    # 09:00 in New York: EDT, EDT, then EST after 1 November.
    assert fired == ["standup:2026-10-26T13:00Z", "standup:2026-11-02T14:00Z",
                     "standup:2026-11-09T14:00Z", "standup:2026-11-16T14:00Z"]
    assert emulator.counters["delivered"] == 4
    [item] = await items(rt, "standup")
    assert (item["fired"], item["nextKey"]) == (4, "standup:2026-11-23T14:00Z")
    # Each occurrence is its own message: update and delete work per occurrence.
    edit = {"version": 1, "op": "update", "key": "standup:2026-11-02T14:00Z", "text": "moved"}
    assert (await process(rt, json.dumps(edit), message_id="e1")).state == "done"
    assert [x.text for x in emulator.deliveries].count("moved") == 1


async def test_a_weekly_series_with_bysetpos_fires_every_week_it_should(
        rt: Runtime, queue: Recorder) -> None:
    # The second of Monday and Tuesday is every Tuesday: restarting dateutil
    # at each Tuesday fired only every other one.
    body = send("tue", {"rrule": "FREQ=WEEKLY;BYDAY=MO,TU;BYSETPOS=2;BYHOUR=9;BYMINUTE=0",
                        "start": "2026-11-30T00:00", "timezone": "UTC"})
    assert await schedule(rt, body) == "scheduled"  # T0 is Monday 30 November, noon
    for _ in range(4):
        [item] = await items(rt, "tue")
        await tick(rt, datetime.fromisoformat(item["due"].replace("Z", "+00:00")))
    assert queue.keys == ["tue:2026-12-01T09:00Z", "tue:2026-12-08T09:00Z",
                          "tue:2026-12-15T09:00Z", "tue:2026-12-22T09:00Z"]


async def test_a_series_without_start_is_checked_from_the_minute_it_is_scheduled(
        rt: Runtime, queue: Recorder) -> None:
    # Every other hour from the start, at 01:00: fires from an odd hour only.
    rule = {"rrule": "FREQ=HOURLY;INTERVAL=2;BYHOUR=1;BYMINUTE=0", "timezone": "UTC"}
    assert await schedule(rt, send("odd", rule), now=at("2026-11-30T13:00")) == "scheduled"
    [item] = await items(rt, "odd")
    assert item["due"] == "2026-12-01T01:00:00Z"
    assert item["schedule"]["start"] == "2026-11-30T13:00:00"  # the start it keeps
    await tick(rt, at("2026-12-01T01:00"))
    [item] = await items(rt, "odd")
    assert (queue.keys, item["due"]) == (["odd:2026-12-01T01:00Z"], "2026-12-02T01:00:00Z")
    # From an even hour it never fires: refused when scheduled, with why.
    assert await schedule(rt, send("even", rule), now=at("2026-11-30T12:00")) == \
        "invalid-schedule"
    [parked] = await rt.outbox.poison_queue.peek_messages()
    assert "never fires" in json.loads(parked.content)["detail"]


async def test_count_ends_a_series(rt: Runtime, queue: Recorder) -> None:
    await schedule(rt, send("twice", {"cron": "0 9 * * *", "count": 2, "timezone": "UTC"}))
    for moment in ("2026-12-01T09:00:00", "2026-12-02T09:00:00", "2026-12-03T09:00:00"):
        await tick(rt, at(moment))
    assert queue.keys == ["twice:2026-12-01T09:00Z", "twice:2026-12-02T09:00Z"]
    [item] = await items(rt, "twice")
    assert item["state"] == "done"
    assert await items(rt) == []  # nothing left to come


async def test_a_count_counts_deliveries_when_scheduled_mid_minute(
        rt: Runtime, queue: Recorder) -> None:
    # `send --cron "* * * * *" --count 3` at 12:00:10: the minute 12:00 is
    # past, so the series starts at 12:01 and all three go out.
    every_minute = {"cron": "* * * * *", "count": 3, "timezone": "UTC"}
    await schedule(rt, send("thrice", every_minute), now=at("2026-11-30T12:00:10"))
    for moment in ("2026-11-30T12:01:00", "2026-11-30T12:02:00", "2026-11-30T12:03:00",
                   "2026-11-30T12:04:00"):
        await tick(rt, at(moment))
    assert queue.keys == ["thrice:2026-11-30T12:01Z", "thrice:2026-11-30T12:02Z",
                          "thrice:2026-11-30T12:03Z"]
    [item] = await items(rt, "thrice")
    assert item["state"] == "done"


async def test_after_downtime_each_item_goes_out_once_late_then_on_schedule(
        rt: Runtime, queue: Recorder, emulator: ConnectorEmulator) -> None:
    await schedule(rt, send("daily", {"cron": "0 9 * * *"}))  # Berlin user, from 30 Nov
    await schedule(rt, send("once", {"at": "2026-12-01T10:00:00Z"}))
    # Down from 30 Nov 12:00 to 4 Dec 10:00 UTC: no tick ran.
    back = at("2026-12-04T10:00:00")
    report = await tick(rt, back)
    assert report.dispatched == 2
    assert sorted(queue.keys) == ["daily:2026-12-01T08:00Z", "once"]
    assert all(delay == 0 for _, delay in queue.sent)
    by_key = {i["key"]: i for i in await items(rt, "daily") + await items(rt, "once")}
    assert by_key["daily"]["lastLateness"] == (back - at("2026-12-01T08:00")).total_seconds()
    assert by_key["once"]["lastLateness"] == 3 * 86400
    # Not once per missed day: the next is the next one to come.
    assert by_key["daily"]["due"] == "2026-12-05T08:00:00Z"
    assert (await tick(rt, back + timedelta(minutes=1))).dispatched == 0
    await deliver(rt, queue.take())
    assert emulator.counters["delivered"] == 2


async def test_a_series_in_the_recipients_zone_follows_it_once_known(
        rt: Runtime, queue: Recorder, emulator: ConnectorEmulator) -> None:
    await schedule(rt, send("k", {"cron": "0 9 * * *"}, to={"user": NOWHERE_USER}))
    [item] = await items(rt, "k")
    assert (item["due"], item["zoneSource"]) == ("2026-12-01T00:00:00Z", "default")  # Tokyo
    # The user writes to the bot from Berlin: their zone is now known.
    await rt.references.record(parse_activity(activity(
        service_url=emulator.url, aad=NOWHERE_USER, conversation=f"a:{NOWHERE_USER}",
        localTimezone="Europe/Berlin")))
    await tick(rt, at("2026-12-01T00:00:00"))  # 1 December's went at 09:00 Tokyo
    [item] = await items(rt, "k")
    # From now on 09:00 Berlin, from the next day on (not 1 December again).
    assert (item["due"], item["timezone"], item["zoneSource"]) == \
        ("2026-12-02T08:00:00Z", "Europe/Berlin", "recipient")


# --- exactly once -------------------------------------------------------------------------

async def test_racing_ticks_dispatch_each_item_once(
        rt: Runtime, queue: Recorder, emulator: ConnectorEmulator) -> None:
    for n in range(12):
        await schedule(rt, send(f"race-{n}", {"at": "2026-11-30T13:00:00Z"},
                                to={"user": [NY_USER, BERLIN_USER, NOWHERE_USER][n % 3]}))
        await schedule(rt, send(f"series-{n}", {"cron": "0 * * * *", "timezone": "UTC"}))
    assert len(queue.take()) == 12  # each series' 12:00 went straight onto the queue
    due = at("2026-11-30T13:00:00")
    reports = await asyncio.gather(*(tick(rt, due) for _ in range(4)),
                                   tick(rt, due + timedelta(seconds=1)))
    assert sum(r.dispatched for r in reports) == 24
    assert sorted(queue.keys) == sorted([f"race-{n}" for n in range(12)]
                                        + [f"series-{n}:2026-11-30T13:00Z" for n in range(12)])
    await deliver(rt, queue.take())
    assert emulator.counters["delivered"] == 24
    assert emulator.duplicate_keys() == []


async def test_a_crash_between_claim_and_enqueue_loses_nothing(
        rt: Runtime, queue: Recorder) -> None:
    await schedule(rt, send("k", {"at": "2026-11-30T13:00:00Z"}))
    queue.fail = 1
    due = at("2026-11-30T13:00:00")
    assert (await tick(rt, due)).dispatched == 0
    [item] = await items(rt, "k")
    assert item["state"] == "dispatching"
    # A tick overlapping the claim's lease leaves it alone...
    assert (await tick(rt, due + timedelta(seconds=20))).busy == 1
    # ...and the next tick, a minute later, sends it, once.
    report = await tick(rt, due + timedelta(minutes=1))
    assert report.dispatched == 1 and queue.keys == ["k"]
    assert report.late == [60.0]
    assert timedelta(minutes=1) > scheduler.LEASE


async def test_a_crash_after_enqueue_repeats_a_send_that_is_delivered_once(
        rt: Runtime, queue: Recorder, emulator: ConnectorEmulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    await schedule(rt, send("k", {"at": "2026-11-30T13:00:00Z"}))
    real = ScheduleStore.submit
    calls = 0

    async def dies_once(store: ScheduleStore, ops: list[Any]) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("the process died here")
        return await real(store, ops)

    monkeypatch.setattr(ScheduleStore, "submit", dies_once)
    due = at("2026-11-30T13:00:00")
    await tick(rt, due)
    await tick(rt, due + timedelta(minutes=1))  # the next tick
    assert queue.keys == ["k", "k"]  # the same deterministic key twice...
    await deliver(rt, queue.take())
    assert emulator.counters["delivered"] == 1  # ...delivered once


async def test_scheduling_the_same_message_twice_stores_one_item(rt: Runtime) -> None:
    body = send("k", {"at": "2026-12-01T09:00:00Z"})
    assert await asyncio.gather(schedule(rt, body), schedule(rt, body)) in (
        ["scheduled", "already-scheduled"], ["already-scheduled", "scheduled"])
    assert await schedule(rt, body) == "already-scheduled"
    assert len(await items(rt, "k")) == 1


# --- listing, cancelling, changing --------------------------------------------------------------

async def test_cancel_then_schedule_again(rt: Runtime, queue: Recorder) -> None:
    await schedule(rt, send("k", {"at": "2026-12-01T09:00:00Z"}))
    cancel = json.dumps({"version": 1, "op": "cancel", "key": "k"})
    assert (await process(rt, cancel, message_id="c1")).reason == "cancelled"
    [item] = await items(rt, "k")
    assert item["state"] == "cancelled" and await items(rt) == []
    assert (await tick(rt, at("2026-12-01T09:00:00"))).read == 0  # its due row is gone
    # Scheduled again under the same key, for another time.
    assert await schedule(rt, send("k", {"at": "2026-12-02T09:00:00Z"})) == "scheduled"
    await tick(rt, at("2026-12-02T09:00:00"))
    assert queue.keys == ["k"]


async def test_reschedule_by_update_moves_the_item(rt: Runtime, queue: Recorder) -> None:
    await schedule(rt, send("k", {"at": "2026-12-01T09:00:00Z"}))
    # (Through the worker, which reads the real clock: a time far ahead.)
    move = json.dumps({"version": 1, "op": "update", "key": "k",
                       "schedule": {"local": "2099-12-03T09:00"}})
    assert (await process(rt, move, message_id="u1")).reason == "rescheduled"
    [item] = await items(rt, "k")
    assert item["due"] == "2099-12-03T08:00:00Z"  # the Berlin user's 09:00
    assert (await tick(rt, at("2026-12-01T09:00:00"))).read == 0
    await tick(rt, at("2099-12-03T08:00:00"))
    assert queue.keys == ["k"]


async def test_update_changes_the_content_before_it_fires(
        rt: Runtime, queue: Recorder, emulator: ConnectorEmulator) -> None:
    await schedule(rt, send("k", {"at": "2026-12-01T09:00:00Z"}, text="draft"))
    update = json.dumps({"version": 1, "op": "update", "key": "k", "text": "final"})
    outcome = await process(rt, update, message_id="u1")
    assert (outcome.state, outcome.reason) == ("done", "scheduled")  # no retry: it's stored
    [item] = await items(rt, "k")
    assert item["content"] == {"text": "final"}
    await tick(rt, at("2026-12-01T09:00:00"))
    await deliver(rt, queue.take())
    assert [x.text for x in emulator.deliveries] == ["final"]


async def test_delete_of_a_key_still_scheduled_cancels_it(rt: Runtime) -> None:
    await schedule(rt, send("k", {"cron": "0 9 * * *"}))
    delete = json.dumps({"version": 1, "op": "delete", "key": "k"})
    assert (await process(rt, delete, message_id="d1")).state == "done"
    assert [i["state"] for i in await items(rt, "k")] == ["cancelled"]


async def test_one_occurrence_can_be_cancelled_or_changed_by_its_key(
        rt: Runtime, queue: Recorder) -> None:
    await schedule(rt, send("k", {"cron": "0 9 * * *", "timezone": "UTC"}))
    for op, key, extra in (("cancel", "k:2026-12-02T09:00Z", {}),
                           ("update", "k:2026-12-03T09:00Z", {"text": "special"})):
        body = json.dumps({"version": 1, "op": op, "key": key, **extra})
        assert (await process(rt, body, message_id="x")).state == "done"
    [item] = await items(rt, "k")
    assert item["skips"] == ["2026-12-02T09:00:00Z"]
    for day in (1, 2, 3, 4):
        await tick(rt, at(f"2026-12-0{day}T09:00:00"))
    assert queue.keys == ["k:2026-12-01T09:00Z", "k:2026-12-03T09:00Z", "k:2026-12-04T09:00Z"]
    assert [m.get("text") for m, _ in queue.sent] == ["Stand-up in 5", "special",
                                                      "Stand-up in 5"]
    [item] = await items(rt, "k")
    assert (item["fired"], item["skipped"]) == (3, 1)
    assert "skips" not in item and "overrides" not in item


async def test_listing_shows_whats_to_come(rt: Runtime) -> None:
    await schedule(rt, send("b", {"at": "2026-12-02T09:00:00Z"}))
    await schedule(rt, send("a", {"rrule": "FREQ=DAILY;BYHOUR=7;BYMINUTE=0"}))
    listed = await items(rt)
    assert [(i["key"], i["due"]) for i in listed] == [("a", "2026-12-01T06:00:00Z"),
                                                      ("b", "2026-12-02T09:00:00Z")]
    assert listed[0]["schedule"] == {"rrule": "FREQ=DAILY;BYHOUR=7;BYMINUTE=0",
                                     "start": "2026-11-30T13:00:00"}
    assert listed[0]["to"] == {"user": BERLIN_USER}
    assert await items(rt, "a:2026-12-01T06:00Z") == [listed[0]]  # by an occurrence key


# --- refused when scheduled ---------------------------------------------------------------

@pytest.mark.parametrize(("schedule_", "says"), [
    ({"rrule": "FREQ=FORTNIGHTLY"}, "invalid RRULE"),
    ({"cron": "0 9 * * MON-FRI"}, "invalid cron"),
    ({"local": "2026-12-01T09:00", "timezone": "Berlin"}, "unknown time zone"),
])
async def test_an_invalid_schedule_is_parked_with_its_reason(
        rt: Runtime, schedule_: dict[str, Any], says: str) -> None:
    body = send("bad", schedule_)
    outcome = await process(rt, body, message_id="bad-1")
    assert (outcome.state, outcome.reason) == ("poisoned", "invalid-schedule")
    [parked] = [json.loads(m.content) for m in
                await rt.outbox.poison_queue.peek_messages(max_messages=5)]
    assert parked["reason"] == "invalid-schedule" and says in parked["detail"]
    assert await items(rt, "bad") == []


async def test_a_schedule_already_over_is_parked_when_scheduled(rt: Runtime) -> None:
    body = send("over", {"cron": "0 9 * * *", "until": "2026-11-01"})
    assert await schedule(rt, body) == "invalid-schedule"
    [parked] = await rt.outbox.poison_queue.peek_messages()
    assert "no occurrence" in json.loads(parked.content)["detail"]


# --- cost --------------------------------------------------------------------------------------

async def test_a_tick_reads_what_is_due_not_the_backlog(rt: Runtime, queue: Recorder) -> None:
    for n in range(60):
        await schedule(rt, send(f"future-{n}", {"at": f"2027-01-{n % 28 + 1:02d}T09:00:00Z"}))
    for n in range(5):
        await schedule(rt, send(f"due-{n}", {"at": "2026-12-01T09:00:00Z"}))
    report = await tick(rt, at("2026-12-01T09:00:00"))
    assert (report.due, report.dispatched) == (5, 5)
    assert report.read <= 3 * 5  # due rows and their items only


def test_the_timer_is_registered_and_the_app_imports_cheaply() -> None:
    root = Path(__file__).parents[1]
    code = ("import sys, function_app; "
            "fn = [f for f in function_app.app.get_functions() "
            "if f.get_function_name() == 'schedules'][0]; "
            "t = fn.get_trigger(); "
            "print(t.schedule, t.run_on_startup, "
            "any(m.startswith(('dateutil', 'zoneinfo', 'proactive.sched')) "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                         text=True, check=True).stdout.split()
    # run_on_startup off: on Flex every new instance would tick as it starts.
    assert out == ["0", "*/1", "*", "*", "*", "*", "False", "False"]



async def test_an_occurrence_the_contract_now_refuses_is_parked_and_the_tick_goes_on(
        rt: Runtime, queue: Recorder) -> None:
    """Content stored under older rules that today's contract refuses: the
    occurrence is parked with the reason (as the worker would have), the
    other items still go out."""
    assert await schedule(rt, send("old", {"at": "2026-11-30T13:00:00Z"})) == "scheduled"
    assert await schedule(rt, send("new", {"at": "2026-11-30T13:00:00Z"},
                                   to={"user": NY_USER})) == "scheduled"
    [entity] = [e async for e in rt.schedules_table.list_entities()
                if e.get("kind") == "item" and e.get("key") == "old"]
    data = json.loads(entity["data"])
    data["content"]["topic"] = "Not a topic!"
    await rt.schedules_table.update_entity({**entity, "data": json.dumps(data)})
    report = await tick(rt, at("2026-11-30T12:59:20"))
    assert report.dispatched == 2
    assert [m["key"] for m, _ in queue.sent] == ["new"]
    received = await rt.outbox.poison_queue.receive_message()
    assert received is not None
    parked = json.loads(received.content)
    assert (parked["reason"], json.loads(parked["message"])["key"]) == ("schema", "old")
    assert "'topic'" in parked["detail"]
