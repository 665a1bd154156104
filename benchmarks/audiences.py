"""Audiences at the issue-17 scale: a team read page by page with a roster 429
mid-way, and a nested group with devices, disabled users, guests, 429s and
5xx, both through the worker on real Azurite, the Connector emulator and the
fake Graph (in this process).

    python -m benchmarks.audiences [--team 2000] [--group 5000] [--graph-rps 30]

Prints, for each: the final state, totals against what the emulator received,
duplicates, every person's row, Graph requests per installed user and the
busiest second of Graph calls. Figures are taken on whatever machine runs it:
say its load (uptime) with them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from benchmarks._common import figure, header, note

if TYPE_CHECKING:
    from proactive.storage.delivery_rows import DeliveryRow

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
TEAM = "19:bench-team@thread.tacv2"
GROUP = "6a1f0000-0000-4000-8000-00000000b001"
CATALOG = "cat-bench"


def aad(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"



async def _bot_in_team(rt: Any, service_url: str) -> None:
    """The bot added to the bench team, as Teams tells it (conversationUpdate)."""
    from proactive.receiving.activities import parse_activity

    await rt.references.record(parse_activity({
        "type": "conversationUpdate", "id": "x", "serviceUrl": service_url,
        "channelId": "msteams", "from": {"id": "29:admin"},
        "recipient": {"id": "28:bot"}, "membersAdded": [{"id": "28:bot"}],
        "conversation": {"id": TEAM, "conversationType": "channel", "tenantId": TENANT},
        "channelData": {"tenant": {"id": TENANT}, "eventType": "teamMemberAdded",
                        "team": {"id": TEAM, "name": "Bench"}}}))

async def _drain(rt: Any, key: str, seconds: float) -> dict[str, Any]:
    from proactive.worker import process

    deadline = time.monotonic() + seconds
    progress: dict[str, Any] = {}  # the last progress seen, as the CLI shows it
    failures: list[str] = []
    while time.monotonic() < deadline:
        batch = [m async for m in rt.outbox.queue.receive_messages(
            messages_per_page=16, visibility_timeout=60, max_messages=16)]
        answers = await asyncio.gather(*(process(rt, m.content, message_id=m.id)
                                         for m in batch), return_exceptions=True)
        for m, answer in zip(batch, answers, strict=True):
            if isinstance(answer, BaseException):  # as the host: it comes back later
                failures.append(type(answer).__name__)
                continue
            await rt.outbox.queue.delete_message(m)
        found = await rt.campaigns.progress(key)
        progress = found.view() if found is not None else progress
        if found is not None and found.summary.state in ("done", "failed", "cancelled"):
            if failures:
                note(f"invocations that raised (their message came back): {len(failures)} "
                     f"({', '.join(sorted(set(failures)))})")
            return progress
        if not batch:
            await asyncio.sleep(0.2)  # retries are invisible until due
    return progress


async def _runtime(azurite: Any) -> Any:
    from proactive.config import Settings
    from proactive.runtime import Runtime
    from proactive_devtools.provision import provision

    tag = uuid.uuid4().hex[:10]
    settings = Settings(storage_connection=azurite.connection_string,
                        outbox_queue=f"outbox{tag}", table_prefix=f"t{tag}", local_dev=True)
    await provision(settings)
    return await Runtime.create(settings)


def _rows_check(rows: list[tuple[DeliveryRow, str]]) -> dict[str, int]:
    states: dict[str, int] = {}
    for row, _ in rows:
        name = f"{row.state}/{row.reason or '-'}"
        states[name] = states.get(name, 0) + 1
    return states


async def team(azurite: Any, size: int) -> None:
    from proactive.delivering import audiences
    from proactive_devtools.emulator import ConnectorEmulator

    header(f"team of {size} (roster pages of 500, a 429 before each later page)")
    async with ConnectorEmulator(roster_page_429=1) as emulator:
        rt = await _runtime(azurite)
        try:
            members = [{"id": f"29:m-{i}", "aadObjectId": aad(i), "name": f"M{i}"}
                       for i in range(size)] + [{"id": "28:other-bot", "name": "Bot"}]
            emulator.register_team(TEAM, tenant_id=TENANT, members=members)
            await _bot_in_team(rt, emulator.url)
            started = time.monotonic()
            from proactive.worker import process
            await process(rt, json.dumps({"version": 1, "op": "send", "key": "team",
                                          "to": {"teamMembers": TEAM}, "text": "hi"}),
                          message_id="t")
            progress = await _drain(rt, "team", 900)
            took = time.monotonic() - started
            counts = progress.get("counts", {})
            note(f"state {progress.get('state')}, counts {counts}")
            figure("delivered by the emulator", emulator.counters["delivered"], "",
                   fmt="{:,.0f}")
            figure("total_sent", progress.get("total_sent", -1), "", fmt="{:,.0f}")
            figure("duplicates", len(emulator.duplicates()), "", fmt="{:,.0f}")
            figure("roster 429s", emulator.counters["roster_throttled"], "", fmt="{:,.0f}")
            figure("wall time", took, "s")
            rows = await rt.deliveries.by_key("team")
            note(f"report rows {len(rows)} (people {size + 1}): {_rows_check(rows)}")
            del audiences
        finally:
            await rt.close()


async def group(azurite: Any, size: int, graph_rps: float) -> None:
    from proactive.delivering.pacing import TenantPacer
    from proactive.teams.graph import GraphClient
    from proactive_devtools.emulator import ConnectorEmulator
    from proactive_devtools.fake_graph import FakeGraph

    header(f"nested group of {size} (devices, disabled, guests, 429s, 5xx)")
    async with ConnectorEmulator(fault_rate=0.01, seed=7) as emulator, \
            FakeGraph(tenant=TENANT, emulator=emulator) as graph:
        rt = await _runtime(azurite)
        emulator.configure(fault_statuses=[503, 504])
        try:
            graph.add_app(CATALOG, "manifest-bench")
            users = [aad(i) for i in range(size)]
            disabled = set(users[::50])
            guests = set(users[7::40]) - disabled
            for user in users:
                graph.add_user(user, enabled=user not in disabled,
                               user_type="Guest" if user in guests else "Member")
            devices = [f"00000000-0000-4000-9000-{i:012d}" for i in range(size // 100)]
            for device in devices:
                graph.add_device(device)
            graph.add_group(GROUP, users + devices)
            graph.page_throttle = 1
            graph.chat_delay = 0.0  # (see tests for the late chat: it costs one read a retry)
            rt.settings = dataclasses.replace(rt.settings, app_tenant_id=TENANT,
                                              graph_app_catalog_id=CATALOG)
            rt.graph = GraphClient(rt.http, None, rt.cloud, base_url=graph.url,
                                   local_dev=True)
            rt.graph_pacer = TenantPacer(rt.graph_pacer.table, rate=graph_rps)
            graph.rate = graph_rps
            await _bot_in_team(rt, emulator.url)
            started = time.monotonic()
            from proactive.worker import process
            await process(rt, json.dumps({"version": 1, "op": "send", "key": "group",
                                          "to": {"group": GROUP}, "text": "hi"}),
                          message_id="g")
            progress = await _drain(rt, "group", 3600)
            took = time.monotonic() - started
            counts = progress.get("counts", {})
            note(f"state {progress.get('state')}, counts {counts}")
            installed = graph.counters["installs"]
            figure("delivered by the emulator", emulator.counters["delivered"], "",
                   fmt="{:,.0f}")
            figure("total_sent", progress.get("total_sent", -1), "", fmt="{:,.0f}")
            figure("duplicates", len(emulator.duplicates()), "", fmt="{:,.0f}")
            installs = [p for _, _, p in graph.calls if "installedApps" in p]
            figure("Graph installedApps requests per installed user",
                   len(installs) / max(1, installed), "", target=3.0, fmt="{:,.2f}")
            figure("busiest second of Graph calls", graph.max_per_second(), "req",
                   target=graph_rps, fmt="{:,.0f}")
            figure("Graph 429s", graph.counters["throttled"], "", fmt="{:,.0f}")
            figure("wall time", took, "s")
            rows = await rt.deliveries.by_key("group")
            note(f"report rows {len(rows)} (people {size}): {_rows_check(rows)}")
        finally:
            await rt.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--team", type=int, default=2000)
    parser.add_argument("--group", type=int, default=5000)
    parser.add_argument("--graph-rps", type=float, default=30.0)
    args = parser.parse_args()
    from proactive_devtools.processes import start_azurite

    azurite = start_azurite()
    try:
        if args.team:
            asyncio.run(team(azurite, args.team))
        if args.group:
            asyncio.run(group(azurite, args.group, args.graph_rps))
    finally:
        azurite.stop()


if __name__ == "__main__":
    main()
