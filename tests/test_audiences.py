"""Sends to a team's members and to lists: paged, each member once, reasons counted."""

from __future__ import annotations

import json

import pytest

from proactive.delivering import audiences
from proactive.receiving.activities import parse_activity
from proactive.runtime import Runtime
from proactive.storage.campaign_rows import CampaignProgress
from proactive_devtools.emulator import ConnectorEmulator
from tests.activities_data import TENANT, team_install
from tests.polling import eventually
from tests.test_broadcast import aad, broadcast, drain

TEAM = "19:team-general@thread.tacv2"


def roster(count: int) -> list[dict[str, str]]:
    return [{"id": f"29:member-{i}", "aadObjectId": aad(i), "name": f"M{i}"}
            for i in range(count)]


async def test_a_team_audience_is_listed_page_by_page_and_each_member_gets_it_once(
        runtime: Runtime, emulator: ConnectorEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small pages (Teams' smallest is 50) so the audience takes several messages.
    monkeypatch.setattr(audiences, "TEAM_PAGE", 50)
    members = [*roster(120), {"id": "28:another-bot", "name": "Bot"}]
    emulator.register_team(TEAM, tenant_id=TENANT, members=members)
    await runtime.references.record(parse_activity(team_install(service_url=emulator.url)))
    message = broadcast({"teamMembers": TEAM}, key="team-news")
    from proactive.worker import process

    assert (await process(runtime, message, message_id="t1")).reason == "split"
    # The first message lists one page only; the next page is a message of its own.
    queued = [json.loads(m.content) for m in
              await runtime.outbox.queue.peek_messages(max_messages=32)]
    assert sum(len(q["to"].get("users", [])) for q in queued) == 50
    assert [q["to"]["continuation"] for q in queued if "teamMembers" in q["to"]]
    await drain(runtime, limit=1000)
    assert emulator.counters["delivered"] == 120
    assert emulator.counters["created"] == 120  # a 1:1 chat created for each member
    assert not emulator.duplicates()
    progress = await runtime.campaigns.progress("team-news")
    assert progress is not None
    # The roster's member without an AAD id is counted (once) with its reason.
    assert progress.counts == {"queued": 121, "sent": 120, "failed": 1,
                                  "failed_no_aad_id": 1}
    assert progress.summary.state == "done" and progress.summary.totals["queued"] == 121
    # ... and has a row in the report saying why.
    rows = {row["recipient"]: row for row in await report(runtime, "team-news")}
    assert rows["member:28:another-bot"]["reason"] == "no-aad-id"
    assert len(rows) == 121
    # The queue redelivers the first message: nothing is listed or sent again.
    assert (await process(runtime, message, message_id="t1")).reason == "duplicate"


async def report(rt: Runtime, key: str) -> list[dict[str, str]]:
    from proactive.reporting.reports import send_report

    body = b"".join([chunk async for chunk in send_report(rt, key, "json")])
    return [json.loads(line) for line in body.splitlines() if line.strip()]


async def test_a_team_is_done_only_once_every_page_is_split(
        runtime: Runtime, emulator: ConnectorEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from proactive.cli.live import settled
    from proactive.worker import process

    monkeypatch.setattr(audiences, "TEAM_PAGE", 50)
    emulator.register_team(TEAM, tenant_id=TENANT, members=roster(130))
    await runtime.references.record(parse_activity(team_install(service_url=emulator.url)))
    await process(runtime, broadcast({"teamMembers": TEAM}, key="pages"), message_id="p1")
    # Every part of the first page is delivered before the next page is listed
    # (the next page's message held back, as a slow queue would).
    held = []
    while True:
        batch = [m async for m in runtime.outbox.queue.receive_messages(
            messages_per_page=32, visibility_timeout=60, max_messages=32)]
        if not batch:
            break
        for m in batch:
            if "teamMembers" in json.loads(m.content)["to"]:
                held.append(m.content)
            else:
                await process(runtime, m.content, message_id=m.id)
            await runtime.outbox.queue.delete_message(m)
    assert emulator.counters["delivered"] == 50 and len(held) == 1
    progress = await runtime.campaigns.progress("pages")
    assert progress is not None and progress.summary.state == "running"
    assert not settled(progress.view())  # --watch / --wait go on
    await process(runtime, held[0], message_id="p2")
    await drain(runtime, limit=1000)
    progress = await runtime.campaigns.progress("pages")
    assert progress is not None and progress.summary.state == "done"
    assert progress.summary.totals["queued"] == progress.summary.totals["sent"] == 130
    assert emulator.counters["delivered"] == 130 and not emulator.duplicates()


async def test_a_team_the_bot_does_not_know_is_failed_and_counted(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    from proactive.cli.live import settled
    from proactive.worker import process

    outcome = await process(runtime, broadcast({"teamMembers": "19:nope@thread.tacv2"},
                                               key="k"), message_id="t")
    assert outcome.reason == "unknown-team"
    progress = await runtime.campaigns.progress("k")
    assert progress is not None
    assert progress.counts == {"queued": 1, "failed": 1, "failed_unknown_team": 1}
    # The send ends, failed with the reason, and the report says why.
    assert progress.summary.state == "failed" and progress.summary.reason == "unknown-team"
    assert settled(progress.view())
    [row] = await report(runtime, "k")
    assert row["recipient"] == "audience:teamMembers:19:nope@thread.tacv2"
    assert row["state"] == "failed" and row["reason"] == "unknown-team"
    assert emulator.counters["delivered"] == 0


async def test_overlapping_messages_under_one_key_count_each_person_once(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    from proactive.worker import process
    from tests.test_broadcast import install_users

    users = await install_users(runtime, emulator.url, 60)
    # Two messages of one send (as the README suggests past ~1,600 users) that
    # share 20 users, one naming them in upper case.
    await process(runtime, broadcast({"users": users[:40]}, key="two"), message_id="m1")
    await drain(runtime)
    # The first is done before the second arrives: the second runs it again.
    first = await runtime.campaigns.progress("two")
    assert first is not None and first.summary.state == "done"
    await process(runtime, broadcast({"users": [u.upper() for u in users[20:]]}, key="two"),
                  message_id="m2")
    await drain(runtime)
    progress = await runtime.campaigns.progress("two")
    assert progress is not None
    assert progress.counts == {"queued": 60, "sent": 60}
    assert progress.summary.state == "done" and progress.summary.totals["sent"] == 60
    assert emulator.counters["delivered"] == 60 and not emulator.duplicates()


@pytest.mark.parametrize("shape", ["objectId", "both"])
async def test_the_roster_as_microsoft_documents_it_objectid_or_both(
        runtime: Runtime, emulator: ConnectorEmulator, shape: str) -> None:
    from proactive.worker import process

    # Teams' roster example and the Java SDK's TeamsChannelAccount name the
    # object id `objectId`; some rosters carry `aadObjectId` too.
    emulator.configure(roster_ids=shape)
    emulator.register_team(TEAM, tenant_id=TENANT, members=roster(60))
    await runtime.references.record(parse_activity(team_install(service_url=emulator.url)))
    await process(runtime, broadcast({"teamMembers": TEAM}, key="doc"), message_id="d")
    await drain(runtime, limit=1000)
    progress = await runtime.campaigns.progress("doc")
    assert progress is not None and progress.summary.state == "done"
    assert progress.counts == {"queued": 60, "sent": 60}
    assert emulator.counters["delivered"] == 60


def test_when_both_ids_differ_aad_object_id_wins() -> None:
    assert audiences.object_id({"id": "29:x", "objectId": "o", "aadObjectId": "a"}) == "a"
    assert audiences.object_id({"id": "29:x", "objectId": "o"}) == "o"
    assert audiences.object_id({"id": "29:x"}) == ""


async def test_a_roster_throttled_between_pages_still_reaches_everyone_once(
        runtime: Runtime, emulator: ConnectorEmulator, monkeypatch: pytest.MonkeyPatch) -> None:

    from proactive.worker import process

    monkeypatch.setattr(audiences, "TEAM_PAGE", 50)
    emulator.configure(roster_page_429=1)  # every page after the first: one 429 first
    emulator.register_team(TEAM, tenant_id=TENANT, members=roster(160))
    await runtime.references.record(parse_activity(team_install(service_url=emulator.url)))
    await process(runtime, broadcast({"teamMembers": TEAM}, key="slow"), message_id="s")

    async def finished() -> CampaignProgress | None:
        await drain(runtime, limit=1000)
        progress = await runtime.campaigns.progress("slow")
        return progress if progress and progress.summary.state != "running" else None

    # The retried page is invisible until Retry-After: no need to poll faster.
    progress = await eventually(finished, 60, "the send finished", interval=0.2)
    assert progress is not None and progress.summary.state == "done"
    assert progress.summary.totals["queued"] == progress.summary.totals["sent"] == 160
    assert emulator.counters["roster_throttled"] == 3
    assert emulator.counters["delivered"] == 160 and not emulator.duplicates()


async def test_a_page_that_cannot_be_read_after_its_retries_ends_the_send_failed(
        runtime: Runtime, emulator: ConnectorEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from proactive.cli.live import settled
    from proactive.worker import process

    monkeypatch.setattr(audiences, "TEAM_PAGE", 50)
    runtime.settings = dataclasses.replace(runtime.settings, max_attempts=1)
    emulator.register_team(TEAM, tenant_id=TENANT, members=roster(120))
    await runtime.references.record(parse_activity(team_install(service_url=emulator.url)))
    await process(runtime, broadcast({"teamMembers": TEAM}, key="lost"), message_id="l")
    emulator.inject(503, count=10, operation="members")  # every later page read fails
    await drain(runtime, limit=1000)
    progress = await runtime.campaigns.progress("lost")
    assert progress is not None and settled(progress.view())
    assert progress.summary.state == "failed" and progress.summary.reason == "retries-exhausted"
    assert progress.counts["sent"] == 50  # the first page's members got it
    rows = {row["recipient"]: row for row in await report(runtime, "lost")}
    assert rows[f"audience:teamMembers:{TEAM}"]["reason"] == "retries-exhausted"
