"""Attempts whose outcome is unknown (README "Exactly once, as far as Teams
allows"): a worker that died during its call to Teams, an answer that never
came. Real Azurite, the Connector emulator over loopback HTTP.

A killed worker is played by its footprints: its claim on the delivery row,
and its call, which the emulator carried out (the user has the message);
then nothing, as after SIGKILL. The claim's lease runs out on the store's
injected clock, not by waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from proactive.api.sends import status
from proactive.config import Settings
from proactive.receiving.activities import parse_activity
from proactive.reporting.reports import send_report
from proactive.runtime import Runtime
from proactive.storage import deliveries as d
from proactive.storage import tables
from proactive.storage.copies import copies
from proactive.storage.deliveries import Claim
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from tests.activities_data import USER_AAD, install

CONV = "a:1personal-conversation"
RECIPIENT = f"user:{USER_AAD}"
TEXT = "Build **42** is green"


def send(key: str, *, users: bool = False, **extra: Any) -> str:
    to = {"users": [USER_AAD]} if users else {"user": USER_AAD}
    return json.dumps({"version": 1, "op": "send", "key": key, "to": to, "text": TEXT,
                       **extra})


async def row(rt: Runtime, key: str) -> dict[str, Any]:
    return dict(await rt.deliveries.table.get_entity(tables.safe_key(key),
                                                     tables.safe_key(RECIPIENT)))


async def drain(rt: Runtime) -> None:
    """Run the worker over what is visible on the outbox queue, as the host would."""
    while batch := [m async for m in rt.outbox.queue.receive_messages(
            messages_per_page=32, visibility_timeout=30, max_messages=32)]:
        for message in batch:
            await process(rt, message.content, message_id=message.id)
            await rt.outbox.queue.delete_message(message)


async def killed_mid_call(rt: Runtime, emulator: ConnectorEmulator, key: str) -> str:
    """A worker claimed the delivery, Teams carried its call out, and the
    worker died before the answer was recorded. Its lease then runs out (the
    store's clock moves past it). Returns the first copy's activity id."""
    claim = await rt.deliveries.claim(key, RECIPIENT)
    assert isinstance(claim, Claim)
    activity_id = await rt.connector.send(emulator.url, CONV, {"type": "message", "text": TEXT})
    # Its holder's lease and its recording window are long over.
    later = rt.deliveries.lease + rt.deliveries.record_for + timedelta(seconds=1)
    rt.deliveries.clock = lambda: tables.now_utc() + later
    return activity_id


async def test_a_send_recovered_from_a_crash_mid_call_is_resent_and_marked_ambiguous(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    await process(installed, send("k", users=True), message_id="split")  # the part, queued
    claimed_at = None
    await killed_mid_call(installed, emulator, "k")
    claimed_at = (await row(installed, "k"))["updatedAt"]
    await drain(installed)  # the part comes back to a healthy worker (default: resend)

    # Two copies (the witness says so), and the row says so too.
    assert emulator.duplicates() == [{"conversationId": CONV, "text": TEXT, "count": 2}]
    record = await row(installed, "k")
    assert (record["state"], record["attempts"], record["ambiguous"]) == (d.SENT, 2, True)
    assert (record["unknownAttempt"], record["unknownAttemptAt"], record["unknownCause"]) == (
        1, claimed_at, "lease-expired")
    progress = await installed.campaigns.progress("k")
    assert progress is not None and progress.summary.state == "done"
    assert progress.counts == {"queued": 1, "sent": 1, "ambiguous": 1}
    report = [json.loads(line) async for chunk in send_report(installed, "k", "json")
              for line in chunk.decode().splitlines()]
    assert [(r["state"], r["ambiguous"], r["unknownAttempt"]) for r in report] == [
        ("sent", True, 1)]


async def test_on_unknown_skip_records_unknown_and_sends_no_second_copy(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    await process(installed, send("k", users=True, onUnknown="skip"), message_id="split")
    await killed_mid_call(installed, emulator, "k")
    await drain(installed)

    assert emulator.counters["delivered"] == 1  # the dead worker's copy only
    record = await row(installed, "k")
    assert (record["state"], record["reason"], record["ambiguous"]) == (
        d.UNKNOWN, "outcome-unknown", True)
    progress = await installed.campaigns.progress("k")
    assert progress is not None and progress.summary.state == "done"
    assert progress.counts == {"queued": 1, "unknown": 1, "ambiguous": 1}


@pytest.fixture
async def impatient(installed: Runtime) -> Runtime:
    """A Connector client that gives up on an answer after 0.3 s."""
    installed.connector.timeout = 0.3
    return installed


async def test_a_lost_answer_marks_the_retry_ambiguous(
        impatient: Runtime, emulator: ConnectorEmulator) -> None:
    emulator.inject(None, hang=5)  # carried out, answered too late
    await process(impatient, send("k"), message_id="m1")
    record = await row(impatient, "k")
    assert (record["state"], record["reason"]) == (d.RETRYING, "timeout")
    assert (record["ambiguous"], record["unknownAttempt"], record["unknownCause"]) == (
        True, 1, "timeout")
    await process(impatient, send("k"), message_id="m1")  # the retry: resent
    record = await row(impatient, "k")
    assert (record["state"], record["attempts"], record["ambiguous"]) == (d.SENT, 2, True)
    assert emulator.counters["delivered"] == 2
    # A single send's status counts it too.
    reply = await status(impatient, "k", base_url="/api/sends/k/")
    assert json.loads(reply.body)["counts"] == {"sent": 1, "ambiguous": 1, "read": 0,
                                                "unread": 1, "acked": 0}


async def test_a_lost_answer_with_on_unknown_skip_is_recorded_unknown_not_retried(
        impatient: Runtime, emulator: ConnectorEmulator) -> None:
    emulator.inject(None, hang=5)
    outcome = await process(impatient, send("k", onUnknown="skip"), message_id="m1")
    assert (outcome.state, outcome.reason) == ("done", "outcome-unknown")
    record = await row(impatient, "k")
    assert (record["state"], record["unknownCause"]) == (d.UNKNOWN, "timeout")
    assert (await impatient.outbox.queue.get_queue_properties()).approximate_message_count == 0
    assert emulator.counters["delivered"] == 1


async def test_a_late_answer_is_kept_beside_the_resent_copy_and_delete_reaches_both(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    """The first worker got Teams' answer but could not record it before its
    lease ran out (storage down); a second worker sent again. When the first
    one's write comes, it must not overwrite the second copy, nor be dropped."""
    first = await installed.deliveries.claim("k", RECIPIENT)
    assert isinstance(first, Claim)
    first_id = await installed.connector.send(emulator.url, CONV,
                                              {"type": "message", "text": TEXT})
    # Its holder's lease and its recording window are long over.
    later = installed.deliveries.lease + installed.deliveries.record_for + timedelta(seconds=1)
    installed.deliveries.clock = lambda: tables.now_utc() + later
    await process(installed, send("k"), message_id="m1")  # the second worker resends
    second_id = (await row(installed, "k"))["activityId"]
    assert second_id != first_id

    await installed.deliveries.finish(first, d.SENT, activityId=first_id,
                                      conversationId=CONV, serviceUrl=emulator.url)
    record = await row(installed, "k")
    assert (record["state"], record["activityId"]) == (d.SENT, second_id)
    assert [c["activityId"] for c in copies(record)] == [second_id, first_id]

    delete = json.dumps({"version": 1, "op": "delete", "key": "k"})
    assert (await process(installed, delete, message_id="m2")).state == "done"
    assert [x.deleted for x in emulator.deliveries] == [True, True]


async def test_a_late_answer_turns_a_row_recorded_unknown_into_sent(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    first = await installed.deliveries.claim("k", RECIPIENT)
    assert isinstance(first, Claim)
    first_id = await installed.connector.send(emulator.url, CONV,
                                              {"type": "message", "text": TEXT})
    # Its holder's lease and its recording window are long over.
    later = installed.deliveries.lease + installed.deliveries.record_for + timedelta(seconds=1)
    installed.deliveries.clock = lambda: tables.now_utc() + later
    await process(installed, send("k", onUnknown="skip"), message_id="m1")
    assert (await row(installed, "k"))["state"] == d.UNKNOWN
    await installed.deliveries.finish(first, d.SENT, activityId=first_id,
                                      conversationId=CONV, serviceUrl=emulator.url)
    record = await row(installed, "k")
    assert (record["state"], record["activityId"], record["ambiguous"]) == (
        d.SENT, first_id, True)
    assert emulator.counters["delivered"] == 1


# --- the bound on calls in flight --------------------------------------------------------

@pytest.fixture
async def bounded(settings: Settings, emulator: ConnectorEmulator
                  ) -> AsyncIterator[tuple[Runtime, list[int]]]:
    """Twelve users; deliveries in flight per tenant bounded at 3; the
    Connector calls in flight at each moment recorded."""
    from proactive_devtools.provision import provision

    settings = dataclasses.replace(settings, max_calls_in_flight=3)
    await provision(settings)
    rt = await Runtime.create(settings)
    for i in range(12):
        await rt.references.record(parse_activity(install(
            service_url=emulator.url, aad=f"00000000-0000-4000-8000-{i:012d}",
            conversation=f"a:conv-{i}")))
    emulator.configure(answer_seconds=0.1)
    seen: list[int] = []
    now = 0
    real = rt.connector.send

    async def counted(*args: Any, **kwargs: Any) -> str:
        nonlocal now
        now += 1
        seen.append(now)
        try:
            return await real(*args, **kwargs)
        finally:
            now -= 1

    rt.connector.send = counted  # type: ignore[method-assign]
    try:
        yield rt, seen
    finally:
        await rt.close()


async def test_calls_in_flight_per_tenant_stay_within_the_bound(
        bounded: tuple[Runtime, list[int]], emulator: ConnectorEmulator) -> None:
    rt, seen = bounded
    users = [f"00000000-0000-4000-8000-{i:012d}" for i in range(12)]
    await process(rt, json.dumps({"version": 1, "op": "send", "key": "b", "text": "hi",
                                  "to": {"users": users}}), message_id="b")
    await asyncio.wait_for(drain(rt), 60)
    assert emulator.counters["delivered"] == 12
    assert max(seen) == 3  # reached, never passed


async def test_a_late_answer_landing_during_the_second_call_keeps_both(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    """The first holder's late answer is written while the second holder is
    still calling Teams: the second one's record keeps the first copy."""
    first = await installed.deliveries.claim("k", RECIPIENT)
    assert isinstance(first, Claim)
    first_id = await installed.connector.send(emulator.url, CONV, {"type": "message", "text": TEXT})
    # Its holder's lease and its recording window are long over.
    later = installed.deliveries.lease + installed.deliveries.record_for + timedelta(seconds=1)
    installed.deliveries.clock = lambda: tables.now_utc() + later
    second = await installed.deliveries.claim("k", RECIPIENT)
    assert isinstance(second, Claim)
    await installed.deliveries.finish(first, d.SENT, activityId=first_id,
                                      conversationId=CONV, serviceUrl=emulator.url)
    second_id = await installed.connector.send(emulator.url, CONV,
                                               {"type": "message", "text": TEXT})
    await installed.deliveries.finish(second, d.SENT, activityId=second_id,
                                      conversationId=CONV, serviceUrl=emulator.url)
    record = await row(installed, "k")
    assert (record["state"], record["attempts"], record["unknownCause"]) == (
        d.SENT, 2, "lease-expired")
    assert [c["activityId"] for c in copies(record)] == [second_id, first_id]


class _Killed(BaseException):
    """The process dies: no `except Exception` of the product catches it."""


async def test_a_worker_killed_waiting_for_its_send_slot_leaves_a_clean_retry(
        installed: Runtime, emulator: ConnectorEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker dies while it waits for the tenant's send slot: nothing was sent.
    async def dies_waiting(*args: Any, **kwargs: Any) -> float:
        raise _Killed

    monkeypatch.setattr(installed.tenant_pacer, "acquire", dies_waiting)
    with pytest.raises(_Killed):
        await process(installed, send("k"), message_id="held")
    monkeypatch.undo()
    # The message comes back long after any claim it could have left ran out.
    later = installed.deliveries.lease + installed.deliveries.record_for + timedelta(seconds=1)
    installed.deliveries.clock = lambda: tables.now_utc() + later
    await process(installed, send("k"), message_id="held")

    record = await row(installed, "k")
    assert (record["state"], record["attempts"]) == (d.SENT, 1)
    assert not record.get("ambiguous")  # a clean retry: not "may have two copies"
    assert emulator.counters["delivered"] == 1


async def test_a_claim_too_old_by_its_slot_is_given_back_not_called_on(
        installed: Runtime, emulator: ConnectorEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # The claim is taken, then its slot comes late (the pacing row's storage
    # was slow): by then a call might not end inside the claim's lease.
    real_until = installed.tenant_pacer.until

    async def slow_slot(*args: Any) -> None:
        await real_until(*args)
        late = installed.deliveries.lease * d.CALL_SHARE + timedelta(seconds=1)
        installed.deliveries.clock = lambda: tables.now_utc() + late

    monkeypatch.setattr(installed.tenant_pacer, "until", slow_slot)
    await process(installed, send("k"), message_id="m")

    assert emulator.counters["delivered"] == 0
    record = await row(installed, "k")
    assert (record["state"], record["attempts"]) == (d.RETRYING, 0)  # given back, uncounted
    assert not record.get("ambiguous")


async def test_storage_failing_between_claim_and_call_uses_up_no_attempt(
        installed: Runtime, emulator: ConnectorEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from proactive.errors import StorageUnavailable

    async def pacing_row_unreachable(*args: Any) -> None:  # the slot passed: a new one
        raise StorageUnavailable(detail="the pacing row could not be read")

    monkeypatch.setattr(installed.tenant_pacer, "until", pacing_row_unreachable)
    await process(installed, send("k"), message_id="m")

    assert emulator.counters["delivered"] == 0
    record = await row(installed, "k")
    assert (record["state"], record["attempts"]) == (d.RETRYING, 0)  # given back, uncounted
