"""Opt-out, opt-in and help: what a user types in the personal chat, the card's
opt-out button, and the send path's skip, against real storage (Azurite) and
the Connector emulator over loopback HTTP."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from proactive.config import Settings
from proactive.contract import parse_message
from proactive.receiving.activities import parse_activity
from proactive.receiving.commands import parse_command
from proactive.receiving.endpoint import handle_activity
from proactive.runtime import Runtime
from proactive.storage.preferences import ALL
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from tests.activities_data import TENANT, USER_AAD, activity, install
from tests.sealed import app_made

LOOPBACK = "http://127.0.0.1:9/connector/"


def body(data: object) -> bytes:
    return json.dumps(data).encode()


async def queued(rt: Runtime) -> list[dict[str, Any]]:
    return [json.loads(m.content) for m in await rt.outbox.queue.peek_messages(max_messages=32)]


async def replies(rt: Runtime) -> list[dict[str, Any]]:
    """The answers queued (a first message from a user also queues a welcome)."""
    return [m for m in await queued(rt) if m["key"].startswith("reply:")]


def say(text: str, **kw: Any) -> dict[str, Any]:
    return activity("message", service_url=LOOPBACK, text=text, **kw)


def send(key: str, **extra: Any) -> str:
    return json.dumps({"version": 1, "op": "send", "key": key, "to": {"user": USER_AAD},
                       "text": "Build **42** is green", **extra})


@pytest.mark.parametrize(("text", "expected"), [
    ("help", ("help", "")), ("  HELP ", ("help", "")), ("what is this?", ("help", "")),
    ("", ("help", "")), ("stop", ("stop", "")), ("Stop deployments", ("stop", "deployments")),
    ("<at>Proactive</at> stop", ("stop", "")), ("stop all", ("stop", "")),
    ("start ci.builds", ("start", "ci.builds")), ("stop Deploy Ments", ("stop", "?")),
    ("stop dé", ("stop", "?")), ("/start", ("start", "")),
])
def test_commands_are_read_from_the_text(text: str, expected: tuple[str, str]) -> None:
    assert parse_command(text) == expected


async def test_stop_records_the_opt_out_and_answers_once_through_the_outbox(
        runtime: Runtime) -> None:
    event = say("stop deployments")
    assert (await handle_activity(runtime, {}, body(event))).status == 200
    [opt_out] = await runtime.preferences.of_user(USER_AAD)
    assert (opt_out.topic, opt_out.via, opt_out.tenant_id) == ("deployments", "command", TENANT)
    assert opt_out.at
    [reply] = await replies(runtime)
    assert reply["to"] == {"user": USER_AAD, "tenant": TENANT}
    assert reply["service"] is True
    assert reply["card"]["body"][0]["text"] == "Stopped"
    assert "deployments" in reply["card"]["body"][1]["text"]
    parse_message(json.dumps(reply))  # a valid contract message
    # Teams redelivers: one answer.
    assert (await handle_activity(runtime, {}, body(event))).status == 200
    assert len(await replies(runtime)) == 1


async def test_start_clears_what_stop_set_and_help_lists_it(runtime: Runtime) -> None:
    for text in ("stop", "stop deployments"):
        await handle_activity(runtime, {}, body(say(text)))
    assert {o.topic for o in await runtime.preferences.of_user(USER_AAD)} == {ALL, "deployments"}
    await handle_activity(runtime, {}, body(say("help")))
    assert "You stopped all notifications." in json.dumps(
        (await replies(runtime))[-1]["card"])
    await handle_activity(runtime, {}, body(say("start deployments")))
    assert {o.topic for o in await runtime.preferences.of_user(USER_AAD)} == {ALL}
    assert "You still stopped all" in json.dumps((await replies(runtime))[-1]["card"])
    await handle_activity(runtime, {}, body(say("start")))
    assert await runtime.preferences.of_user(USER_AAD) == []


async def test_messages_outside_the_personal_chat_are_not_commands(runtime: Runtime) -> None:
    await handle_activity(runtime, {}, body(say("stop", scope="groupChat",
                                                conversation="19:group@thread.v2")))
    assert await runtime.preferences.of_user(USER_AAD) == []
    assert await queued(runtime) == []


async def test_the_welcome_says_how_to_get_help_and_stop(runtime: Runtime) -> None:
    await handle_activity(runtime, {}, body(install(service_url=LOOPBACK)))
    [welcome] = await queued(runtime)
    text = json.dumps(welcome["card"])
    assert "**help**" in text and "**stop**" in text
    assert welcome["service"] is True


def card_action(verb: str = "proactive.optout", data: Any = None) -> dict[str, Any]:
    return activity("invoke", service_url=LOOPBACK, name="adaptiveCard/action",
                    value={"action": {"type": "Action.Execute", "verb": verb,
                                      "data": {"topic": "deployments"} if data is None
                                      else data}})


async def test_the_card_button_opts_out_and_answers_with_the_replacing_card(
        runtime: Runtime) -> None:
    reply = await handle_activity(runtime, {}, body(card_action()))
    assert (reply.status, reply.content_type) == (200, "application/json")
    answer = json.loads(reply.body)
    assert answer["statusCode"] == 200
    assert answer["type"] == "application/vnd.microsoft.card.adaptive"
    assert answer["value"]["type"] == "AdaptiveCard"
    assert "deployments" in answer["value"]["body"][1]["text"]
    assert [o.topic for o in await runtime.preferences.of_user(USER_AAD)] == ["deployments"]
    assert await queued(runtime) == []  # answered in the response, nothing queued


@pytest.mark.parametrize(("verb", "data"), [
    ("other", None), ("proactive.optout", {"topic": "Bad Topic"}), ("proactive.optout", "x")])
async def test_an_unknown_card_action_is_refused_and_changes_nothing(
        runtime: Runtime, verb: str, data: Any) -> None:
    reply = await handle_activity(runtime, {}, body(card_action(verb, data)))
    assert reply.status == 200  # the invoke was handled; its answer says no
    assert json.loads(reply.body)["statusCode"] == 400
    assert await runtime.preferences.of_user(USER_AAD) == []


async def test_an_opted_out_user_is_skipped_without_a_connector_call(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    rt = installed
    await rt.opt_outs.stop(USER_AAD, "deployments", via="admin", tenant_id=TENANT)
    outcome = await process(rt, send("k1", topic="deployments"), message_id="m1")
    assert (outcome.state, outcome.reason) == ("done", "opted-out")
    assert emulator.deliveries == []
    [(row, _)] = await rt.deliveries.by_key("k1")
    assert (row.state, row.reason, row.attempts) == ("skipped", "opted-out", 0)
    # Another topic, and no topic, still go out.
    await process(rt, send("k2", topic="builds"), message_id="m2")
    await process(rt, send("k3"), message_id="m3")
    assert len(emulator.deliveries) == 2
    # Stopping everything stops every topic, but not the bot's own messages.
    await rt.opt_outs.stop(USER_AAD, ALL, via="admin", tenant_id=TENANT)
    await process(rt, send("k4", topic="builds"), message_id="m4")
    await process(rt, await app_made(rt, send("k5", service=True)), message_id="m5")
    assert len(emulator.deliveries) == 3
    assert (await rt.deliveries.by_key("k4"))[0][0].state == "skipped"


@pytest.mark.parametrize("with_tenant", [True, False])
async def test_a_send_by_the_personal_chats_conversation_id_obeys_its_owners_stop(
        installed: Runtime, emulator: ConnectorEmulator, with_tenant: bool) -> None:
    """Issue 16 §2: a send into someone's 1:1 chat is a send to them, whatever
    address it used; after `stop` it is skipped like a send by user id."""
    rt = installed
    await handle_activity(rt, {}, body(activity("message", service_url=emulator.url, text="stop")))
    to = {"conversation": "a:1personal-conversation",
          **({"tenant": TENANT} if with_tenant else {})}
    outcome = await process(rt, json.dumps({"version": 1, "op": "send", "key": "by-conv",
                                            "to": to, "text": "hi"}), message_id="m1")
    assert (outcome.state, outcome.reason) == ("done", "opted-out")
    assert emulator.deliveries == []
    [(row, _)] = await rt.deliveries.by_key("by-conv")
    assert (row.state, row.reason) == ("skipped", "opted-out")
    # After `start` the same send goes out: the owner's choice, not the address.
    await handle_activity(rt, {}, body(activity("message", service_url=emulator.url, text="start")))
    outcome = await process(rt, json.dumps({"version": 1, "op": "send", "key": "by-conv-2",
                                            "to": to, "text": "hi"}), message_id="m2")
    assert (outcome.state, outcome.reason) == ("done", "sent")
    assert len(emulator.deliveries) == 1


async def test_opt_outs_survive_a_reinstall(installed: Runtime) -> None:
    rt = installed
    await rt.opt_outs.stop(USER_AAD, ALL, via="command", tenant_id=TENANT)
    await handle_activity(rt, {}, body(activity("installationUpdate", action="remove",
                                                service_url=LOOPBACK)))
    await handle_activity(rt, {}, body(install(service_url=LOOPBACK)))
    assert [o.topic for o in await rt.preferences.of_user(USER_AAD)] == [ALL]


async def test_a_many_user_send_counts_opted_out_users_as_skipped(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    rt = installed
    other = "6f3a8c1e-0000-4000-8000-00000000bbbb"
    await rt.references.record(parse_activity(install(service_url=emulator.url, aad=other,
                                                      conversation="a:1other")))
    await rt.opt_outs.stop(other, "news", via="card", tenant_id=TENANT)
    message = json.dumps({"version": 1, "op": "send", "key": "b1", "topic": "news",
                          "to": {"users": [USER_AAD, other]}, "text": "hi"})
    await process(rt, message, message_id="m1")
    for part in await queued(rt):
        await process(rt, json.dumps(part), message_id="p")
    progress = await rt.campaigns.progress("b1")
    assert progress is not None
    counts = progress.counts
    assert counts["sent"] == 1
    assert counts["skipped"] == 1 and counts["skipped_opted_out"] == 1
    assert len(emulator.deliveries) == 1


@pytest.fixture
async def other_instance(settings: Settings):
    """A second instance of the app (its own Runtime: caches, pacer) on the same storage."""
    rt = await Runtime.create(settings)
    try:
        yield rt
    finally:
        await rt.close()


def past_its_reservations(rt: Runtime) -> None:
    """Move this instance's pacing clock past the slots it has reserved, so its
    next send reserves again (as any send a moment later would)."""
    rt.tenant_pacer.clock = lambda: time.time() + 10


async def test_a_stop_on_another_instance_holds_from_the_next_reservation(
        installed: Runtime, other_instance: Runtime, emulator: ConnectorEmulator) -> None:
    worker = installed
    await process(worker, send("k1"), message_id="m1")  # knows the tenant's budget row
    assert len(emulator.deliveries) == 1
    await handle_activity(other_instance, {}, body(say("stop")))
    past_its_reservations(worker)
    outcome = await process(worker, send("k2"), message_id="m2")
    assert (outcome.state, outcome.reason) == ("done", "opted-out")
    assert len(emulator.deliveries) == 1
    # And `start` there lets the next one through here.
    await handle_activity(other_instance, {}, body(say("start")))
    worker.tenant_pacer.clock = lambda: time.time() + 20
    outcome = await process(worker, send("k3"), message_id="m3")
    assert (outcome.state, outcome.reason) == ("done", "sent")


async def test_opt_outs_are_read_only_in_a_tenant_where_somebody_opted_out(
        installed: Runtime, emulator: ConnectorEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    rt = installed
    reads: list[str] = []
    of_user = rt.opt_outs.store.of_user

    async def counted(aad_id: str) -> Any:
        reads.append(aad_id)
        return await of_user(aad_id)

    monkeypatch.setattr(rt.opt_outs.store, "of_user", counted)
    for n in range(3):
        await process(rt, send(f"a{n}"), message_id=f"a{n}")
    assert reads == [] and len(emulator.deliveries) == 3
    # Somebody else in the tenant stops something: this user's rows are read
    # once, then remembered until the tenant's opt-outs change again.
    await rt.opt_outs.stop("6f3a8c1e-0000-4000-8000-00000000cccc", "news", via="admin",
                           tenant_id=TENANT.upper())
    for n in range(3):
        await process(rt, send(f"b{n}", topic="news"), message_id=f"b{n}")
    assert reads == [USER_AAD] and len(emulator.deliveries) == 6
    await rt.opt_outs.stop(USER_AAD, "news", via="admin", tenant_id=TENANT)
    reads.clear()
    outcome = await process(rt, send("c1", topic="news"), message_id="c1")
    assert (outcome.reason, reads) == ("opted-out", [USER_AAD])


async def test_a_repeated_stop_stamps_the_tenant_again(installed: Runtime) -> None:
    """A stamp lost to a crash after the opt-out was written is mended when the
    user says stop again: every change stamps, new or not."""
    from proactive.delivering.optouts import STAMP

    rt = installed
    await process(rt, send("k1"), message_id="m1")  # the pacer knows the budget row
    assert await rt.opt_outs.stop(USER_AAD, via="command", tenant_id=TENANT)
    first = rt.tenant_pacer.seen(TENANT, STAMP)
    assert not await rt.opt_outs.stop(USER_AAD, via="command", tenant_id=TENANT)
    assert rt.tenant_pacer.seen(TENANT, STAMP) not in (None, first)


async def test_what_a_process_remembers_of_opt_outs_is_bounded(
        installed: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    from proactive.delivering import optouts

    rt = installed
    monkeypatch.setattr(optouts, "REMEMBERED", 3)
    await process(rt, send("k1"), message_id="m1")
    await rt.opt_outs.stop("someone-else", "news", via="admin", tenant_id=TENANT)
    for n in range(10):
        await rt.opt_outs.check(TENANT, f"user-{n}", "news")
    assert sum(len(users) for _, users in rt.opt_outs._known.values()) <= 3
    assert await rt.opt_outs.check(TENANT, "someone-else", "news") is not None
