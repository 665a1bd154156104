"""Reaching users the bot never met, through the fake Graph and the Connector
emulator: group audiences, principal names, proactive install, Graph's limits."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proactive.delivering.pacing import TenantPacer
from proactive.receiving.activities import parse_activity
from proactive.runtime import Runtime
from proactive.teams.graph import GraphClient
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from proactive_devtools.fake_graph import FakeGraph
from tests.activities_data import TENANT, team_install
from tests.polling import eventually
from tests.test_broadcast import aad, drain

CATALOG = "cat-0000-1111"
GROUP = "6a1f0000-0000-4000-8000-00000000e001"  # a group's object id


@pytest.fixture
async def graph(emulator: ConnectorEmulator) -> AsyncIterator[FakeGraph]:
    async with FakeGraph(tenant=TENANT, emulator=emulator) as fake:
        fake.add_app(CATALOG, "manifest-1")
        yield fake


async def reach(runtime: Runtime, emulator: ConnectorEmulator, graph: FakeGraph, *,
                rate: float = 30.0, **settings: Any) -> Runtime:
    """The runtime with install on, its Graph at the fake, the tenant's serviceUrl known."""
    runtime.settings = dataclasses.replace(runtime.settings, app_tenant_id=TENANT,
                                           graph_app_catalog_id=CATALOG, **settings)
    runtime.graph = GraphClient(runtime.http, None, runtime.cloud, base_url=graph.url,
                                local_dev=True)
    assert runtime.graph_pacer is not None
    runtime.graph_pacer = TenantPacer(runtime.graph_pacer.table, rate=rate)
    await runtime.references.record(parse_activity(team_install(service_url=emulator.url)))
    return runtime


def send(to: dict[str, Any], key: str) -> str:
    return json.dumps({"version": 1, "op": "send", "key": key, "to": to, "text": "Hello"})


async def settle(rt: Runtime, key: str, total: int, seconds: float = 50) -> dict[str, int]:
    """Run the worker until `total` recipients are settled (retries come back
    after their delay), or the deadline passes."""
    counts: dict[str, int] = {}

    async def settled() -> dict[str, int] | None:
        nonlocal counts
        await drain(rt, limit=10_000)
        progress = await rt.campaigns.progress(key)
        counts = dict(progress.counts) if progress else {}
        done = counts.get("sent", 0) + counts.get("failed", 0) + counts.get("skipped", 0)
        return counts if done >= total else None

    # Retries are invisible on the queue until due: no need to poll faster.
    result: dict[str, int] = await eventually(settled, seconds, f"{total} settled",
                                              interval=0.2, seen=lambda: counts)
    return result


async def test_a_thousand_group_members_never_met_are_installed_and_each_sent_once(
        runtime: Runtime, emulator: ConnectorEmulator, graph: FakeGraph) -> None:
    users = [aad(i) for i in range(1000)]
    for user in users:
        graph.add_user(user)
    graph.add_group(GROUP, users)
    for user in users[:50]:
        graph.install_for(user, CATALOG)  # installed already: 409, then read
    for user in users[50:70]:
        graph.transient_400[user] = 1  # Graph's transient 400, then success
    # Fast here (the big test stays short); the rate itself is proven below.
    rt = await reach(runtime, emulator, graph, rate=400)
    graph.rate = 300
    await process(rt, send({"group": GROUP}, "all"), message_id="m")
    counts = await settle(rt, "all", 1000)
    assert counts == {"queued": 1000, "sent": 1000}
    assert emulator.counters["delivered"] == 1000
    assert not emulator.duplicates()
    assert graph.counters["installs"] == 950
    assert graph.counters["conflict"] == 50
    assert graph.counters["transient_400"] == 20


async def test_principal_names_are_resolved_and_an_unknown_one_is_recorded(
        runtime: Runtime, emulator: ConnectorEmulator, graph: FakeGraph) -> None:
    graph.add_user(aad(1), "ann@contoso.com")
    graph.add_user(aad(2), "bob@contoso.com")
    rt = await reach(runtime, emulator, graph)
    await process(rt, send({"users": ["Ann@contoso.com", aad(2), "nobody@contoso.com"]}, "k"),
                  message_id="m")
    counts = await settle(rt, "k", 3, seconds=20)
    assert counts == {"queued": 3, "sent": 2, "failed": 1, "failed_not_found": 1}
    assert emulator.counters["delivered"] == 2
    rows = {r.recipient: r.to_entity() for r, _ in await rt.deliveries.by_key("k")}
    assert rows["conv:upn:nobody@contoso.com"]["reason"] == "not-found"
    assert rows[f"user:{aad(1)}"]["state"] == "sent"


async def test_throttled_by_graph_retry_after_is_honoured_and_nothing_is_lost(
        runtime: Runtime, emulator: ConnectorEmulator, graph: FakeGraph) -> None:
    users = [aad(i) for i in range(60)]
    for user in users:
        graph.add_user(user)
    graph.add_group(GROUP, users)
    # The pacer believes 30/s; the fake allows 10/s: 429s with Retry-After.
    rt = await reach(runtime, emulator, graph, rate=30)
    graph.rate = 10
    await process(rt, send({"group": GROUP}, "t"), message_id="m")
    counts = await settle(rt, "t", 60, seconds=50)
    assert counts == {"queued": 60, "sent": 60}
    assert graph.counters["throttled"] > 0
    assert emulator.counters["delivered"] == 60 and not emulator.duplicates()
    assert graph.max_per_second() <= 10


async def test_a_user_named_by_principal_name_and_object_id_counts_once(
        runtime: Runtime, emulator: ConnectorEmulator, graph: FakeGraph) -> None:
    graph.add_user(aad(1), "ann@contoso.com")
    graph.add_user(aad(2), "bob@contoso.com")
    rt = await reach(runtime, emulator, graph)
    # Ann three times (two cases of her principal name, her object id), Bob
    # by id, then by principal name in a second message of the same send.
    await process(rt, send({"users": ["Ann@contoso.com", "ann@CONTOSO.com", aad(1), aad(2)]},
                           "once"), message_id="m1")
    await settle(rt, "once", 2, seconds=20)
    await process(rt, send({"users": ["bob@contoso.com"]}, "once"), message_id="m2")
    await settle(rt, "once", 2, seconds=20)
    progress = await rt.campaigns.progress("once")
    assert progress is not None
    assert progress.counts == {"queued": 2, "sent": 2}
    assert progress.summary.state == "done" and progress.summary.totals["sent"] == 2
    assert emulator.counters["delivered"] == 2 and not emulator.duplicates()


async def test_a_group_with_devices_disabled_users_and_guests(
        runtime: Runtime, emulator: ConnectorEmulator, graph: FakeGraph) -> None:
    users = [aad(i) for i in range(6)]
    for user in users[:4]:
        graph.add_user(user)
    graph.add_user(users[4], user_type="Guest")
    graph.add_user(users[5], enabled=False)
    graph.add_device("00000000-0000-4000-8000-0000000000d1")
    graph.add_group(GROUP, [*users, "00000000-0000-4000-8000-0000000000d1"])
    graph.add_user(aad(9), "off@contoso.com", enabled=False)
    rt = await reach(runtime, emulator, graph)
    await process(rt, send({"group": GROUP}, "mixed"), message_id="m")
    await process(rt, send({"users": ["off@contoso.com"]}, "mixed"), message_id="m2")
    await settle(rt, "mixed", 7, seconds=30)
    progress = await rt.campaigns.progress("mixed")
    assert progress is not None and progress.summary.state == "done"
    # Five sent (one a guest, said so), two disabled accounts not sent to, the
    # device not a recipient at all.
    assert progress.counts == {"queued": 7, "sent": 5, "sent_guest": 1, "skipped": 2,
                                  "skipped_disabled_account": 2}
    assert emulator.counters["delivered"] == 5
    rows = {r.recipient: r.to_entity() for r, _ in await rt.deliveries.by_key("mixed")}
    assert rows[f"user:{users[4]}"]["state"] == "sent"
    assert rows[f"user:{users[4]}"]["reason"] == "guest"
    assert rows[f"user:{users[5]}"]["reason"] == "disabled-account"
    assert rows["conv:upn:off@contoso.com"]["reason"] == "disabled-account"
    assert "reason" not in rows[f"user:{users[0]}"] or not rows[f"user:{users[0]}"]["reason"]


async def test_a_chat_that_appears_after_the_install_is_waited_for_without_installing_again(
        runtime: Runtime, emulator: ConnectorEmulator, graph: FakeGraph) -> None:
    users = [aad(i) for i in range(6)]
    for user in users:
        graph.add_user(user)
    graph.add_group(GROUP, users)
    graph.chat_delay = 2.0  # Teams lists a new installation's chat a little later
    rt = await reach(runtime, emulator, graph)
    await process(rt, send({"group": GROUP}, "fresh"), message_id="m")
    counts = await settle(rt, "fresh", 6, seconds=40)
    assert counts == {"queued": 6, "sent": 6}
    assert graph.counters["chat_not_yet"] >= 6  # each was told "no chat yet" at first
    # Each user installed once: the retry resumed from the chat read.
    assert graph.counters["POST"] == graph.counters["installs"] == 6
    assert graph.counters["conflict"] == 0
    assert emulator.counters["delivered"] == 6 and not emulator.duplicates()


async def test_a_chat_that_never_appears_fails_saying_so(
        runtime: Runtime, emulator: ConnectorEmulator, graph: FakeGraph) -> None:
    graph.add_user(aad(1))
    graph.chat_delay = 3600
    rt = await reach(runtime, emulator, graph, max_attempts=2)
    await process(rt, send({"users": [aad(1), aad(2)]}, "never"), message_id="m")
    graph.add_user(aad(2))
    counts = await settle(rt, "never", 2, seconds=30)
    assert counts.get("failed_no_conversation") == 2, counts
    rows = {r.recipient: r.to_entity() for r, _ in await rt.deliveries.by_key("never")}
    row = rows[f"user:{aad(1)}"]
    assert row["state"] == "failed" and row["reason"] == "no-conversation"
    assert "no chat for the installation" in row["detail"]
    assert graph.counters["POST"] == 2  # never installed twice


async def test_graph_refusing_the_app_stops_the_audience_and_a_resend_retries_it(
        runtime: Runtime, emulator: ConnectorEmulator, graph: FakeGraph) -> None:
    users = [aad(i) for i in range(60)]
    for user in users:
        graph.add_user(user)
    graph.add_group(GROUP, users)
    graph.forbid_app = True  # the app's installedApps permission is not granted
    rt = await reach(runtime, emulator, graph)
    message = send({"group": GROUP}, "consent")
    await process(rt, message, message_id="m")
    await settle(rt, "consent", 60, seconds=30)
    progress = await rt.campaigns.progress("consent")
    assert progress is not None
    assert progress.summary.state == "failed" and progress.summary.reason == "graph-permission"
    assert "Missing role permissions" in str(progress.summary.detail)
    assert progress.counts == {"queued": 60, "failed": 60, "failed_graph_permission": 60}
    # One refusal stops the audience: not a POST per member.
    asked = [p for _, _, p in graph.calls if "installedApps" in p]
    assert len(asked) <= 3
    # Once an admin grants it, the same send again reaches everyone, once.
    graph.forbid_app = False
    await process(rt, message, message_id="m-again")
    counts = await settle(rt, "consent", 60, seconds=30)
    progress = await rt.campaigns.progress("consent")
    assert progress is not None and progress.summary.state == "done", progress
    assert counts == {"queued": 60, "sent": 60, "failed": 0, "failed_graph_permission": 0}
    assert progress.summary.totals["sent"] == 60 and progress.summary.totals["failed"] == 0
    assert emulator.counters["delivered"] == 60 and not emulator.duplicates()


async def test_one_users_403_fails_that_user_only(
        runtime: Runtime, emulator: ConnectorEmulator, graph: FakeGraph) -> None:
    users = [aad(i) for i in range(5)]
    for user in users:
        graph.add_user(user)
    graph.forbidden_users = {users[2]}  # no licence
    rt = await reach(runtime, emulator, graph)
    await process(rt, send({"users": users}, "one"), message_id="m")
    counts = await settle(rt, "one", 5, seconds=30)
    assert counts == {"queued": 5, "sent": 4, "failed": 1, "failed_forbidden": 1}
    progress = await rt.campaigns.progress("one")
    assert progress is not None and progress.summary.state == "done"
