"""Sends to a team's members and to lists: paged, each member once, reasons counted."""

from __future__ import annotations

import json

import pytest

from proactive.delivering import audiences
from proactive.receiving.activities import parse_activity
from proactive.runtime import Runtime
from proactive_devtools.emulator import ConnectorEmulator
from tests.activities_data import TENANT, team_install
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
    # The roster's member without an AAD id is counted with its reason.
    assert progress["counts"] == {"queued": 120, "sent": 120, "failed": 1,
                                  "failed_no_aad_id": 1}
    # The queue redelivers the first message: nothing is listed or sent again.
    assert (await process(runtime, message, message_id="t1")).reason == "duplicate"


async def test_a_team_the_bot_does_not_know_is_failed_and_counted(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    from proactive.worker import process

    outcome = await process(runtime, broadcast({"teamMembers": "19:nope@thread.tacv2"},
                                               key="k"), message_id="t")
    assert outcome.reason == "unknown-team"
    progress = await runtime.campaigns.progress("k")
    assert progress is not None
    assert progress["counts"] == {"failed": 1, "failed_unknown_team": 1}
    assert emulator.counters["delivered"] == 0
