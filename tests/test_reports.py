"""Reports and a send's final state, against real storage (Azurite) and the
Connector emulator: the per-key report streamed as CSV / JSON Lines, the reach
report, the `done` flip, and the CLI commands."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proactive.config import Settings
from proactive.receiving.activities import parse_activity
from proactive.reporting.reports import ReportError, reach_report, send_report
from proactive.runtime import Runtime
from proactive.storage.reference_keys import InstallState
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from proactive_devtools.processes import REPO_ROOT
from tests.activities_data import TENANT, USER_AAD, install

OTHER = "6f3a8c1e-0000-4000-8000-00000000bbbb"
GONE = "6f3a8c1e-0000-4000-8000-00000000cccc"


@pytest.fixture
async def three(runtime: Runtime, emulator: ConnectorEmulator) -> Runtime:
    """Three installed users: one opted out of `news`, one who blocked the bot."""
    for n, aad in enumerate((USER_AAD, OTHER, GONE)):
        await runtime.references.record(parse_activity(install(
            service_url=emulator.url, aad=aad, conversation=f"a:1conv{n}")))
    await runtime.opt_outs.stop(OTHER, "news", via="card", tenant_id=TENANT)
    ref = await runtime.references.user(GONE)
    assert ref is not None
    await runtime.references.mark(ref, InstallState.BLOCKED, aad_id=GONE)
    return runtime


async def drain(rt: Runtime) -> None:
    """Carry out every message on the outbox (the parts of a split)."""
    while messages := [m async for m in rt.outbox.queue.receive_messages(max_messages=32)]:
        for message in messages:
            await process(rt, message.content, message_id=message.id)
            await rt.outbox.queue.delete_message(message)


async def broadcast(rt: Runtime, key: str) -> None:
    message = {"version": 1, "op": "send", "key": key, "topic": "news",
               "to": {"users": [USER_AAD, OTHER, GONE]}, "text": "hi"}
    await process(rt, json.dumps(message), message_id="m")
    await drain(rt)


async def text(chunks: AsyncIterator[bytes]) -> str:
    return b"".join([chunk async for chunk in chunks]).decode()


async def test_the_send_report_lists_every_recipient_as_csv_or_json_lines(
        three: Runtime) -> None:
    await broadcast(three, "r1")
    rows = list(csv.DictReader(io.StringIO(await text(send_report(three, "r1", "csv")))))
    by = {row["recipient"]: row for row in rows}
    assert set(by) == {f"user:{a}" for a in (USER_AAD, OTHER, GONE)}
    sent = by[f"user:{USER_AAD}"]
    assert (sent["state"], sent["attempts"]) == ("sent", "1")
    assert sent["activityId"] and sent["firstAttemptAt"] and sent["lastAttemptAt"]
    assert (by[f"user:{OTHER}"]["state"], by[f"user:{OTHER}"]["reason"]) == \
        ("skipped", "opted-out")
    assert by[f"user:{GONE}"]["reason"] == "blocked"
    lines = (await text(send_report(three, "r1", "json"))).splitlines()
    assert [json.loads(line)["recipient"] for line in lines] == [r["recipient"] for r in rows]
    assert await text(send_report(three, "no-such-key", "json")) == ""
    with pytest.raises(ReportError):
        await text(send_report(three, "r1", "xml"))


async def test_a_many_user_send_turns_done_once_every_recipient_is_settled(
        three: Runtime) -> None:
    await broadcast(three, "r2")
    progress = await three.campaigns.progress("r2")
    assert progress is not None
    assert progress.summary.state == "done"
    summary = progress.summary
    assert summary.finished_at and summary.created_at
    assert summary.finished_at >= summary.created_at
    assert summary.duration_seconds is not None and summary.duration_seconds >= 0
    assert summary.totals == {"queued": 3, "sent": 1, "skipped": 2, "failed": 0}
    finished = summary.finished_at
    assert await three.campaigns.settle("r2") is False  # once
    again = await three.campaigns.progress("r2")
    assert again is not None and again.summary.finished_at == finished


async def test_a_send_still_going_is_not_done_and_a_reader_settles_it(
        three: Runtime) -> None:
    message = {"version": 1, "op": "send", "key": "r3", "to": {"users": [USER_AAD, OTHER]},
               "text": "hi"}
    await process(three, json.dumps(message), message_id="m")  # split only
    running = await three.campaigns.progress("r3")
    assert running is not None and running.summary.state == "running"
    # A part counted by a worker that died before its check: the next read settles it.
    settle = three.campaigns.settle
    three.campaigns.settle = _never  # type: ignore[method-assign]
    try:
        await drain(three)
    finally:
        three.campaigns.settle = settle  # type: ignore[method-assign]
    summary = await three.campaigns.progress("r3")
    assert summary is not None and summary.summary.state == "done"


async def _never(key: str) -> bool:
    return False


async def test_a_cancelled_send_stays_cancelled_when_it_finishes(three: Runtime) -> None:
    message = {"version": 1, "op": "send", "key": "r4", "to": {"users": [USER_AAD, OTHER]},
               "text": "hi"}
    await process(three, json.dumps(message), message_id="m")
    await process(three, json.dumps({"version": 1, "op": "cancel", "key": "r4"}),
                  message_id="c")
    await drain(three)
    summary = await three.campaigns.progress("r4")
    assert summary is not None
    assert summary.summary.state == "cancelled" and summary.summary.finished_at
    assert summary.summary.totals["skipped"] == 2


async def test_the_reach_report_names_who_blocked_and_who_opted_out_with_when(
        three: Runtime) -> None:
    rows = list(csv.DictReader(io.StringIO(await text(reach_report(three, "csv")))))
    assert {(r["user"], r["status"], r["topic"]) for r in rows} == {
        (GONE, "blocked", ""), (OTHER, "opted-out", "news")}
    assert all(r["at"] for r in rows)
    assert {r["via"] for r in rows if r["status"] == "opted-out"} == {"card"}


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"AzureWebJobsStorage": settings.storage_connection,
           "PROACTIVE_TABLE_PREFIX": settings.table_prefix, "OUTBOX_QUEUE": settings.outbox_queue,
           "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "proactive", *args], env=env, cwd="/",
                          capture_output=True, text=True, timeout=60)


async def test_the_cli_writes_reports_and_sets_and_clears_opt_outs(
        three: Runtime, settings: Settings, tmp_path: Path) -> None:
    await broadcast(three, "r5")
    out = tmp_path / "r5.jsonl"
    done = await asyncio.to_thread(cli, settings, "report", "--key", "r5", "--format", "json",
                                   "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 3
    done = await asyncio.to_thread(cli, settings, "reach")
    assert done.stdout.splitlines()[0] == "user,tenantId,status,topic,at,via"

    done = await asyncio.to_thread(cli, settings, "optout", "--user", USER_AAD, "--topic", "ci")
    assert json.loads(done.stdout) == {"user": USER_AAD, "optedOut": "ci", "new": True}
    assert [o.via for o in await three.preferences.of_user(USER_AAD)] == ["admin"]
    # The running worker learns of it (at its next pacing reservation).
    three.tenant_pacer.clock = lambda: time.time() + 10
    message = {"version": 1, "op": "send", "key": "r6", "topic": "ci",
               "to": {"user": USER_AAD}, "text": "hi"}
    outcome = await process(three, json.dumps(message), message_id="r6")
    assert outcome.reason == "opted-out"
    # A user whose tenant is not known needs --tenant.
    done = await asyncio.to_thread(cli, settings, "optout", "--user", "someone-unknown")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--tenant" in done.stderr
    done = await asyncio.to_thread(cli, settings, "optin", "--user", OTHER)
    assert json.loads(done.stdout) == {"user": OTHER, "cleared": ["news"]}
    assert await three.preferences.of_user(OTHER) == []
    bad = await asyncio.to_thread(cli, settings, "optin", "--user", OTHER, "--topic", "No Way")
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
