"""op `install`: the app pre-installed for a whole audience through the fake
Graph, with the Connector emulator and Azurite; and the CLI that puts it on
the outbox (README "Pre-installing for an audience")."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from proactive.config import Settings
from proactive.runtime import Runtime
from proactive.storage.campaign_rows import CampaignProgress
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from proactive_devtools.fake_graph import FakeGraph
from tests.polling import eventually
from tests.test_broadcast import aad, drain
from tests.test_install import CATALOG, GROUP, graph, reach  # noqa: F401 - fixtures

ROOT = Path(__file__).parents[1]


def install(to: dict[str, Any], key: str) -> str:
    return json.dumps({"version": 1, "op": "install", "key": key, "to": to})


async def settle(rt: Runtime, key: str, seconds: float = 30) -> CampaignProgress:
    """Run the worker until the key's progress turns final, or the deadline passes."""
    progress: CampaignProgress | None = None

    async def done() -> CampaignProgress | None:
        nonlocal progress
        await drain(rt, limit=10_000)
        progress = await rt.campaigns.progress(key)
        return progress if progress is not None and progress.summary.state == "done" else None

    # Retries are invisible on the queue until due: no need to poll faster.
    result: CampaignProgress = await eventually(done, seconds, "the pre-install done",
                                                interval=0.2, seen=lambda: progress)
    return result


async def test_a_group_never_met_is_installed_once_each_and_nothing_is_sent(
        runtime: Runtime, emulator: ConnectorEmulator, graph: FakeGraph) -> None:  # noqa: F811
    users = [aad(i) for i in range(50)]
    for user in users:
        graph.add_user(user)
    graph.add_group(GROUP, users)
    for user in users[:5]:
        graph.install_for(user, CATALOG)  # installed already: Graph answers 409
    rt = await reach(runtime, emulator, graph, rate=400)
    graph.rate = 300
    await process(rt, install({"group": GROUP}, "pre"), message_id="m")
    progress = await settle(rt, "pre")
    assert progress.summary.state == "done"
    assert progress.counts == {"queued": 50, "installed": 45, "already_installed": 5}
    assert progress.summary.totals["installed"] == 45
    assert graph.counters["installs"] == 45 and graph.counters["conflict"] == 5
    assert emulator.counters["delivered"] == 0  # an install sends nothing
    rows = {r.recipient: r.to_entity() for r, _ in await rt.deliveries.by_key("pre")}
    assert len(rows) == 50
    assert {(r["state"], r["reason"]) for r in rows.values()} == {
        ("installed", "installed"), ("installed", "already-installed")}
    for user in users:  # each one's chat is stored: a later send needs no install
        ref = await rt.references.user(user)
        assert ref is not None and ref.conversation_id.startswith("19:")

    # The same key again: every user is done already, Graph is not asked.
    calls = dict(graph.counters)
    await process(rt, install({"group": GROUP}, "pre"), message_id="m2")
    await process(rt, json.dumps({"version": 1, "op": "install", "key": "pre", "part": True,
                                  "to": {"users": users[:25]}}), message_id="m3")
    await drain(rt, limit=10_000)
    assert graph.counters["installs"] == 45 and graph.counters["conflict"] == 5
    assert graph.counters["POST"] == calls["POST"]
    pre = await rt.campaigns.progress("pre")
    assert pre is not None and pre.counts["installed"] == 45

    # A new key: users with a usable chat are already-installed, without Graph.
    await process(rt, install({"users": users[:10]}, "again"), message_id="m4")
    again = await settle(rt, "again")
    assert again.counts == {"queued": 10, "already_installed": 10}
    assert graph.counters["POST"] == calls["POST"]


async def test_an_unknown_user_fails_with_its_reason_and_the_others_are_installed(
        runtime: Runtime, emulator: ConnectorEmulator, graph: FakeGraph) -> None:  # noqa: F811
    graph.add_user(aad(1))
    rt = await reach(runtime, emulator, graph)
    await process(rt, install({"users": [aad(1), aad(2)]}, "k"), message_id="m")
    progress = await settle(rt, "k")
    assert progress.counts == {"queued": 2, "installed": 1, "failed": 1,
                               "failed_not_found": 1}


async def test_install_is_refused_to_poison_when_graph_install_is_off(
        runtime: Runtime) -> None:
    runtime.settings = dataclasses.replace(runtime.settings, graph_app_catalog_id="",
                                           graph_app_manifest_id="")
    outcome = await process(runtime, install({"users": [aad(1)]}, "off"), message_id="m")
    assert outcome.state == "poisoned" and outcome.reason == "install-disabled"
    assert await runtime.campaigns.progress("off") is None  # nothing was started


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AzureWebJobsStorage": settings.storage_connection,
           "OUTBOX_QUEUE": settings.outbox_queue}
    return subprocess.run([sys.executable, "-m", "proactive", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


async def test_cli_install_group_enqueues_the_install_message(
        runtime: Runtime, settings: Settings) -> None:
    done = await asyncio.to_thread(_cli, settings, "install", "--group", "g-7",
                                   "--tenant", "t-1", "--key", "pre-7")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"queued": settings.outbox_queue, "op": "install",
                                       "key": "pre-7"}
    found = [m async for m in runtime.outbox.queue.receive_messages(max_messages=32)]
    from proactive.storage.queues import lenient_text

    bodies = [json.loads(lenient_text(m.content)) for m in found]
    assert {"version": 1, "op": "install", "key": "pre-7",
            "to": {"group": "g-7", "tenant": "t-1"}} in bodies


async def test_cli_install_mistakes_get_one_line_and_exit_2(settings: Settings) -> None:
    for args in (("install",), ("install", "--group", "g", "--team", "t")):
        done = await asyncio.to_thread(_cli, settings, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
