"""Graph's rate held across two workers: two function hosts (`python -m
proactive host`, child processes) sharing Azurite pre-install the app for 60
users the bot never met, through the fake Graph on loopback (served by this
test's process, which records each call's time). With PROACTIVE_GRAPH_RPS=10
the fake must never see more than 10 calls (+1 slack) in any sliding second
although each worker alone could go that fast: the budget is the shared
TenantPacer row, not a per-process limit. Every user is installed once. A 429
with Retry-After 2 for one user puts that user's next Graph call at least 2 s
later."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from proactive.config import Settings
from proactive.runtime import Runtime
from proactive.storage.campaign_rows import CampaignProgress
from proactive_devtools.fake_graph import FakeGraph
from proactive_devtools.processes import stop_process
from tests.activities_data import TENANT
from tests.polling import eventually
from tests.test_broadcast import aad
from tests.test_chaos import App, app_env, empty_settings_file

USERS = 60
RPS = 10
CATALOG = "cat-0000-2222"
KEY = "pre-two-workers"
SLOW = aad(7)  # answered 429 Retry-After 2 once
DEADLINE = 90.0


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraph]:
    async with FakeGraph(tenant=TENANT) as fake:  # rate 0: it refuses nothing by itself
        fake.add_app(CATALOG, "manifest-2")
        yield fake


@pytest.fixture
def workers(settings: Settings, graph: FakeGraph, tmp_path: Path) -> Iterator[list[App]]:
    env = app_env(settings, 30)
    env.update(MicrosoftAppTenantId=TENANT, PROACTIVE_GRAPH_APP_CATALOG_ID=CATALOG,
               PROACTIVE_GRAPH_RPS=str(RPS),
               PROACTIVE_CLOUD_OVERRIDE=json.dumps({"graph_url": graph.url}))
    settings_file = empty_settings_file(tmp_path)
    apps = []
    for n in range(2):
        logs = tmp_path / f"w{n}"
        logs.mkdir()
        apps.append(App(dict(env), settings_file, logs, lease=30))
    try:
        yield apps
    finally:
        for app in apps:
            if app.proc is not None:
                stop_process(app.proc)


async def test_two_workers_hold_graphs_rate_and_honour_retry_after(
        runtime: Runtime, graph: FakeGraph, workers: list[App]) -> None:
    users = [aad(i) for i in range(USERS)]
    for user in users:
        graph.add_user(user)
    graph.throttle_next[SLOW] = 2
    for app in workers:
        await asyncio.to_thread(app.start)
    parts = [users[i:i + 10] for i in range(0, USERS, 10)]  # six messages for two workers
    for part in parts:
        await runtime.outbox.queue.send_message(json.dumps(
            {"version": 1, "op": "install", "key": KEY, "to": {"users": part}}))

    progress: CampaignProgress | None = None

    async def done() -> bool:
        nonlocal progress
        progress = await runtime.campaigns.progress(KEY)
        for app in workers:
            assert app.proc is not None and app.proc.poll() is None, app.log_tail()
        return progress is not None and progress.summary.state == "done"

    await eventually(done, DEADLINE, "the install done", interval=0.1,
                     seen=lambda: (progress, workers[0].log_tail()))

    assert progress is not None
    counts = progress.counts
    # A part deferred by the shared budget between the POST and reading the
    # chat comes back to a 409; the delivery row remembers Graph's 201 to its
    # earlier attempt, so every user is counted installed, none already-installed.
    assert counts.get("installed", 0) == USERS, progress
    assert counts.get("already_installed", 0) == 0, progress
    assert graph.counters["installs"] == USERS and len(graph.installed) == USERS
    busiest = graph.max_per_second()
    print(f"\n{len(graph.calls)} Graph calls, busiest second {busiest} (limit {RPS}), "
          f"{graph.calls[-1][0] - graph.calls[0][0]:.1f} s")
    assert busiest <= RPS + 1

    refused = [t for t, _, p in graph.refused if SLOW in p]
    assert len(refused) == 1
    after = [t for t, _, p in graph.calls if SLOW in p and t > refused[0]]
    assert after and after[0] - refused[0] >= 2.0
