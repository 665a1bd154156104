"""The reach report's "who in a group never installed it", against real
storage (Azurite) and the fake Graph on loopback: our own references answer
first, Graph's installedApps for the rest, through the CLI too."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from proactive.config import Settings
from proactive.receiving.activities import parse_activity
from proactive.reporting.reports import ReportError, never_installed, reach_report
from proactive.runtime import Runtime
from proactive_devtools.emulator import ConnectorEmulator
from proactive_devtools.fake_graph import FakeGraph
from proactive_devtools.processes import REPO_ROOT
from tests.activities_data import TENANT, install
from tests.test_broadcast import aad
from tests.test_install import CATALOG, graph, reach  # noqa: F401 - fixtures

MEMBERS = [aad(i) for i in range(10)]
OURS = MEMBERS[:2]  # installed, and we hold their reference: no Graph call for them
GRAPHS = MEMBERS[2:4]  # installed, known only to Graph
NEVER = MEMBERS[4:]
G10 = "6a1f0000-0000-4000-8000-00000000e010"  # the group's object id


@pytest.fixture
async def group(runtime: Runtime, emulator: ConnectorEmulator,
                graph: FakeGraph) -> Runtime:  # noqa: F811
    rt = await reach(runtime, emulator, graph)
    for user in MEMBERS:
        graph.add_user(user)
    graph.add_group(G10, MEMBERS)
    for user in GRAPHS:
        graph.install_for(user, CATALOG)
    for n, user in enumerate(OURS):
        await rt.references.record(parse_activity(install(
            service_url=emulator.url, aad=user, conversation=f"a:1ours{n}")))
    return rt


async def rows_of(chunks: AsyncIterator[bytes]) -> list[dict[str, str]]:
    text = b"".join([chunk async for chunk in chunks]).decode()
    return list(csv.DictReader(io.StringIO(text)))


async def test_a_group_of_ten_with_four_installed_lists_exactly_the_six_others(
        group: Runtime, graph: FakeGraph) -> None:  # noqa: F811
    rows = await rows_of(reach_report(group, "csv", group=G10))
    assert sorted(r["user"] for r in rows) == NEVER
    assert {(r["status"], r["tenantId"]) for r in rows} == {("not-installed", TENANT)}
    asked = [p for _, m, p in graph.calls if "installedApps" in p]
    assert len(asked) == 8  # the two with our installed reference cost no Graph call
    assert not any(user in p for p in asked for user in OURS)


async def test_graphs_429_is_waited_out_and_the_list_is_still_whole(
        group: Runtime, graph: FakeGraph) -> None:  # noqa: F811
    graph.rate = 3  # Graph refuses past 3/s: the report waits Retry-After and goes on
    rows = [row async for row in never_installed(group, G10)]
    assert sorted(r["user"] for r in rows) == NEVER
    assert graph.counters["throttled"] >= 1  # it was refused, and waited rather than failed


async def test_an_unknown_group_or_graph_install_off_is_a_clear_report_error(
        group: Runtime) -> None:
    with pytest.raises(ReportError, match="no-such"):
        [row async for row in never_installed(group, "no-such")]
    group.settings = group.settings.__class__(**{**group.settings.__dict__,
                                                 "graph_app_catalog_id": ""})
    with pytest.raises(ReportError, match="PROACTIVE_GRAPH_APP_CATALOG_ID"):
        [row async for row in never_installed(group, G10)]


def cli(settings: Settings, graph_url: str, *args: str,
        catalog: str = CATALOG) -> subprocess.CompletedProcess[str]:
    env = {"AzureWebJobsStorage": settings.storage_connection,
           "PROACTIVE_TABLE_PREFIX": settings.table_prefix, "OUTBOX_QUEUE": settings.outbox_queue,
           "PROACTIVE_LOCAL_DEV": "true", "MicrosoftAppTenantId": TENANT,
           "PROACTIVE_GRAPH_APP_CATALOG_ID": catalog,
           "PROACTIVE_CLOUD_OVERRIDE": json.dumps({"graph_url": graph_url}),
           "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "proactive", *args], env=env, cwd="/",
                          capture_output=True, text=True, timeout=60)


async def test_the_cli_reach_group_lists_the_six_and_refuses_without_graph_install(
        group: Runtime, graph: FakeGraph, settings: Settings) -> None:  # noqa: F811
    done = await asyncio.to_thread(cli, settings, graph.url, "reach", "--group", G10,
                                   "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(r["user"] for r in rows if r["status"] == "not-installed") == NEVER

    off = await asyncio.to_thread(cli, settings, graph.url, "reach", "--group", G10,
                                  catalog="")
    assert off.returncode == 2 and "Traceback" not in off.stderr
    assert off.stderr.startswith("error: --group needs proactive install")
    assert len(off.stderr.strip().splitlines()) == 1
    missing = await asyncio.to_thread(cli, settings, graph.url, "reach", "--group", "nope")
    last = missing.stderr.strip().splitlines()[-1]  # after local dev mode's warnings
    assert missing.returncode == 2 and last.startswith("error: ") and "'nope'" in last
    assert "Traceback" not in missing.stderr


async def test_the_api_reach_route_lists_the_group_and_refuses_an_unknown_one(
        group: Runtime) -> None:
    from proactive.api import reports
    from proactive.api.problems import Problem

    reply = await reports.reach(group, G10)
    listed = json.loads(reply.body)["unreachable"]
    assert sorted(r["user"] for r in listed if r["status"] == "not-installed") == NEVER
    with pytest.raises(Problem) as refused:
        await reports.reach(group, "no-such")
    assert refused.value.status == 400


async def test_one_member_graph_refuses_is_a_row_and_the_report_goes_on(
        group: Runtime, graph: FakeGraph) -> None:  # noqa: F811
    graph.forbidden_users = {NEVER[0]}  # no licence: Graph answers 403 for this user only
    rows = [row async for row in never_installed(group, G10)]
    by_user = {r["user"]: r["status"] for r in rows}
    assert by_user[NEVER[0]] == "forbidden"
    assert sorted(u for u, s in by_user.items() if s == "not-installed") == NEVER[1:]


async def test_graph_refusing_the_app_itself_is_one_clear_error(
        group: Runtime, graph: FakeGraph) -> None:  # noqa: F811
    graph.forbid_app = True  # the permission is not granted (or not consented)
    with pytest.raises(ReportError, match="graph-permission"):
        [row async for row in never_installed(group, G10)]
