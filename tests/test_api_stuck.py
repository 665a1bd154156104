"""What is stuck, over the HTTP API (README "Operations page"): the poison queue
(list, requeue after a check, purge one) and the schedules still to come,
through the built-in host against Azurite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from proactive.runtime import Runtime
from proactive.worker import process
from proactive_devtools.processes import Azurite
from tests.api_support import ApiApp, api_app
from tests.test_api import queued

USER = "00000000-0000-0000-0000-0000000000a1"
VALID = json.dumps({"version": 1, "op": "send", "key": "fixable", "to": {"user": USER},
                    "text": "hi"})


@pytest.fixture(scope="module")
def app(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiApp]:
    with api_app(azurite, tmp_path_factory.mktemp("stuck")) as running:
        yield running


async def parked(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    r = await client.get("poison")
    assert r.status_code == 200, r.text
    return {item["id"]: item for item in r.json()["items"]}


async def test_poison_is_listed_requeued_after_a_check_and_purged_one_by_one(
        client: httpx.AsyncClient, rt: Runtime) -> None:
    # The worker parks what it can't use, with the reason.
    await process(rt, '{"version": 1, "op": "send", "key": "bad", "to": {}}', message_id="b")
    await process(rt, "not json <script>", message_id="n")
    await rt.outbox.poison(VALID, reason="gone-wrong", detail="a test's", message_id="v")
    items = await parked(client)
    assert len(items) == 3
    by_reason = {item["reason"]: item for item in items.values()}
    assert by_reason["gone-wrong"]["message"] == VALID
    invalid = next(i for i in items.values() if i["reason"] not in ("gone-wrong",)
                   and "bad" in i["message"])

    # Still invalid as it came: refused, nothing moved, every message still in view.
    r = await client.post(f"poison/{invalid['id']}/requeue")
    assert r.status_code == 400, r.text
    assert len(await parked(client)) == 3
    # Fixed in the body: on the outbox, gone from the poison queue.
    fixed = json.dumps({"version": 1, "op": "send", "key": "bad", "to": {"user": USER},
                        "text": "fixed"})
    r = await client.post(f"poison/{invalid['id']}/requeue", content=fixed)
    assert r.status_code == 200, r.text
    assert {"key": "bad", "text": "fixed"}.items() <= next(
        m for m in await queued(rt) if m.get("key") == "bad").items()
    # As it came, when it is valid.
    r = await client.post(f"poison/{by_reason['gone-wrong']['id']}/requeue")
    assert r.status_code == 200, r.text
    assert any(m.get("key") == "fixable" for m in await queued(rt))
    left = await parked(client)
    assert len(left) == 1
    # Purge: that one only; an unknown id is a 404 and hides nothing.
    r = await client.post("poison/no-such-id/purge")
    assert r.status_code == 404 and r.json()["reason"] == "unknown-message"
    assert len(await parked(client)) == 1
    r = await client.post(f"poison/{next(iter(left))}/purge")
    assert r.status_code == 200, r.text
    assert await parked(client) == {}


async def test_schedules_still_to_come_are_listed(client: httpx.AsyncClient,
                                                  rt: Runtime) -> None:
    await process(rt, json.dumps({"version": 1, "op": "send", "key": "later",
                                  "to": {"user": USER}, "text": "later",
                                  "schedule": {"at": "2099-01-01T09:00:00Z"}}), message_id="s")
    r = await client.get("schedules")
    assert r.status_code == 200, r.text
    [item] = r.json()["items"]
    assert item["key"] == "later" and item["due"].startswith("2099-01-01T09:00")
