"""No personal data in ordinary logs (issue 16, §6): a whole scenario at INFO
(an install and a typed message, a send, its update and delete, a Graph group
audience, principal names, failures), every logger captured, and none of the
users' object ids, principal names, e-mail addresses, conversation ids or the
messages' text in the output. Ids show up hashed, as telemetry hashes them."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from proactive.receiving.endpoint import handle_activity
from proactive.runtime import Runtime
from proactive.telemetry import log_id, log_url
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from proactive_devtools.fake_graph import FakeGraph
from tests.activities_data import activity, install
from tests.test_install import graph as graph
from tests.test_install import reach, settle

TEXT = "Quarterly numbers are ready for Megan"
GROUP = "0c5f2d1e-0000-4000-8000-00000000a1b2"  # groups are named by object id
EDITED = "Quarterly numbers moved to Friday"
TYPED = "what about my bonus"


def message(op: str, key: str, **fields: object) -> str:
    return json.dumps({"version": 1, "op": op, "key": key, **fields})


async def test_a_whole_scenario_at_info_logs_no_personal_data(
        runtime: Runtime, emulator: ConnectorEmulator, graph: FakeGraph,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)  # the root: every logger that is not quieted
    me, conversation = str(uuid.uuid4()), f"a:1{uuid.uuid4().hex}"
    members = [str(uuid.uuid4()) for _ in range(3)]
    upns = [f"person{i}.{uuid.uuid4().hex[:6]}@contoso.com" for i in range(3)]
    for member, upn in zip(members, upns, strict=True):
        graph.add_user(member, upn)
    graph.add_group(GROUP, members)
    rt = await reach(runtime, emulator, graph)

    # A personal install and a typed message, as Teams posts them (local dev: no token).
    for body in (install(aad=me, conversation=conversation, service_url=emulator.url),
                 activity(aad=me, conversation=conversation, service_url=emulator.url,
                          text=TYPED)):
        reply = await handle_activity(rt, {"Content-Type": "application/json"},
                                      json.dumps(body).encode())
        assert reply.status == 200, reply.body
    # Failures: one Teams refuses (400, recorded), one retried (502); then a
    # send, its update and delete.
    emulator.inject(400, operation="send", count=1)
    await process(rt, message("send", "k-fail", to={"user": me}, text=TEXT), message_id="f")
    emulator.inject(502, operation="send", count=1)
    for n, text in enumerate([message("send", "k-1", to={"user": me}, text=TEXT),
                              message("send", "k-1", to={"user": me}, text=TEXT),
                              message("update", "k-1", text=EDITED),
                              message("delete", "k-1")]):
        await process(rt, text, message_id=f"m{n}")
    # A group audience through Graph (install, then send), and principal names,
    # one of which Graph does not know (a failure recorded for it).
    await process(rt, message("send", "k-group", to={"group": GROUP}, text=TEXT),
                  message_id="g")
    assert (await settle(rt, "k-group", 3, seconds=30)).get("sent") == 3
    await process(rt, message("send", "k-upn", to={"users": [upns[0], "nobody@contoso.com"]},
                              text=TEXT), message_id="u")
    await settle(rt, "k-upn", 2, seconds=30)

    rows = [row for key in ("k-fail", "k-1", "k-group", "k-upn")
            for row, _ in await rt.deliveries.by_key(key)]
    assert {r.state for r in rows} >= {"deleted", "sent", "failed"}
    conversations = {r.conversation_id for r in rows if r.conversation_id}
    assert conversation in conversations and len(conversations) >= 4
    logged = caplog.text + "\n".join(json.dumps(r.args, default=str) for r in caplog.records)
    # The lines are there, ids hashed: the Connector calls, the principal name's failure.
    # The lines are there, ids hashed: the Connector calls, the refused send.
    assert "HTTP Request" in logged and log_id(f"user:{me}") in logged
    secrets = [me, *members, *upns, "@contoso.com", *conversations, TEXT, EDITED, TYPED]
    found = [s for s in secrets if s and s.lower() in logged.lower()]
    assert not found, found


def test_log_url_keeps_words_and_drops_ids_and_queries() -> None:
    assert log_url("https://smba.trafficmanager.net/emea/v3/conversations/a%3A1xyz/activities"
                   "/1690?x=1") == ("https://smba.trafficmanager.net/emea/v3/conversations/"
                                    "{id}/activities/{id}")
    assert log_url("https://graph.microsoft.com/v1.0/users/alice@contoso.com?$select=id") == \
        "https://graph.microsoft.com/v1.0/users/{id}"
    assert log_id("user:6f3a8c1e-0000-4000-8000-00000000aaaa").startswith("user#")
    assert "6f3a8c1e" not in log_id("user:6f3a8c1e-0000-4000-8000-00000000aaaa")
