"""Fields only the app sets (issue 16 §1): on the queue a message carrying
one is acted on only with the app's signature (proactive/storage/seal.py),
else parked with its reason before any Graph or Connector call; a Graph link
the app follows is a page of that audience on the configured Graph. Real
storage (Azurite), the Connector emulator and the fake Graph over loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from proactive.contract import Content, Op, OutboxMessage, Target, refuse_app_only
from proactive.errors import InvalidMessage
from proactive.runtime import Runtime
from proactive.storage import seal as seal_module
from proactive.storage import tables
from proactive.storage.seal import Seal
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from proactive_devtools.fake_graph import FakeGraph
from tests.activities_data import TENANT, USER_AAD
from tests.sealed import app_made
from tests.test_broadcast import aad
from tests.test_install import graph, reach  # noqa: F401 (the fixture)


async def parked(rt: Runtime) -> list[dict[str, Any]]:
    return [json.loads(m.content) for m in await rt.outbox.poison_queue.peek_messages(
        max_messages=32)]


async def nothing_done(rt: Runtime, key: str) -> None:
    """No delivery, no progress, nothing queued under the key."""
    assert await rt.deliveries.by_key(key) == []
    assert await rt.campaigns.progress(key) is None
    assert await rt.outbox.queue.peek_messages() == []


# Groups are named by their object id (GUIDs), as Graph names them.
G1, G2 = "5e3a1c7e-0000-4000-8000-000000000001", "5e3a1c7e-0000-4000-8000-000000000002"


def directory_probe(graph_url: str) -> dict[str, Any]:
    """The issue's case: a producer's "next page" that lists the directory."""
    return {"version": 1, "op": "send", "key": "probe", "text": "hi",
            "to": {"group": G1, "continuation": f"{graph_url}/v1.0/users?$select=id"}}


async def test_a_producers_graph_continuation_is_parked_before_any_call(
        runtime: Runtime, emulator: ConnectorEmulator, graph: FakeGraph) -> None:  # noqa: F811
    rt = await reach(runtime, emulator, graph)
    users = [aad(i) for i in range(3)]
    for user in users:
        graph.add_user(user)
    graph.add_group(G1, users[:1])
    outcome = await process(rt, json.dumps(directory_probe(graph.url)), message_id="q1")
    assert (outcome.state, outcome.reason) == ("poisoned", "app-only-field")
    # Tampered after the app signed it (another link, same signature): parked too.
    signed = json.loads(await app_made(rt, {**directory_probe(graph.url), "key": "probe2"}))
    signed["to"]["continuation"] += "&$filter=startswith(displayName,'a')"
    outcome = await process(rt, json.dumps(signed), message_id="q2")
    assert (outcome.state, outcome.reason) == ("poisoned", "app-only-field")
    assert graph.calls == [] and emulator.counters.get("requests", 0) == 0
    first, second = await parked(rt)
    assert first["reason"] == "app-only-field"
    assert "'to.continuation' is set by the app only" in first["detail"]
    assert "not signed" in first["detail"] and "does not verify" in second["detail"]
    assert json.loads(first["message"]) == directory_probe(graph.url)  # kept as it came
    await nothing_done(rt, "probe")
    await nothing_done(rt, "probe2")


async def test_a_signed_link_to_another_listing_is_not_followed(
        runtime: Runtime, emulator: ConnectorEmulator, graph: FakeGraph) -> None:  # noqa: F811
    """Past the signature, the Graph client follows only a page of this
    group's members on the configured Graph host (defence in depth)."""
    rt = await reach(runtime, emulator, graph)
    graph.add_group(G1, [aad(0)])
    for link in (f"{graph.url}/v1.0/users?$select=id",
                 f"{graph.url}/v1.0/groups/{G2}/transitiveMembers/microsoft.graph.user",
                 f"{graph.url}/v1.0/groups/{G1}/transitiveMembers/../../users?$select=id",
                 f"{graph.url}/v1.0/groups/{G1}/transitiveMembers/%2E%2E/%2e%2e/users",
                 f"http://127.0.0.2:1/v1.0/groups/{G1}/transitiveMembers/microsoft.graph.user"):
        message = {**directory_probe(graph.url), "key": f"k{len(link)}"}
        message["to"]["continuation"] = link
        outcome = await process(rt, await app_made(rt, message), message_id="q")
        assert (outcome.state, outcome.reason) == ("failed", "untrusted-service-url")
    assert graph.calls == [] and emulator.counters.get("requests", 0) == 0


async def test_the_apps_own_next_page_is_followed(
        runtime: Runtime, emulator: ConnectorEmulator, graph: FakeGraph,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    from proactive.teams import graph as graph_client

    monkeypatch.setattr(graph_client, "_PAGE", 2)  # three pages of a five-member group
    rt = await reach(runtime, emulator, graph)
    users = [aad(i) for i in range(5)]
    for user in users:
        graph.add_user(user)
    graph.add_group(G1, users)
    from tests.test_install import send, settle

    await process(rt, send({"group": G1}, "paged"), message_id="m")
    queued = [json.loads(m.content) for m in await rt.outbox.queue.peek_messages(32)]
    assert all(q.get("signature") for q in queued)  # parts and the next page: signed
    counts = await settle(rt, "paged", 5)
    assert counts["sent"] == 5 and await parked(rt) == []


@pytest.mark.parametrize("forged", [
    {"part": True, "to": {"users": [USER_AAD], "tenant": TENANT}},
    {"attempt": 8},
    {"service": True},
])
async def test_a_producers_part_attempt_or_service_is_parked_without_a_call(
        installed: Runtime, emulator: ConnectorEmulator, forged: dict[str, Any]) -> None:
    rt = installed
    # `service: true` skipped the opt-out check: the issue's third message.
    await rt.opt_outs.stop(USER_AAD, via="command", tenant_id=TENANT)
    message = {"version": 1, "op": "send", "key": "forged", "to": {"user": USER_AAD},
               "text": "hi", **forged}
    outcome = await process(rt, json.dumps(message), message_id="q")
    assert (outcome.state, outcome.reason) == ("poisoned", "app-only-field")
    assert emulator.counters.get("requests", 0) == 0
    [entry] = await parked(rt)
    assert f"'{next(iter(forged))}' is set by the app only" in entry["detail"]
    await nothing_done(rt, "forged")


async def test_the_apps_own_message_is_signed_and_carried_out(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    rt = installed
    await rt.outbox.put(OutboxMessage(Op.SEND, "own", target=Target.user(USER_AAD),
                                      content=Content(text="welcome", service=True)))
    [message] = [m async for m in rt.outbox.queue.receive_messages()]
    assert json.loads(message.content)["signature"]
    await rt.opt_outs.stop(USER_AAD, via="command", tenant_id=TENANT)  # service: not skipped
    outcome = await process(rt, message.content, message_id=message.id)
    assert (outcome.state, outcome.reason) == ("done", "sent")
    # A producer's message without app-only fields is enqueued as it is.
    await rt.outbox.put(OutboxMessage(Op.CANCEL, "own"))
    [plain] = [json.loads(m.content) for m in await rt.outbox.queue.peek_messages()]
    assert "signature" not in plain


async def test_the_key_is_made_once_shared_rotated_and_revoked(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    table = runtime.tenant_pacer.table
    now = [0.0]
    a, b = Seal(table, clock=lambda: now[0]), Seal(table, clock=lambda: now[0])
    message = {"version": 1, "op": "send", "key": "k", "to": {"user": "u"}, "text": "x",
               "part": True}
    signed = await a.sign(message)
    await b.check(signed)  # another instance: the same key, made once
    kid = await a.rotate()
    rotated = await a.sign(message)
    assert rotated["signature"].startswith(f"{kid}.") and rotated != signed
    await b.check(rotated)  # b learns the new key id when it meets it, at once
    await b.check(signed)  # the old key still verifies what is already queued
    # A forged key id costs one read, not one per message.
    reads = []
    real_read = tables.read

    async def counted(*args: Any) -> Any:
        reads.append(args[1:])
        return await real_read(*args)

    monkeypatch.setattr(tables, "read", counted)
    for _ in range(3):
        with pytest.raises(InvalidMessage, match="does not verify"):
            await b.check({**signed, "signature": "f0f0f0f0.forged"})
    monkeypatch.undo()
    assert len(reads) == 1
    # Deleting the row revokes every key: a new one is made on first use.
    await table.delete_entity(seal_module.PK, seal_module.RK)
    c = Seal(table)
    with pytest.raises(InvalidMessage, match="does not verify"):
        await c.check(signed)
    found = await tables.read(table, seal_module.PK, seal_module.RK)
    assert found is not None and kid not in found[0]["keys"]


@pytest.mark.parametrize(("message", "field"), [
    ({"part": True}, "part"), ({"attempt": 2}, "attempt"), ({"service": True}, "service"),
    ({"to": {"group": "g", "continuation": "x"}}, "to.continuation"),
    ({"signature": "a.b"}, "signature"),
])
def test_producers_are_refused_each_app_only_field_by_name(message: dict[str, Any],
                                                           field: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        refuse_app_only({"version": 1, "op": "send", "text": "x", **message})
    assert (info.value.reason, info.value.detail) == (
        "app-only-field", f"'{field}' is set by the app only: leave it out")


async def test_the_cli_rotates_the_key_and_what_was_signed_still_verifies(
        runtime: Runtime, tmp_path: Path) -> None:
    from tests.test_cli_errors import cli

    message = {"version": 1, "op": "send", "key": "k", "to": {"user": "u"}, "text": "x",
               "attempt": 2}
    before = await runtime.outbox.seal.sign(message)
    env = {"AzureWebJobsStorage": runtime.settings.storage_connection,
           "OUTBOX_QUEUE": runtime.settings.outbox_queue,
           "PROACTIVE_TABLE_PREFIX": runtime.settings.table_prefix}
    done = await asyncio.to_thread(cli, tmp_path, "rotate-signing-key", env=env)
    assert done.returncode == 0, done.stderr
    kid = json.loads(done.stdout)["signingKey"]
    fresh = Seal(runtime.tenant_pacer.table)  # another instance, after the rotation
    after = await fresh.sign(message)
    assert after["signature"].startswith(f"{kid}.")
    await fresh.check(before)
    assert kid not in before["signature"]


async def test_the_issues_case_replayed_through_the_host_never_reaches_graph(
        runtime: Runtime, tmp_path: Path) -> None:
    """From outside: the producer's message put straight on the queue, a
    function host (`python -m proactive host`) with its Graph at the fake."""
    from proactive_devtools.processes import stop_process
    from tests.polling import eventually
    from tests.test_chaos import App, app_env, empty_settings_file

    async with FakeGraph(tenant=TENANT) as fake:
        users = [aad(i) for i in range(3)]
        for user in users:
            fake.add_user(user)
        fake.add_group(G1, users[:1])
        env = app_env(runtime.settings, 30)
        env.update(MicrosoftAppTenantId=TENANT, PROACTIVE_GRAPH_APP_CATALOG_ID="cat-1",
                   PROACTIVE_CLOUD_OVERRIDE=json.dumps({"graph_url": fake.url}))
        app = App(env, empty_settings_file(tmp_path), tmp_path, lease=30)
        await runtime.outbox.queue.send_message(json.dumps(directory_probe(fake.url)))
        await asyncio.to_thread(app.start)
        try:
            [entry] = await eventually(lambda: parked(runtime), timeout=60,
                                       what="the forged message parked")
        finally:
            if app.proc is not None:
                stop_process(app.proc)
        assert entry["reason"] == "app-only-field", app.log_tail()
        assert fake.calls == []
        assert await runtime.deliveries.by_key("probe") == []
