"""The outbox worker against real storage (Azurite) and the Connector
emulator over loopback HTTP: what each message and each answer leads to."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from proactive.receiving.activities import parse_activity
from proactive.runtime import Runtime
from proactive.storage import deliveries as d
from proactive.storage.reference_keys import InstallState
from proactive.storage.tables import safe_key
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from tests.activities_data import TENANT, USER_AAD, activity, uninstall
from tests.polling import eventually
from tests.sealed import app_made

CONV = "a:1personal-conversation"


def send(key: str = "k1", to: dict[str, Any] | None = None, **extra: Any) -> str:
    message = {"version": 1, "op": "send", "key": key, "to": to or {"user": USER_AAD},
               "text": "Build **42** is green", **extra}
    return json.dumps(message)


async def row(rt: Runtime, key: str, recipient: str = f"user:{USER_AAD}") -> dict[str, Any]:
    table = rt.deliveries.table
    return dict(await table.get_entity(safe_key(key), safe_key(recipient)))


async def queued(rt: Runtime, queue: Any = None) -> list[dict[str, Any]]:
    """The visible messages (a delayed retry is not among them: see `waiting`)."""
    client = queue or rt.outbox.queue
    return [json.loads(m.content) for m in await client.peek_messages(max_messages=32)]


async def waiting(rt: Runtime) -> int:
    """Messages on the outbox queue, the invisible (delayed) ones too."""
    count = (await rt.outbox.queue.get_queue_properties()).approximate_message_count
    assert count is not None  # the service always returns it
    return count


async def receive(rt: Runtime, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Take `count` messages off the outbox queue as they become visible."""
    taken: list[dict[str, Any]] = []

    async def more() -> bool:
        async for message in rt.outbox.queue.receive_messages(max_messages=32):
            taken.append(json.loads(message.content))
            await rt.outbox.queue.delete_message(message)
        return len(taken) >= count

    await eventually(more, timeout=timeout, what=f"{count} messages on the queue")
    return taken


async def test_send_to_a_stored_user_is_delivered_and_recorded(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    outcome = await process(installed, send(summary="CI"), message_id="m1")
    assert outcome.state == "done"
    [delivery] = emulator.deliveries
    assert delivery.conversation_id == CONV
    assert delivery.text == "Build **42** is green"
    assert delivery.summary == "CI"
    record = await row(installed, "k1")
    assert record["state"] == d.SENT
    assert record["activityId"] == delivery.activity_id
    assert record["conversationId"] == CONV
    assert record["attempts"] == 1
    assert record["sentAt"] and record["createdAt"]


async def test_the_same_key_is_delivered_once(installed: Runtime,
                                              emulator: ConnectorEmulator) -> None:
    for message_id in ("m1", "m1-redelivered", "m2"):
        await process(installed, send(), message_id=message_id)
    assert emulator.counters["delivered"] == 1


async def test_two_workers_with_copies_of_one_message_send_once(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    outcomes = await asyncio.gather(*(process(installed, send(), message_id=f"m{i}")
                                      for i in range(4)))
    assert emulator.counters["delivered"] == 1
    # Each copy either sent, found it sent, or found the sender's claim and
    # put itself back (what the next test pins down).
    assert sorted(o.reason for o in outcomes if o.state == "done") in (
        ["duplicate"] * n + ["sent"] for n in range(4))
    assert all((o.reason, o.counts) == ("busy", False) for o in outcomes if o.state == "retry")
    assert await waiting(installed) == sum(o.state == "retry" for o in outcomes)


async def test_a_copy_that_finds_a_live_claim_puts_itself_back_uncounted(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    # Another worker has claimed the delivery and is calling Teams right now.
    holder = await installed.deliveries.claim("k1", f"user:{USER_AAD}")
    assert isinstance(holder, d.Claim)
    outcomes = [await process(installed, send(), message_id=f"m{i}") for i in range(3)]
    assert [(o.state, o.reason, o.counts) for o in outcomes] == [("retry", "busy", False)] * 3
    assert emulator.counters["delivered"] == 0
    # The losers put their copy back for later instead of dropping it: one
    # queue message per loser, invisible for a short wait.
    assert await waiting(installed) == 3
    copies = await receive(installed, 3)
    assert [copy["key"] for copy in copies] == ["k1"] * 3
    assert all("attempt" not in copy for copy in copies)  # waiting used up no attempt
    # The holder records its send; when the copies come back, they find it
    # sent and nothing more goes out.
    await installed.deliveries.finish(holder, d.SENT, activityId="a1", conversationId=CONV)
    for copy in copies:
        assert (await process(installed, json.dumps(copy), message_id="later")).reason \
            == "duplicate"
    assert emulator.counters["delivered"] == 0
    assert await waiting(installed) == 0


async def test_a_send_without_a_key_uses_the_queue_message_id(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    body = json.dumps({"version": 1, "op": "send", "to": {"user": USER_AAD}, "text": "hi"})
    await process(installed, body, message_id="queue-id-7")
    await process(installed, body, message_id="queue-id-7")  # redelivered
    assert emulator.counters["delivered"] == 1
    assert (await row(installed, "msg:queue-id-7"))["state"] == d.SENT


async def test_a_user_never_seen_gets_a_new_conversation_when_the_tenant_is_known(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    other = "0f0f0f0f-1111-2222-3333-444444444444"
    await process(installed, send(to={"user": other, "tenant": TENANT}), message_id="m")
    [delivery] = emulator.deliveries
    assert delivery.conversation_id.startswith("a:")
    ref = await installed.references.user(other)
    assert ref is not None and ref.conversation_id == delivery.conversation_id
    # The stored conversation is reused next time: no second create.
    await process(installed, send("k2", to={"user": other}), message_id="m2")
    assert {x.conversation_id for x in emulator.deliveries} == {delivery.conversation_id}


async def test_an_unknown_user_in_an_unknown_tenant_fails_with_a_reason(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    await process(runtime, send(to={"user": "nobody", "tenant": "t-unknown"}), message_id="m")
    record = await row(runtime, "k1", "user:nobody")
    assert record["state"] == d.FAILED
    assert record["reason"] == "unknown-user"
    assert emulator.counters.get("requests", 0) == 0


async def test_an_uninstalled_user_fails_fast_without_a_connector_call(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    await installed.references.record(parse_activity(uninstall(service_url=emulator.url)))
    await process(installed, send(), message_id="m")
    record = await row(installed, "k1")
    assert (record["state"], record["reason"]) == (d.FAILED, "uninstalled")
    assert emulator.counters.get("requests", 0) == 0


@pytest.mark.parametrize("status", ["blocked", "blocked-209"])
async def test_a_user_who_blocked_the_bot_is_marked_and_skipped_next_time(
        installed: Runtime, emulator: ConnectorEmulator, status: str) -> None:
    emulator.set_status(CONV, status)
    await process(installed, send(), message_id="m")
    record = await row(installed, "k1")
    assert (record["state"], record["reason"]) == (d.FAILED, "blocked")
    ref = await installed.references.user(USER_AAD)
    assert ref is not None and ref.state == InstallState.BLOCKED
    calls = emulator.counters["requests"]
    await process(installed, send("k2"), message_id="m2")
    assert (await row(installed, "k2"))["reason"] == "blocked"
    assert emulator.counters["requests"] == calls  # skipped without calling Teams
    # A message from the user clears the mark.
    await installed.references.record(parse_activity(activity(service_url=emulator.url)))
    emulator.set_status(CONV, "ok")
    await process(installed, send("k3"), message_id="m3")
    assert (await row(installed, "k3"))["state"] == d.SENT


async def test_bot_removed_from_roster_marks_the_reference_uninstalled(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    emulator.set_status(CONV, "uninstalled")
    await process(installed, send(), message_id="m")
    assert (await row(installed, "k1"))["reason"] == "uninstalled"
    ref = await installed.references.user(USER_AAD)
    assert ref is not None and ref.state == InstallState.UNINSTALLED


async def test_throttling_requeues_with_retry_after_and_keeps_the_key(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    emulator.inject(429, retry_after=3, operation="send")
    body = json.dumps({"version": 1, "op": "send", "to": {"user": USER_AAD}, "text": "x"})
    outcome = await process(installed, body, message_id="first-id")
    assert (outcome.state, outcome.reason, outcome.delay) == ("retry", "throttled", 3.0)
    assert emulator.counters["delivered"] == 0
    record = await row(installed, "msg:first-id")
    assert (record["state"], record["reason"]) == (d.RETRYING, "throttled")
    # The retry is a new queue message, invisible for Retry-After seconds.
    assert await queued(installed) == []
    messages = installed.outbox.queue.receive_messages(visibility_timeout=1)
    assert [m async for m in messages] == []
    # Carry it out as the queue would, once visible: same key, attempt 2
    # (Retry-After later: this process held the conversation until then).
    later = installed.conversation_pacer.clock() + 4
    installed.conversation_pacer.clock = lambda: later
    copy = {**json.loads(body), "key": "msg:first-id", "attempt": 2}
    assert (await process(installed, await app_made(installed, copy),
                          message_id="second-id")).state == "done"
    record = await row(installed, "msg:first-id")
    assert (record["state"], record["attempts"]) == (d.SENT, 2)
    assert emulator.counters["delivered"] == 1


@pytest.mark.parametrize("status", [400, 413, 500])
async def test_permanent_answers_are_not_retried(installed: Runtime,
                                                 emulator: ConnectorEmulator,
                                                 status: int) -> None:
    emulator.inject(status, operation="send")
    outcome = await process(installed, send(), message_id="m")
    assert outcome.state == "failed"
    assert (await row(installed, "k1"))["state"] == d.FAILED
    assert await waiting(installed) == 0  # no retry, not even a delayed one


@pytest.mark.parametrize("status", [412, 502, 503, 504])
async def test_transient_answers_are_retried(installed: Runtime, emulator: ConnectorEmulator,
                                             status: int) -> None:
    emulator.inject(status, operation="send")
    outcome = await process(installed, send(), message_id="m")
    assert outcome.state == "retry"
    assert (await row(installed, "k1"))["state"] == d.RETRYING


async def test_retries_run_out_into_the_poison_queue_with_a_reason(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    emulator.inject(503, operation="send", count=1)
    last = {**json.loads(send()), "attempt": installed.settings.max_attempts}
    outcome = await process(installed, await app_made(installed, last), message_id="m")
    assert (outcome.state, outcome.reason) == ("poisoned", "retries-exhausted")
    record = await row(installed, "k1")
    assert (record["state"], record["reason"]) == (d.FAILED, "retries-exhausted")
    [parked] = await queued(installed, installed.outbox.poison_queue)
    assert parked["reason"] == "retries-exhausted"
    assert json.loads(parked["message"])["key"] == "k1"


async def test_a_stale_personal_conversation_is_created_again(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    emulator.inject(404, operation="send", code="ConversationNotFound", count=1)
    await process(installed, send(), message_id="m")
    record = await row(installed, "k1")
    assert record["state"] == d.SENT
    assert record["conversationId"] != CONV
    ref = await installed.references.user(USER_AAD)
    assert ref is not None and ref.conversation_id == record["conversationId"]


@pytest.mark.parametrize(("body", "reason"), [
    ("not json at all", "not-json"),
    ('{"version": 1, "op": "shout", "key": "k"}', "unknown-op"),
    ('{"version": 1, "op": "send", "to": {"user": "u"}}', "schema"),
    # 55,000 ASCII characters fit in a 64 KB queue message, but are 110,000
    # bytes as UTF-16: over Teams' 100 KB.
    (json.dumps({"version": 1, "op": "send", "key": "k", "to": {"user": "u"},
                 "text": "a" * 55_000}), "too-large"),
])
async def test_invalid_messages_are_parked_with_their_reason(
        runtime: Runtime, emulator: ConnectorEmulator, body: str, reason: str) -> None:
    outcome = await process(runtime, body, message_id="bad-1")
    assert (outcome.state, outcome.reason) == ("poisoned", reason)
    [parked] = await queued(runtime, runtime.outbox.poison_queue)
    assert parked["reason"] == reason
    assert parked["detail"]
    assert parked["message"] == body  # verbatim, to fix and put back
    assert parked["queueMessageId"] == "bad-1"
    assert emulator.counters.get("requests", 0) == 0


async def test_a_message_too_large_to_wrap_is_parked_verbatim(runtime: Runtime) -> None:
    body = json.dumps({"version": 1, "op": "send", "to": {"user": "u"},
                       "text": '"' * 30_000})  # escaping doubles it inside an envelope
    assert (await process(runtime, body, message_id="big")).reason == "too-large"
    [parked] = await runtime.outbox.poison_queue.peek_messages()
    assert parked.content == body


async def test_update_and_delete_by_key_alone(installed: Runtime,
                                              emulator: ConnectorEmulator) -> None:
    await process(installed, send("incident-42"), message_id="m1")
    update = {"version": 1, "op": "update", "key": "incident-42", "text": "resolved"}
    assert (await process(installed, json.dumps(update), message_id="m2")).state == "done"
    [delivery] = emulator.deliveries
    assert delivery.text == "resolved"
    assert delivery.updates == 1
    record = await row(installed, "incident-42")
    assert (record["updateState"], record["updates"]) == ("done", 1)
    delete = {"version": 1, "op": "delete", "key": "incident-42"}
    assert (await process(installed, json.dumps(delete), message_id="m3")).state == "done"
    assert emulator.deliveries[0].deleted
    record = await row(installed, "incident-42")
    assert (record["state"], record["deleteState"]) == (d.DELETED, "done")


async def test_an_update_before_its_send_waits_for_it(installed: Runtime,
                                                      emulator: ConnectorEmulator) -> None:
    update = {"version": 1, "op": "update", "key": "later", "text": "x"}
    outcome = await process(installed, json.dumps(update), message_id="u1")
    assert (outcome.state, outcome.reason) == ("retry", "unknown-key")
    assert emulator.counters.get("requests", 0) == 0


async def test_a_connector_that_cannot_delete_is_recorded_not_fatal(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    await process(installed, send("k"), message_id="m1")
    emulator.inject(501, operation="delete")
    delete = {"version": 1, "op": "delete", "key": "k"}
    assert (await process(installed, json.dumps(delete), message_id="m2")).state == "done"
    record = await row(installed, "k")
    assert (record["state"], record["deleteState"], record["deleteReason"]) == \
        (d.SENT, "failed", "not-supported")


async def test_group_chat_channel_thread_and_reply(runtime: Runtime,
                                                   emulator: ConnectorEmulator) -> None:
    chat = "19:chat@thread.v2"
    await runtime.references.record(parse_activity(activity(
        "conversationUpdate", scope="groupChat", conversation=chat,
        service_url=emulator.url, membersAdded=[{"id": "28:bot"}],
        recipient={"id": "28:bot"})))
    await process(runtime, send("g", to={"conversation": chat}), message_id="m1")
    assert emulator.delivered_to(chat)

    team = "19:general@thread.tacv2"
    body = activity("conversationUpdate", scope="channel", conversation=team,
                    service_url=emulator.url, membersAdded=[{"id": "28:bot"}],
                    recipient={"id": "28:bot"})
    body["channelData"] = {"tenant": {"id": TENANT}, "team": {"id": team}}
    await runtime.references.record(parse_activity(body))
    channel = "19:announcements@thread.tacv2"
    await process(runtime, send("t", to={"channel": channel, "team": team}), message_id="m2")
    record = await row(runtime, "t", f"channel:{channel}")
    assert record["state"] == d.SENT
    assert record["conversationId"] == f"{channel};messageid={record['activityId']}"
    await process(runtime, send("r", to={"channel": channel, "team": team,
                                         "replyTo": record["activityId"]}), message_id="m3")
    reply = await row(runtime, "r", f"thread:{channel};{record['activityId']}")
    assert reply["state"] == d.SENT
    assert len(emulator.deliveries) == 3


async def test_a_base64_encoded_message_is_understood(installed: Runtime,
                                                      emulator: ConnectorEmulator) -> None:
    import base64

    encoded = base64.b64encode(send("b64").encode()).decode()
    assert (await process(installed, encoded, message_id="m")).state == "done"
    assert emulator.counters["delivered"] == 1
    # Text that is neither JSON nor base64 JSON is still refused as not JSON.
    assert (await process(installed, "aGVsbG8=", message_id="m2")).reason == "not-json"
