"""End to end through the Microsoft 365 Agents Playground, a Teams stand-in we
did not write: the app runs under the built-in host as a subprocess (as
`./scripts/dev` runs it), the Playground sends it real install activities and
answers its Connector calls, and messages are put on the queue with the CLI.

What the bot sent is read back from the Playground's log stream (see
proactive/devtools/playground.py for its quirks). The processes are shared by
the module; each test waits for its own outcomes with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from azure.data.tables.aio import TableClient
from azure.storage.queue.aio import QueueClient

from proactive.config import Settings
from proactive.runtime import DELIVERIES_TABLE, REFERENCES_TABLE
from proactive.storage.deliveries import DeliveryStore
from proactive.storage.reference_keys import InstallState
from proactive.storage.references import Reference, ReferenceStore
from proactive.telemetry import log_url
from proactive_devtools import playground as pg
from proactive_devtools.processes import REPO_ROOT, Azurite, free_port, stop_process, wait_for_port
from tests.polling import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Inherited settings that must not reach the app: credentials would make it
# refuse local-dev mode, and the test names its own storage, queue and tables.
_FOREIGN = ("MicrosoftApp", "PROACTIVE_", "AzureWebJobs", "OUTBOX_QUEUE", "FUNCTIONS_")


@dataclass
class Apps:
    env: dict[str, str]  # the app's settings, also given to the CLI
    workdir: Path
    host: subprocess.Popen[bytes]
    host_log: Path
    playground_port: int


@pytest.fixture(scope="module")
def apps(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apps]:
    """The function app (built-in host) and the Playground wired to it."""
    workdir = tmp_path_factory.mktemp("e2e")
    tag = uuid.uuid4().hex[:10]
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
    env.update(AzureWebJobsStorage=azurite.connection_string, OUTBOX_QUEUE=f"e2e{tag}",
               PROACTIVE_TABLE_PREFIX=f"e2e{tag}", PROACTIVE_LOCAL_DEV="true",
               PYTHONUNBUFFERED="1")
    # The host would read the repo's local.settings.json (whatever a developer
    # put there); an empty settings file keeps the environment the only source.
    settings = workdir / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": {}}))
    app_port, playground_port = free_port(), free_port()
    env["PROACTIVE_LOCAL_CONNECTOR"] = f"http://localhost:{playground_port}"
    host_log = workdir / "app.log"
    with open(host_log, "ab") as out:
        host = subprocess.Popen(
            [sys.executable, "-m", "proactive", "host", "--port", str(app_port),
             "--settings", str(settings)],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    playground = None
    try:
        wait_for_port(app_port, proc=host)
        playground = pg.start(endpoint=f"http://127.0.0.1:{app_port}/api/messages",
                              port=playground_port, workdir=workdir)
        yield Apps(env, workdir, host, host_log, playground_port)
        assert host.poll() is None, f"the app exited: {host_log.read_text()[-2000:]}"
    finally:
        if playground is not None:
            stop_process(playground)
        stop_process(host, sig=signal.SIGTERM)
    assert host.returncode == 0, f"the app did not stop cleanly: {host_log.read_text()[-2000:]}"


@dataclass
class Stack:
    apps: Apps
    playground: pg.Playground
    log: pg.LogStream
    config: dict[str, Any]  # the Playground's tenant, bot, users and chats
    references: ReferenceStore
    deliveries: DeliveryStore
    outbox: QueueClient

    @property
    def user(self) -> str:
        return str(self.config["currentUser"]["aadObjectId"])

    @property
    def chat(self) -> str:
        return str(self.config["personalChat"]["id"])

    @property
    def connector(self) -> str:
        return f"http://localhost:{self.apps.playground_port}/_connector"

    async def cli(self, *args: str, ok: bool = True) -> Any:
        """`python -m proactive ARGS` with the app's settings; its JSON output.
        Run outside the repo, so a developer's local.settings.json is not read."""
        env = {**self.apps.env, "PYTHONPATH": str(REPO_ROOT)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proactive", *args, cwd=self.apps.workdir, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        if ok:
            assert proc.returncode == 0, f"{args}: {proc.returncode} {err.decode()}"
        return json.loads(out) if out.strip() else None

    async def delivery(self, key: str) -> dict[str, Any]:
        rows = await self.deliveries.by_key(key)
        assert len(rows) <= 1, rows
        return rows[0][0].to_entity() if rows else {}

    async def delivered(self, key: str, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Wait until the send of `key` reached the Playground and is recorded:
        (the Playground's log entry, the delivery record)."""
        entry = await self.log.wait_for(lambda e: pg.body(e).get("text") == text)
        assert pg.status(entry) == 201, entry
        activity_id = entry["response"]["body"]["id"]
        row = await eventually(
            lambda: _if(self.delivery(key), lambda r: r.get("state") == "sent"),
            what=f"delivery of {key} recorded as sent")
        assert row["activityId"] == activity_id
        return entry, row

    def host_log_has(self, text: str) -> bool:
        return text in self.apps.host_log.read_text(errors="replace")


async def _if(value: Any, test: Callable[[Any], Any]) -> Any:
    result = await value
    return result if test(result) else None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(apps: Apps) -> AsyncIterator[Stack]:
    settings = Settings(storage_connection=apps.env["AzureWebJobsStorage"],
                        outbox_queue=apps.env["OUTBOX_QUEUE"],
                        table_prefix=apps.env["PROACTIVE_TABLE_PREFIX"])
    conn = settings.storage_connection
    async with aiohttp.ClientSession() as session, \
            TableClient.from_connection_string(conn, settings.table_name(REFERENCES_TABLE)) \
            as references, \
            TableClient.from_connection_string(conn, settings.table_name(DELIVERIES_TABLE)) \
            as deliveries, \
            QueueClient.from_connection_string(conn, settings.outbox_queue) as outbox:
        playground = pg.Playground(apps.playground_port, session)
        config = await playground.config()
        # Connected before anything happens: the stream does not replay.
        async with playground.log_stream() as log:
            yield Stack(apps, playground, log, config, ReferenceStore(references),
                        DeliveryStore(deliveries), outbox)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def installed(stack: Stack) -> Reference:
    """The bot installed in the personal chat, as opening the Playground does."""
    await stack.playground.install(stack.chat)
    ref: Reference = await eventually(
        lambda: stack.references.user(stack.user, stack.config["tenantId"]),
        what="the user's conversation reference stored")
    return ref


async def test_install_stores_the_reference_and_sends_one_welcome(
        stack: Stack, installed: Reference) -> None:
    config = stack.config
    assert installed.conversation_id == stack.chat
    assert installed.service_url == stack.connector  # verbatim, as the activity gave it
    assert installed.tenant_id == config["tenantId"]
    assert installed.bot_id == config["bot"]["id"]
    assert installed.conversation_type == "personal"
    assert installed.state == InstallState.INSTALLED
    # The fixture waited for the `user:` row; the `conv:` row is written after
    # it (a moment later under load): wait for that one too.
    async def conversation_installed() -> bool:
        found = await stack.references.conversation(stack.chat, config["tenantId"])
        return found is not None and found.state == InstallState.INSTALLED
    await eventually(conversation_installed, what="the conversation's row stored as installed")

    # Both install events reached the app and were answered 200.
    def answered() -> dict[str, int]:
        return {e["activityName"]: pg.status(e) for e in stack.log.entries
                if e.get("to") == pg.BOT and e.get("conversationId") == stack.chat}
    await eventually(lambda: len(answered()) == 2, what="both install events in the log")
    assert answered() == {"installationUpdate": 200, "conversationUpdate": 200}

    welcome = await stack.log.wait_for(lambda e: pg.body(e).get("attachments"))
    assert pg.status(welcome) == 201
    sent = pg.body(welcome)
    card = sent["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["body"][0]["text"].startswith("Welcome to ")
    assert sent["summary"].startswith("Welcome to ")

    # Teams (and the Playground) send two events for one install: one welcome.
    # Once the outbox is empty, every welcome queued has been delivered.
    async def outbox_empty() -> bool:
        props = await stack.outbox.get_queue_properties()
        return props.approximate_message_count == 0
    await eventually(outbox_empty, what="outbox drained")
    assert len([e for e in stack.log.from_bot() if pg.body(e).get("attachments")]) == 1


async def test_send_update_and_status_by_key(stack: Stack, installed: Reference) -> None:
    key = f"e2e-{uuid.uuid4().hex[:8]}"
    text = f"Hello from **proactive** ({key})"
    queued = await stack.cli("send", "--key", key, "--to", stack.user, "--text", text)
    assert queued == {"queued": stack.apps.env["OUTBOX_QUEUE"], "op": "send", "key": key}

    entry, row = await stack.delivered(key, text)
    assert pg.body(entry)["textFormat"] == "markdown"
    activity_id = row["activityId"]
    assert row["conversationId"] == stack.chat
    assert row["serviceUrl"] == stack.connector

    edited = f"Edited in place ({key})"
    await stack.cli("update", "--key", key, "--text", edited)
    update = await stack.log.wait_for(lambda e: pg.body(e).get("text") == edited)
    assert pg.body(update)["id"] == activity_id  # the same message, edited
    assert pg.status(update) == 200
    # The log does not show the method; the app's log shows it was a PUT (its
    # URL without ids: README "Logs").
    url = f"{stack.connector}/v3/conversations/{stack.chat}/activities/{activity_id}"
    put = f'PUT {log_url(url)} "HTTP/1.1 200 OK"'
    await eventually(lambda: stack.host_log_has(put), what="PUT in the app's log")
    await eventually(lambda: _if(stack.delivery(key), lambda r: r.get("updates") == 1),
                     what="update recorded")

    status = await stack.cli("status", "--key", key)
    assert len(status) == 1
    assert status[0]["recipient"] == f"user:{stack.user}"
    assert status[0]["state"] == "sent"
    assert status[0]["activityId"] == activity_id
    assert status[0]["updateState"] == "done"
    assert status[0]["updates"] == 1
    assert status[0]["attempts"] == 1


async def test_delete_is_not_supported_and_the_app_carries_on(
        stack: Stack, installed: Reference) -> None:
    key = f"e2e-{uuid.uuid4().hex[:8]}"
    text = f"To be deleted ({key})"
    await stack.cli("send", "--key", key, "--to", stack.user, "--text", text)
    _, row = await stack.delivered(key, text)
    activity_id = row["activityId"]

    await stack.cli("delete", "--key", key)
    refused = await stack.log.wait_for(lambda e: pg.status(e) == 501)
    assert refused["response"]["body"]["error"]["code"] == "DeleteActivityAPINotImplemented"
    url = f"{stack.connector}/v3/conversations/{stack.chat}/activities/{activity_id}"
    delete = f'DELETE {log_url(url)} "HTTP/1.1 501 Not Implemented"'
    await eventually(lambda: stack.host_log_has(delete), what="DELETE in the app's log")
    await eventually(lambda: _if(stack.delivery(key), lambda r: r.get("deleteState")),
                     what="delete recorded")

    status = await stack.cli("status", "--key", key)
    assert len(status) == 1
    assert status[0]["state"] == "sent"  # still there: the Playground kept it
    assert status[0]["deleteState"] == "failed"
    assert status[0]["deleteReason"] == "not-supported"

    # Recorded, not retried, nothing parked, and the worker goes on.
    assert stack.apps.host.poll() is None
    assert await stack.cli("poison") == []
    after = f"After the refused delete ({key})"
    later = f"{key}-after"
    await stack.cli("send", "--key", later, "--to", stack.user, "--text", after)
    await stack.delivered(later, after)
    assert len([e for e in stack.log.from_bot() if pg.status(e) == 501]) == 1


def _card_text(entry: dict[str, Any]) -> str:
    """The text blocks of the card the bot sent, joined."""
    attachments = pg.body(entry).get("attachments") or [{}]
    body = (attachments[0].get("content") or {}).get("body") or []
    return " | ".join(str(block.get("text", "")) for block in body)


async def test_help_stop_and_start_typed_in_the_personal_chat(
        stack: Stack, installed: Reference) -> None:
    user_id = stack.config["currentUser"]["id"]
    seen = len(stack.log.from_bot())

    def answer(title: str) -> Callable[[dict[str, Any]], bool]:
        return lambda e: e in stack.log.from_bot()[seen:] and _card_text(e).startswith(title)

    await stack.playground.say(stack.chat, user_id, "help")
    helped = await stack.log.wait_for(answer("Proactive sends you notifications"))
    assert pg.status(helped) == 201
    assert "Type **stop**" in _card_text(helped)
    assert "Stop" not in json.dumps(pg.body(helped)["attachments"][0]["content"].get("actions"))

    await stack.playground.say(stack.chat, user_id, "stop")
    stopped = await stack.log.wait_for(answer("Stopped"))
    assert "won't get any notifications" in _card_text(stopped)

    key = f"e2e-{uuid.uuid4().hex[:8]}"
    text = f"Not for someone who said stop ({key})"
    await stack.cli("send", "--key", key, "--to", stack.user, "--text", text)
    row = await eventually(lambda: _if(stack.delivery(key), lambda r: r.get("state") == "skipped"),
                           what="the send recorded as skipped")
    assert row["reason"] == "opted-out"
    assert row.get("activityId") is None
    assert not [e for e in stack.log.from_bot() if pg.body(e).get("text") == text]

    await stack.playground.say(stack.chat, user_id, "start")
    await stack.log.wait_for(answer("Started"))
    again = f"{key}-after-start"
    await stack.cli("send", "--key", again, "--to", stack.user, "--text", f"Back ({again})")
    await stack.delivered(again, f"Back ({again})")


async def test_the_cards_opt_out_button_stops_its_topic_and_updates_the_card(
        stack: Stack, installed: Reference) -> None:
    user_id = stack.config["currentUser"]["id"]
    topic = f"e2e-{uuid.uuid4().hex[:6]}"
    key = f"e2e-{uuid.uuid4().hex[:8]}"
    message = {"version": 1, "op": "send", "key": key, "to": {"user": stack.user},
               "topic": topic, "notification": {"title": f"Deployed ({key})",
                                                "what": "Build 4711 is live in production.",
                                                "item": {"name": "web-frontend",
                                                         "url": "https://ci.example.com/4711"},
                                                "by": "CI", "severity": "success"}}
    from proactive.storage.queues import dumps, encode
    await stack.outbox.send_message(encode(dumps(message)))
    entry = await stack.log.wait_for(lambda e: _card_text(e).startswith(f"Deployed ({key})"))
    assert pg.status(entry) == 201
    card = pg.body(entry)["attachments"][0]["content"]
    button = card["actions"][-1]
    assert button["title"] == "Stop notifications like this"
    message_id = entry["response"]["body"]["id"]

    answer = await stack.playground.card_action(stack.chat, user_id, message_id,
                                                {"type": "Action.Execute", "verb": button["verb"],
                                                 "data": button["data"]})
    # The Playground passes on the answer's type and card (and puts the card in
    # place of the message's); the status code is checked in test_commands.py.
    assert answer["type"] == "application/vnd.microsoft.card.adaptive"
    assert answer["value"]["body"][0]["text"] == "Stopped"
    assert topic in answer["value"]["body"][1]["text"]

    skipped = f"{key}-same-topic"
    await stack.outbox.send_message(encode(dumps({**message, "key": skipped})))
    row = await eventually(lambda: _if(stack.delivery(skipped),
                                       lambda r: r.get("state") == "skipped"),
                           what="the same topic skipped")
    assert row["reason"] == "opted-out"
    other = f"{key}-other-topic"
    await stack.cli("send", "--key", other, "--to", stack.user, "--text", f"Other ({other})")
    await stack.delivered(other, f"Other ({other})")


async def test_the_ack_button_pressed_in_the_playground_is_recorded_once(
        stack: Stack, installed: Reference) -> None:
    # The Playground implements Action.Execute (its adaptiveCard/action invoke);
    # it sends no read receipts (README "Read, acknowledged, reminded").
    user_id = stack.config["currentUser"]["id"]
    key = f"e2e-ack-{uuid.uuid4().hex[:8]}"
    await stack.cli("send", "--key", key, "--to", stack.user, "--text", f"Drill ({key})",
                    "--ack")
    entry = await stack.log.wait_for(lambda e: _card_text(e) == f"Drill ({key})")
    card = pg.body(entry)["attachments"][0]["content"]
    button = card["actions"][0]
    assert (button["type"], button["title"]) == ("Action.Execute", "Got it")
    message_id = entry["response"]["body"]["id"]
    press = {"type": "Action.Execute", "verb": button["verb"], "data": button["data"]}
    answers = [await stack.playground.card_action(stack.chat, user_id, message_id, press)
               for _ in range(2)]
    for answer in answers:
        assert answer["type"] == "application/vnd.microsoft.card.adaptive"
        texts = [block.get("text") for block in answer["value"]["body"]]
        assert texts[0] == f"Drill ({key})" and texts[-1].startswith("✅ Acknowledged at ")
        actions = answer["value"].get("actions", [])
        assert not [a for a in actions if a.get("verb") == button["verb"]]
    assert answers[0]["value"] == answers[1]["value"]  # the second press changes nothing
    row = await stack.delivery(key)
    assert row is not None and row.get("ackedAt")
