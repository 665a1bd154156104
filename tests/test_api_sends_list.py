"""GET /api/sends: sends to many recipients, newest first, from the send
index (proactive/storage/send_index.py), paged and filtered, through the
built-in host against Azurite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from proactive.runtime import Runtime
from proactive.storage import send_index
from proactive.worker import process
from proactive_devtools.processes import Azurite
from tests.api_support import ApiApp, api_app

USERS = [f"00000000-0000-0000-0000-{i:012d}" for i in range(3)]


@pytest.fixture(scope="module")
def app(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiApp]:
    with api_app(azurite, tmp_path_factory.mktemp("sends-list")) as running:
        yield running


def broadcast(key: str, **fields: Any) -> str:
    return json.dumps({"version": 1, "op": "send", "key": key, "to": {"users": USERS},
                       "text": "hi", **fields})


async def every_page(client: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token = None
    for _ in range(50):
        r = await client.get("sends", params={**params, **({"continuation": token}
                                                             if token else {})})
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        token = r.json().get("continuation")
        if not token:
            return items
    raise AssertionError("the pages never ended")


async def test_sends_are_listed_newest_first_paged_and_filtered(
        client: httpx.AsyncClient, rt: Runtime) -> None:
    await process(rt, broadcast("ls-a", topic="news", text="Hello World"), message_id="a")
    await process(rt, broadcast("ls-b", topic="ops", text="<script>x</script>"),
                  message_id="b")
    await process(rt, broadcast("ls-c"), message_id="c")
    # A one-recipient message has no summary row: not listed.
    await process(rt, json.dumps({"version": 1, "op": "send", "key": "ls-single",
                                  "to": {"user": USERS[0]}, "text": "hi"}), message_id="s")
    await process(rt, json.dumps({"version": 1, "op": "cancel", "key": "ls-b"}),
                  message_id="x")

    listed = await every_page(client, limit="1")
    assert [item["key"] for item in listed] == ["ls-c", "ls-b", "ls-a"]
    by_key = {item["key"]: item for item in listed}
    assert by_key["ls-a"]["topic"] == "news" and by_key["ls-a"]["audience"] == "users"
    assert by_key["ls-a"]["counts"]["queued"] == len(USERS)
    assert by_key["ls-b"]["state"] == "cancelled" and by_key["ls-c"]["state"] == "running"

    assert [i["key"] for i in await every_page(client, state="cancelled")] == ["ls-b"]
    assert [i["key"] for i in await every_page(client, topic="news")] == ["ls-a"]
    assert [i["key"] for i in await every_page(client, text="hello WORLD")] == ["ls-a"]
    assert [i["key"] for i in await every_page(client, text="ls-", state="running")] == [
        "ls-c", "ls-a"]


async def test_redelivered_split_lists_its_send_once(client: httpx.AsyncClient,
                                                     rt: Runtime) -> None:
    await process(rt, broadcast("ls-twice"), message_id="t1")
    await process(rt, broadcast("ls-twice"), message_id="t1")
    assert [i["key"] for i in await every_page(client, text="ls-twice")] == ["ls-twice"]


async def test_a_send_keyed_like_the_index_partition_does_not_show_its_own_rows(
        client: httpx.AsyncClient, rt: Runtime) -> None:
    await process(rt, broadcast(send_index.PARTITION), message_id="i")
    keys = [i["key"] for i in await every_page(client)]
    assert keys.count(send_index.PARTITION) == 1 and "" not in keys


@pytest.mark.parametrize("params,reason", [({"state": "lost"}, "bad-state"),
                                           ({"limit": "0"}, "bad-page-size"),
                                           ({"continuation": "!!"}, "bad-continuation"),
                                           ({"text": "x" * 1000}, "schema")])
async def test_bad_listing_parameters_are_a_400(client: httpx.AsyncClient,
                                                params: dict[str, str], reason: str) -> None:
    r = await client.get("sends", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["reason"] == reason
