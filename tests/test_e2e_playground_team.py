"""End to end through the Agents Playground: a send to a team's members
(README "Audiences"). The app and Playground run as in test_e2e_playground.py."""

from __future__ import annotations

import uuid

import pytest

from proactive_devtools import playground as pg
from tests.polling import eventually
from tests.test_e2e_playground import Stack, apps, stack  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_a_send_to_the_team_audience_reaches_its_members(stack: Stack) -> None:  # noqa: F811
    team = stack.config["teams"][0]
    tenant = stack.config["tenantId"]
    await stack.playground.install(team["id"])
    await eventually(lambda: stack.references.team(team["id"], tenant),
                     what="the team's reference stored")
    key = f"e2e-team-{uuid.uuid4().hex[:8]}"
    text = f"To the whole team ({key})"
    await stack.cli("send", "--key", key, "--team", team["id"], "--text", text)

    def reached() -> list[dict]:
        return [e for e in stack.log.from_bot() if pg.body(e).get("text") == text]
    await eventually(lambda: len(reached()) >= len(team["members"]) + 1,
                     what="the message in every member's chat")
    assert all(pg.status(e) == 201 for e in reached())
    # Each member reached once, in a 1:1 chat of their own.
    # The Playground's roster: the listed members and the user at the keyboard.
    members = {u["aadObjectId"].lower() for u in stack.config["users"]
               if u["id"] in team["members"]} | {stack.user.lower()}
    rows = await eventually(lambda: _sent_rows(stack, key, len(members)),
                            what="every delivery recorded")
    assert {r["recipient"] for r in rows} == {f"user:{m}" for m in members}
    assert len({r["conversationId"] for r in rows}) == len(members)
    assert len(reached()) == len(members)
    progress = await eventually(lambda: _settled(stack, key, len(members)),
                                what="progress counted")
    assert progress["counts"] == {"queued": len(members), "sent": len(members)}


async def _sent_rows(on: Stack, key: str, count: int) -> list[dict] | None:
    rows = [row.to_entity() for row, _ in await on.deliveries.by_key(key)]
    return rows if len(rows) == count and all(r["state"] == "sent" for r in rows) else None


async def _settled(on: Stack, key: str, count: int) -> dict | None:
    progress = await on.cli("progress", "--key", key, ok=False)
    return progress if progress and progress["counts"].get("sent") == count else None
