"""Follow-ups (issue 21, README "Read, acknowledged, reminded"): a send's
`followUp` stored with the scheduler as `<key>:reminder`, sent when due to
exactly those who hadn't read / acknowledged, once; against real Table and
Queue Storage (Azurite) and the Connector emulator."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from proactive.contract import InvalidMessage, parse_message
from proactive.contract.fields import parse_duration
from proactive.delivering.ack import ACK_VERB, ack_action
from proactive.receiving.activities import parse_activity
from proactive.receiving.endpoint import handle_activity
from proactive.reporting.reports import send_report
from proactive.runtime import Runtime
from proactive.scheduling.timer import tick
from proactive.storage.tables import now_utc
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from tests.activities_data import activity, install
from tests.polling import eventually

USERS = [f"6f3a8c1e-0000-4000-8000-{n:012d}" for n in range(10)]
REMIND = {"after": "PT5M", "unless": "read", "text": "Reminder: please read the policy"}


def test_follow_up_fields_are_checked() -> None:
    assert parse_duration("PT4H") == timedelta(hours=4)
    assert parse_duration("P1DT12H") == timedelta(days=1, hours=12)
    base = {"version": 1, "op": "send", "key": "k", "to": {"user": USERS[0]}, "text": "hi"}
    parsed = parse_message(json.dumps({**base, "followUp": REMIND}))
    assert parsed.content is not None and parsed.content.follow_up is not None
    assert parse_message(json.dumps(parsed.to_json())).content == parsed.content
    for bad in ({**REMIND, "after": "PT4M"}, {**REMIND, "after": "P31D"},
                {**REMIND, "after": "4 hours"}, {**REMIND, "after": "PT"},
                {**REMIND, "unless": "seen"}, {**REMIND, "to": {"user": "x"}}, "soon"):
        with pytest.raises(InvalidMessage):
            parse_message(json.dumps({**base, "followUp": bad}))


async def drain(rt: Runtime) -> None:
    while messages := [m async for m in rt.outbox.queue.receive_messages(max_messages=32)]:
        for message in messages:
            await process(rt, message.content, message_id=message.id)
            await rt.outbox.queue.delete_message(message)


async def post(rt: Runtime, body: dict) -> None:
    assert (await handle_activity(rt, {}, json.dumps(body).encode())).status == 200


async def sent_and_partly_read(runtime: Runtime, emulator: ConnectorEmulator) -> None:
    """Two sends with a follow-up to USERS; `other` is cancelled. Of `policy`:
    0-2 read it, 3 acknowledged it (that counts as read), 4 read only an older
    message. So its reminder is due to 4-9 alone."""
    url = emulator.url
    for n, aad in enumerate(USERS):
        await runtime.references.record(parse_activity(install(
            service_url=url, aad=aad, conversation=f"a:1conv{n}")))
    for key in ("policy", "other"):
        await process(runtime, json.dumps({
            "version": 1, "op": "send", "key": key, "to": {"users": USERS},
            "text": f"Read the new {key}", "ack": True, "followUp": REMIND}), message_id=key)
    await drain(runtime)
    sent = {d.conversation_id: d.activity_id for d in emulator.deliveries
            if "new policy" in json.dumps(d.body)}
    assert len(emulator.deliveries) == 20 and len(sent) == 10
    await process(runtime, json.dumps({"version": 1, "op": "cancel", "key": "other"}),
                  message_id="c")
    for n in range(5):
        last = int(sent[f"a:1conv{n}"]) - (1 if n == 4 else 0)
        if n == 3:
            continue
        await post(runtime, activity("event", aad=USERS[n], conversation=f"a:1conv{n}",
                                     service_url=url,
                                     name="application/vnd.microsoft.readReceipt",
                                     value={"lastReadMessageId": str(last)}))
    await post(runtime, activity("invoke", aad=USERS[3], conversation="a:1conv3",
                                 service_url=url, name="adaptiveCard/action",
                                 value={"action": {"type": "Action.Execute", "verb": ACK_VERB,
                                                   "data": ack_action("policy", "")["data"]}}))


async def reminder_report(runtime: Runtime) -> Counter[tuple[str, str]]:
    text = b"".join([c async for c in send_report(runtime, "policy:reminder", "csv")]).decode()
    return Counter((r["state"], r["reason"]) for r in csv.DictReader(io.StringIO(text)))


DUE = {f"a:1conv{n}": 1 for n in range(4, 10)}  # each of 4-9 once, nobody else
REMINDED = {("sent", ""): 6, ("skipped", "already-read"): 3, ("skipped", "already-acked"): 1}


async def test_the_reminder_goes_once_to_exactly_who_had_not_read(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    await sent_and_partly_read(runtime, emulator)
    before = len(emulator.deliveries)
    assert (await tick(runtime, now_utc() + timedelta(minutes=1))).dispatched == 0  # not yet
    await drain(runtime)
    assert len(emulator.deliveries) == before

    for _ in range(2):  # a second tick finds nothing more to do
        await tick(runtime, now_utc() + timedelta(minutes=6))
        await drain(runtime)
    assert Counter(d.conversation_id for d in emulator.deliveries[before:]) == DUE
    assert all(d.text == REMIND["text"] for d in emulator.deliveries[before:])
    assert await reminder_report(runtime) == REMINDED


class _Killed(BaseException):
    """The worker process dies: no `except Exception` of the product catches it."""


async def test_the_reminder_goes_once_to_exactly_who_had_not_read_through_a_killed_worker(
        runtime: Runtime, emulator: ConnectorEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from proactive.delivering import broadcast

    monkeypatch.setattr(broadcast, "STANDBY", 1.0)  # 60 s in production
    monkeypatch.setattr(broadcast, "CONCURRENCY", 1)  # the kill finds no other call in flight
    await sent_and_partly_read(runtime, emulator)
    before = emulator.counters["delivered"]
    await tick(runtime, now_utc() + timedelta(minutes=6))

    # The tick queued the reminder's recipients as parts. The worker dies on
    # its way to Teams with the third reminder (two went out; its recipient
    # is claimed): from then on it does nothing, not even a `finally` (the
    # part's standby copy stays on the queue).
    real = runtime.connector.send, runtime.deliveries.claim, runtime.outbox.withdraw
    calls = 0

    async def send(*args: Any, **kwargs: Any) -> str:
        nonlocal calls
        calls += 1
        if calls >= 3:
            raise _Killed
        return await real[0](*args, **kwargs)

    async def dead(*args: Any, **kwargs: Any) -> Any:
        if calls >= 3:
            raise _Killed
        return await real[1](*args, **kwargs)

    async def withdraw(*args: Any, **kwargs: Any) -> None:
        if calls >= 3:
            raise _Killed
        await real[2](*args, **kwargs)

    runtime.connector.send, runtime.deliveries.claim = send, dead  # type: ignore[method-assign]
    runtime.outbox.withdraw = withdraw  # type: ignore[method-assign]
    held = []
    with pytest.raises(_Killed):
        while True:  # the host keeps a message it handed out for its lease (1 s here)
            [message] = [m async for m in runtime.outbox.queue.receive_messages(
                max_messages=1, visibility_timeout=1)]
            held.append(message.content)
            await process(runtime, message.content, message_id=message.id)
            await runtime.outbox.queue.delete_message(message)
    runtime.connector.send, runtime.deliveries.claim, runtime.outbox.withdraw = real  # type: ignore[method-assign]
    assert emulator.counters["delivered"] == before + 2

    # The part it held comes back twice (its lease ran out, and its standby
    # copy) to a healthy worker, with the parts not yet started; the dead
    # worker's claim has run out meanwhile (the store's clock moves on).
    # Its holder's lease and its recording window are long over.
    later = runtime.deliveries.lease + runtime.deliveries.record_for + timedelta(seconds=1)
    runtime.deliveries.clock = lambda: now_utc() + later
    killed = json.loads(held[-1])["to"]

    async def visible() -> list[Any]:
        return [m async for m in runtime.outbox.queue.receive_messages(
            max_messages=32, visibility_timeout=30)]

    back: list[Any] = []
    while sum(json.loads(m.content)["to"] == killed for m in back) < 2:
        back += await eventually(visible, what="the killed part back")
    for message in back:
        await process(runtime, message.content, message_id=message.id)
        await runtime.outbox.queue.delete_message(message)
    await drain(runtime)

    reminders = Counter(d.conversation_id for d in emulator.deliveries[before:])
    assert reminders == DUE and emulator.counters["delivered"] == before + len(DUE)
    # (The two sends before it are cards, with no text: told apart by key only.)
    assert [d for d in emulator.duplicates() if d["text"] == REMIND["text"]] == []
    assert await reminder_report(runtime) == REMINDED


def test_a_reminder_that_could_never_be_sent_is_refused_with_the_send() -> None:
    base = {"version": 1, "op": "send", "key": "k", "to": {"user": USERS[0]}, "text": "hi"}
    for content in ({"card": {"type": "NotACard"}}, {"summary": "no content"}):
        follow_up = {"after": "PT1H", "unless": "read", **content}
        with pytest.raises(InvalidMessage, match="followUp"):
            parse_message(json.dumps({**base, "followUp": follow_up}))


def test_a_producer_cannot_set_whom_a_reminder_skips() -> None:
    from proactive.app_only import refuse_app_only

    unless = {"key": "policy", "what": "read"}
    body = {"version": 1, "op": "send", "key": "k:reminder", "to": {"user": USERS[0]},
            "text": "hi", "unless": unless}
    assert parse_message(json.dumps(body)).needs_seal  # the worker acts on it only if signed
    with pytest.raises(InvalidMessage):
        refuse_app_only(body)  # the HTTP API and the CLI refuse it


async def test_a_group_chat_is_not_reminded_since_its_reading_cannot_be_known(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    group = "19:group-chat@thread.v2"
    await runtime.references.record(parse_activity(activity(
        "conversationUpdate", scope="groupChat", conversation=group, service_url=emulator.url,
        membersAdded=[{"id": "28:11111111-2222-3333-4444-555555555555"}])))
    await process(runtime, json.dumps({"version": 1, "op": "send", "key": "g", "text": "hi",
                                       "to": {"conversation": group}, "followUp": REMIND}),
                  message_id="g")
    await drain(runtime)
    assert len(emulator.deliveries) == 1
    await tick(runtime, now_utc() + timedelta(minutes=6))
    await drain(runtime)
    assert len(emulator.deliveries) == 1
    text = b"".join([c async for c in send_report(runtime, "g:reminder", "csv")]).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["state"], r["reason"]) for r in rows] == [("skipped", "not-trackable")]


async def test_a_scheduled_send_plans_its_reminder_when_it_goes_out(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    from proactive.contract.schedule.zones import iso_instant
    from proactive.scheduling import list_items

    await runtime.references.record(parse_activity(install(
        service_url=emulator.url, aad=USERS[0], conversation="a:1conv0")))
    at = now_utc().replace(microsecond=0) + timedelta(minutes=10)
    await process(runtime, json.dumps({
        "version": 1, "op": "send", "key": "later", "to": {"user": USERS[0]},
        "text": "Policy", "schedule": {"at": iso_instant(at)}, "followUp": REMIND}),
        message_id="s")
    assert await list_items(runtime.schedules_table, "later:reminder") == []  # not sent yet
    await tick(runtime, at + timedelta(seconds=1))
    await drain(runtime)
    assert [d.text for d in emulator.deliveries] == ["Policy"]
    [reminder] = await list_items(runtime.schedules_table, "later:reminder")
    assert reminder["state"] == "scheduled"
    await tick(runtime, now_utc() + timedelta(minutes=6))
    await drain(runtime)
    assert [d.text for d in emulator.deliveries] == ["Policy", REMIND["text"]]
