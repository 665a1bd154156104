"""The Connector emulator answers like Teams' Connector, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from proactive.errors import Unreachable
from proactive_devtools.emulator import ConnectorEmulator, _parser, emulator_from_args, main
from tests.clock import Clock

TENANT = "tenant-1"
BOT = "28:bot-app-id"
CHANNEL = "19:general-abc@thread.tacv2"
REPO_ROOT = Path(__file__).resolve().parents[1]
# A client that gives up on a slow answer (connecting to loopback stays quick).
SHORT_READ = httpx.Timeout(5.0, read=0.3)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def emulator(clock: Clock) -> AsyncIterator[ConnectorEmulator]:
    emu = ConnectorEmulator(clock=clock)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
async def http(emulator: ConnectorEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emulator.url, timeout=5.0) as client:
        yield client


def conv(conversation_id: str, *rest: str) -> str:
    """A Connector path with ids percent-encoded, as the real client sends them."""
    tail = "".join("/" + quote(part, safe="") for part in rest)
    return f"v3/conversations/{quote(conversation_id, safe='')}{tail}"


def message(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "text": text, **extra}


async def create_personal(http: httpx.AsyncClient, member: str, tenant: str = TENANT,
                          *, tenant_key: str = "tenantId") -> httpx.Response:
    return await http.post("v3/conversations", json={
        "bot": {"id": BOT}, "members": [{"id": member}], "isGroup": False,
        tenant_key: tenant, "channelData": {"tenant": {"id": tenant}}})


async def send(http: httpx.AsyncClient, conversation_id: str, text: str = "hi",
               **extra: Any) -> httpx.Response:
    return await http.post(conv(conversation_id, "activities"), json=message(text, **extra))


def code_of(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


# ---- conversations ---------------------------------------------------------------------

async def test_create_personal_conversation_is_stable_per_tenant_and_member(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    first = await create_personal(http, "29:user-a")
    assert first.status_code == 201
    conversation_id = first.json()["id"]
    assert conversation_id.startswith("a:")
    assert set(first.json()) == {"id"}

    again = await create_personal(http, "29:user-a", tenant_key="tenantID")
    assert again.status_code == 200
    assert again.json() == {"id": conversation_id}

    other_member = (await create_personal(http, "29:user-b")).json()["id"]
    other_tenant = (await create_personal(http, "29:user-a", "tenant-2")).json()["id"]
    assert len({conversation_id, other_member, other_tenant}) == 3
    assert emulator.counters["created"] == 3

    members = await http.get(conv(conversation_id, "members"))
    assert members.status_code == 200
    assert members.json() == [{"id": "29:user-a"}]


async def test_create_by_aad_object_id_finds_the_same_conversation(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    emulator.register_team(CHANNEL, tenant_id=TENANT,
                           members=[{"id": "29:user-a", "aadObjectId": "aad-a"}])
    by_user_id = (await create_personal(http, "29:user-a")).json()["id"]
    by_aad = await create_personal(http, "aad-a")
    assert by_aad.json()["id"] == by_user_id


@pytest.mark.parametrize("content", [
    b"not json",
    b"[1, 2]",
    json.dumps({"bot": {"id": BOT}, "isGroup": False, "tenantId": TENANT}).encode(),
    json.dumps({"bot": {"id": BOT}, "members": [{"id": "29:u"}], "isGroup": False}).encode(),
    json.dumps({"isGroup": True, "tenantId": TENANT, "activity": message("x")}).encode(),
    json.dumps({"isGroup": True, "tenantId": TENANT,
                "channelData": {"channel": {"id": CHANNEL}}}).encode(),
])
async def test_malformed_create_bodies_are_400_bad_argument(
        http: httpx.AsyncClient, content: bytes) -> None:
    response = await http.post("v3/conversations", content=content,
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert code_of(response) == "BadArgument"


async def test_malformed_activity_is_400_and_not_delivered(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    response = await http.post(conv("a:x", "activities"), content=b"{broken",
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert code_of(response) == "BadArgument"
    assert emulator.counters["delivered"] == 0


async def test_channel_thread_is_created_recorded_and_replied_to(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    created = await http.post("v3/conversations", json={
        "bot": {"id": BOT}, "isGroup": True, "tenantId": TENANT,
        "channelData": {"channel": {"id": CHANNEL}, "tenant": {"id": TENANT}},
        "activity": message("root post")})
    assert created.status_code == 201
    body = created.json()
    root = body["activityId"]
    assert body["id"] == f"{CHANNEL};messageid={root}"
    assert root.isdigit()

    [delivery] = emulator.deliveries
    assert (delivery.conversation_id, delivery.activity_id, delivery.text) == (
        body["id"], root, "root post")

    # Posting to "<channel>;messageid=<root>" replies in the thread, encoded or not.
    encoded = await send(http, body["id"], "reply 1")
    raw = await http.post(f"v3/conversations/{body['id']}/activities", json=message("reply 2"))
    assert encoded.status_code == raw.status_code == 201
    replies = emulator.delivered_to(body["id"])[1:]
    assert [(d.text, d.reply_to_id) for d in replies] == [("reply 1", root), ("reply 2", root)]
    assert encoded.json()["id"] != raw.json()["id"]


async def test_send_and_reply_answer_an_id_and_record_the_activity(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    conversation_id = "a:1conv:with@odd;chars"
    card = {"contentType": "application/vnd.microsoft.card.adaptive", "content": {"body": []}}
    sent = await send(http, conversation_id, "hello", summary="greeting", attachments=[card])
    assert sent.status_code == 201
    assert set(sent.json()) == {"id"}
    activity_id = sent.json()["id"]

    reply = await http.post(conv(conversation_id, "activities", activity_id),
                            json=message("a reply"))
    assert reply.status_code == 201

    first, second = emulator.deliveries
    assert first.conversation_id == conversation_id
    assert first.activity_id == activity_id
    assert (first.text, first.summary, first.attachments) == ("hello", "greeting", [card])
    assert first.body["type"] == "message"
    assert first.reply_to_id is None
    assert second.reply_to_id == activity_id
    assert emulator.counters["delivered"] == 2


@pytest.mark.parametrize("prefix", ["", "teams/", "a/b/c/", "tenants/t-9/"])
async def test_any_path_prefix_before_v3_works(emulator: ConnectorEmulator, prefix: str) -> None:
    async with httpx.AsyncClient(base_url=emulator.url + prefix, timeout=5.0) as client:
        response = await send(client, "a:x")
    assert response.status_code == 201
    assert emulator.deliveries[0].conversation_id == "a:x"


async def test_update_and_delete_change_the_recorded_activity(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    activity_id = (await send(http, "a:x", "v1")).json()["id"]

    updated = await http.put(conv("a:x", "activities", activity_id),
                             json=message("v2", id=activity_id))
    assert updated.status_code == 200
    assert updated.json() == {"id": activity_id}
    [delivery] = emulator.deliveries
    assert (delivery.text, delivery.updates) == ("v2", 1)

    unknown = await http.put(conv("a:x", "activities", "999"), json=message("v3"))
    assert unknown.status_code == 404
    assert code_of(unknown) == "ActivityNotFoundInConversation"

    deleted = await http.delete(conv("a:x", "activities", activity_id))
    assert deleted.status_code == 200
    assert delivery.deleted
    again = await http.delete(conv("a:x", "activities", activity_id))
    assert again.status_code == 404
    assert code_of(again) == "ActivityNotFoundInConversation"
    assert (emulator.counters["updated"], emulator.counters["deleted"]) == (1, 1)


async def test_paged_members_walk_the_roster_with_continuation_tokens(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    roster = [{"id": f"29:user-{i}", "name": f"User {i}"} for i in range(120)]
    emulator.register_team(CHANNEL, tenant_id=TENANT, members=roster)

    seen: list[dict[str, Any]] = []
    token: str | None = None
    pages = 0
    while True:
        params = {"pageSize": "50", **({"continuationToken": token} if token else {})}
        page = (await http.get(conv(CHANNEL, "pagedmembers"), params=params)).json()
        seen += page["members"]
        pages += 1
        token = page.get("continuationToken")
        if not token:
            break
    assert (seen, pages) == (roster, 3)

    clamped = (await http.get(conv(CHANNEL, "pagedmembers"), params={"pageSize": "5"})).json()
    assert len(clamped["members"]) == 50  # Teams' minimum page
    assert (await http.get(conv(CHANNEL, "members"))).json() == roster
    one = await http.get(conv(CHANNEL, "members", "29:user-7"))
    assert one.json() == roster[7]
    missing = await http.get(conv(CHANNEL, "members", "29:nobody"))
    assert missing.status_code == 404
    bad = await http.get(conv(CHANNEL, "pagedmembers"), params={"continuationToken": "@@"})
    assert bad.status_code == 400


async def test_the_roster_shows_object_ids_as_documented_and_throttles_between_pages(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    roster = [{"id": f"29:user-{i}", "aadObjectId": f"aad-{i}"} for i in range(60)]
    emulator.register_team(CHANNEL, tenant_id=TENANT, members=roster)
    # Teams' roster example and the Java SDK's TeamsChannelAccount: `objectId`.
    first = (await http.get(conv(CHANNEL, "pagedmembers"), params={"pageSize": "50"})).json()
    assert first["members"][0] == {"id": "29:user-0", "objectId": "aad-0"}
    emulator.configure(rosterIds="both", rosterPage429=2)
    token = first["continuationToken"]
    refused = await http.get(conv(CHANNEL, "pagedmembers"),
                             params={"pageSize": "50", "continuationToken": token})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "2"
    again = (await http.get(conv(CHANNEL, "pagedmembers"),
                            params={"pageSize": "50", "continuationToken": token})).json()
    assert again["members"][0] == {"id": "29:user-50", "objectId": "aad-50",
                                   "aadObjectId": "aad-50"}
    emulator.configure(rosterIds="aadObjectId")
    one = (await http.get(conv(CHANNEL, "members", "29:user-1"))).json()
    assert one == roster[1]


async def test_team_conversations_list_general_and_channels(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    emulator.register_team(CHANNEL, tenant_id=TENANT,
                           channels=[{"id": "19:ops@thread.tacv2", "name": "Ops"}])
    listed = await http.get(f"v3/teams/{quote(CHANNEL, safe='')}/conversations")
    assert listed.status_code == 200
    assert listed.json() == {"conversations": [{"id": CHANNEL, "name": None},
                                               {"id": "19:ops@thread.tacv2", "name": "Ops"}]}

    unknown = await http.get("v3/teams/19%3Aother%40thread.tacv2/conversations")
    assert unknown.json() == {"conversations": [{"id": "19:other@thread.tacv2", "name": None}]}
    emulator.configure(accept_unknown_conversations=False)
    strict = await http.get("v3/teams/19%3Aother%40thread.tacv2/conversations")
    assert strict.status_code == 404


async def test_strict_mode_answers_404_for_unknown_conversations(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    emulator.configure(accept_unknown_conversations=False)
    unknown = await send(http, "a:never-created")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": {"code": "ConversationNotFound",
                                        "message": "Conversation not found."}}
    thread = await http.post("v3/conversations", json={
        "isGroup": True, "tenantId": TENANT, "channelData": {"channel": {"id": CHANNEL}},
        "activity": message("x")})
    assert thread.status_code == 404

    created = (await create_personal(http, "29:user-a")).json()["id"]
    emulator.register_conversation("a:registered", tenant_id=TENANT)
    assert (await send(http, created)).status_code == 201
    assert (await send(http, "a:registered")).status_code == 201
    assert emulator.counters["delivered"] == 2


# ---- recipients who can't be reached ------------------------------------------------------

async def test_blocked_user_gets_the_real_403_bodies(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    conversation_id = (await create_personal(http, "29:user-a")).json()["id"]

    emulator.set_status("29:user-a", "blocked")
    blocked = await send(http, conversation_id)
    assert blocked.status_code == 403
    assert blocked.json() == {"error": {
        "code": "ConversationBlockedByUser",
        "message": "User blocked the conversation with the bot."}}
    # Creating the conversation still works for a user who blocked the bot.
    assert (await create_personal(http, "29:user-a")).status_code == 200

    emulator.set_status(conversation_id, "blocked-209")
    emulator.set_status("29:user-a", "ok")
    variant = await send(http, conversation_id)
    assert variant.status_code == 403
    assert variant.json()["errorCode"] == 209
    assert json.loads(variant.json()["message"])["subCode"] == "MessageWritesBlocked"
    assert emulator.counters["delivered"] == 0

    emulator.set_status(conversation_id, "ok")
    assert (await send(http, conversation_id)).status_code == 201


async def test_uninstalled_and_disabled_answer_their_403_codes(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    conversation_id = (await create_personal(http, "29:user-a")).json()["id"]
    emulator.set_status("29:user-a", "uninstalled")
    assert code_of(await send(http, conversation_id)) == "BotNotInConversationRoster"
    uninstalled_create = await create_personal(http, "29:user-a")
    assert uninstalled_create.status_code == 403
    assert code_of(uninstalled_create) == "BotNotInConversationRoster"

    emulator.set_status(TENANT, "disabled")
    other = await create_personal(http, "29:user-b")
    assert other.status_code == 403
    assert code_of(other) == "BotDisabledByAdmin"
    assert (await create_personal(http, "29:user-b", "tenant-2")).status_code == 201


# ---- rate limits ---------------------------------------------------------------------------

async def test_eighth_send_in_a_second_is_throttled_and_not_delivered(
        http: httpx.AsyncClient, emulator: ConnectorEmulator, clock: Clock) -> None:
    emulator.configure(rate_limits=True)
    for i in range(7):
        assert (await send(http, "a:x", f"m{i}")).status_code == 201

    throttled = await send(http, "a:x", "m7")
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "1"
    assert code_of(throttled) == "Throttled"
    assert [d.text for d in emulator.deliveries] == [f"m{i}" for i in range(7)]
    assert emulator.counters["throttled"] == 1
    assert (await send(http, "a:y")).status_code == 201  # another conversation is fine

    clock.advance(1.0)
    assert (await send(http, "a:x", "m7")).status_code == 201
    # Now 8 in the last 2 seconds: the 2-second window holds the next one.
    nine = await send(http, "a:x", "m8")
    assert nine.status_code == 429
    assert nine.headers["Retry-After"] == "1"
    clock.advance(1.0)
    assert (await send(http, "a:x", "m8")).status_code == 201
    assert emulator.status_counts == {201: 10, 429: 2}


async def test_create_conversation_counts_against_the_conversation_window(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    emulator.configure(rate_limits=True, retry_after=2.5)
    statuses = [(await create_personal(http, "29:user-a")).status_code for _ in range(8)]
    assert statuses == [201] + [200] * 6 + [429]
    again = await create_personal(http, "29:user-a")
    assert again.headers["Retry-After"] == "2.5"


async def test_tenant_limit_applies_across_conversations(
        emulator: ConnectorEmulator, clock: Clock) -> None:
    emulator.configure(rate_limits=True, tenant_rps=5)
    emulator.register_conversation("a:known", tenant_id="t-3")
    base = emulator.url
    async with httpx.AsyncClient(base_url=base + "tenants/t-1/", timeout=5.0) as t1, \
            httpx.AsyncClient(base_url=base + "tenants/t-2/", timeout=5.0) as t2, \
            httpx.AsyncClient(base_url=base, timeout=5.0) as plain:
        for i in range(5):
            assert (await send(t1, f"a:c{i}")).status_code == 201
        over = await send(t1, "a:c5")
        assert over.status_code == 429
        assert over.headers["Retry-After"] == "1"
        assert (await send(t2, "a:d0")).status_code == 201

        # A known conversation's own tenant wins over the route and header.
        for i in range(5):
            assert (await send(plain, "a:known", f"k{i}")).status_code == 201
        known = await plain.post(conv("a:known", "activities"), json=message("k5"),
                                 headers={"X-Emulator-Tenant": "t-9"})
        assert known.status_code == 429

        clock.advance(1.0)
        assert (await send(t1, "a:c5")).status_code == 201
    assert emulator.counters["delivered"] == 12


# ---- faults --------------------------------------------------------------------------------

async def test_fault_rate_is_roughly_honoured_and_reproducible_with_a_seed(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    emulator.configure(fault_rate=0.25, seed=42)

    async def run() -> list[int]:
        return [(await send(http, f"a:c{i % 20}", f"m{i}")).status_code for i in range(300)]

    first = await run()
    faults = [s for s in first if s != 201]
    assert 45 <= len(faults) <= 105
    assert set(faults) <= {500, 502, 503, 504, 412}
    assert len(set(faults)) >= 4
    assert emulator.counters["delivered"] == first.count(201)
    assert emulator.counters["faults"] == len(faults)

    emulator.reset()  # reseeds: the same run fails the same way
    assert await run() == first


async def test_injected_status_answers_the_next_n_matching_requests(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    emulator.inject(429, count=2, conversation_id="a:x", operation="send", retry_after=3)
    assert (await send(http, "a:other")).status_code == 201
    for _ in range(2):
        response = await send(http, "a:x")
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "3"
        assert code_of(response) == "Throttled"
    assert (await send(http, "a:x")).status_code == 201

    emulator.inject(412)
    precondition = await send(http, "a:x")
    assert (precondition.status_code, code_of(precondition)) == (412, "PreconditionFailed")
    assert emulator.counters["delivered"] == 2
    assert emulator.counters["injected"] == 3


async def test_injected_hang_times_out_undelivered_and_stop_releases_it(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    emulator.inject(504, hang=60)
    with pytest.raises(httpx.ReadTimeout):
        await http.post(conv("a:x", "activities"), json=message("x"), timeout=SHORT_READ)
    assert emulator.counters["delivered"] == 0
    started = time.monotonic()
    await asyncio.wait_for(emulator.stop(), 10)
    assert time.monotonic() - started < 5


async def test_late_answer_delivers_so_a_retry_shows_up_as_a_duplicate(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    emulator.configure(duplicate_key="channelData.key")
    emulator.inject(None, hang=60)
    activity = message("deploy done", channelData={"key": "k-1"})
    with pytest.raises(httpx.ReadTimeout):
        await http.post(conv("a:x", "activities"), json=activity, timeout=SHORT_READ)
    assert emulator.counters["delivered"] == 1  # delivered, although the client gave up

    assert (await http.post(conv("a:x", "activities"), json=activity)).status_code == 201
    assert emulator.duplicates() == [{"conversationId": "a:x", "text": "deploy done",
                                      "count": 2}]
    assert emulator.duplicate_keys() == [{"conversationId": "a:x", "key": "k-1", "count": 2}]


async def test_answer_seconds_carries_the_request_out_then_holds_its_answer(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    emulator.configure(answerSeconds=60)  # Teams' round trip, stretched
    posting = asyncio.create_task(http.post(conv("a:x", "activities"), json=message("x"),
                                            timeout=SHORT_READ))
    with pytest.raises(httpx.ReadTimeout):
        await posting
    # The user has it although no answer came: what a caller's crash mid-call leaves.
    assert emulator.counters["delivered"] == 1
    emulator.configure(answer_seconds=0)
    assert (await send(http, "a:y")).status_code == 201


# ---- token, size ----------------------------------------------------------------------------

async def test_expected_token_is_enforced_and_every_header_recorded(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    emulator.configure(expected_token="good-token")
    missing = await send(http, "a:x")
    wrong = await http.post(conv("a:x", "activities"), json=message("x"),
                            headers={"Authorization": "Bearer bad-token"})
    right = await http.post(conv("a:x", "activities"), json=message("x"),
                            headers={"Authorization": "Bearer good-token"})
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 201)
    assert missing.json() == {"message": "Authorization has been denied for this request."}
    assert emulator.authorization_headers == [None, "Bearer bad-token", "Bearer good-token"]
    assert emulator.counters["delivered"] == 1

    state = await http.get("_admin/state")  # no token needed
    assert state.status_code == 200
    assert state.json()["authorization"] == [None, "Bearer bad-token", "Bearer good-token"]


async def test_activity_over_100kb_as_utf16_is_413(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    # 60,000 ASCII characters: 60 KB as UTF-8 but 120 KB as UTF-16.
    too_big = await send(http, "a:x", "x" * 60_000)
    assert too_big.status_code == 413
    assert code_of(too_big) == "MessageSizeTooBig"
    fits = await send(http, "a:x", "x" * 50_000)
    assert fits.status_code == 201

    thread = await http.post("v3/conversations", json={
        "isGroup": True, "tenantId": TENANT, "channelData": {"channel": {"id": CHANNEL}},
        "activity": message("y" * 60_000)})
    assert thread.status_code == 413
    assert emulator.counters["delivered"] == 1


# ---- admin API -------------------------------------------------------------------------------

async def test_admin_api_drives_the_emulator_like_another_process_would(
        http: httpx.AsyncClient, emulator: ConnectorEmulator) -> None:
    async def admin(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await http.post(f"_admin/{path}", json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    config = await admin("config", {"acceptUnknownConversations": False, "rateLimits": True})
    assert (config["acceptUnknownConversations"], config["rateLimits"]) == (False, True)
    assert (await send(http, "a:x")).status_code == 404

    await admin("conversations", {"id": "a:x", "tenantId": TENANT,
                                  "members": [{"id": "29:user-x"}]})
    await admin("teams", {"id": CHANNEL, "tenantId": TENANT, "members": [{"id": "29:u"}],
                          "channels": [{"id": "19:ops@thread.tacv2", "name": "Ops"}]})
    assert (await send(http, "a:x", "one")).status_code == 201
    assert (await send(http, "19:ops@thread.tacv2", "two")).status_code == 201

    await admin("status", {"target": "29:user-x", "status": "blocked"})
    assert code_of(await send(http, "a:x")) == "ConversationBlockedByUser"
    await admin("status", {"target": "29:user-x", "status": "ok"})

    await admin("inject", {"status": 503, "count": 1, "conversationId": "a:x"})
    assert (await send(http, "a:x")).status_code == 503

    # The 404, "one" and the blocked send used 3 of the 7 per second; the injected
    # answer, which comes before rate limiting, did not.
    for _ in range(4):
        assert (await send(http, "a:x", "burst")).status_code == 201
    assert (await send(http, "a:x", "burst")).status_code == 429
    now = (await admin("clock", {"advance": 1}))["now"]
    assert now == pytest.approx(emulator.now())
    assert (await send(http, "a:x", "after")).status_code == 201

    state = (await http.get("_admin/state")).json()
    assert state["counters"]["delivered"] == 7
    assert state["counters"]["throttled"] == 1
    assert state["statuses"] == {"201": 7, "403": 1, "404": 1, "429": 1, "503": 1}
    assert [d["text"] for d in state["deliveries"][:2]] == ["one", "two"]
    assert state["deliveries"][1]["conversationId"] == "19:ops@thread.tacv2"
    assert {c["id"] for c in state["conversations"]} == {
        "a:x", CHANNEL, "19:ops@thread.tacv2"}
    assert state["duplicates"] == [{"conversationId": "a:x", "text": "burst", "count": 4}]
    light = (await http.get("_admin/state", params={"deliveries": "0"})).json()
    assert "deliveries" not in light
    assert len((await http.get("_admin/state", params={"since": "6"})).json()["deliveries"]) == 1

    await admin("reset", {})
    state = (await http.get("_admin/state")).json()
    assert state["counters"]["delivered"] == 0
    assert state["deliveries"] == []
    assert (await send(http, "a:x")).status_code == 201  # registrations survive a reset

    await admin("reset", {"everything": True})
    assert (await send(http, "a:x")).status_code == 404

    bad = await http.post("_admin/status", json={"target": "a:x", "status": "asleep"})
    assert bad.status_code == 400
    assert (await http.get("_admin/health")).json() == {"ok": True, "url": emulator.url}


async def test_real_connector_client_runs_against_the_emulator(
        emulator: ConnectorEmulator) -> None:
    connector = pytest.importorskip("proactive.teams.connector")
    clouds = pytest.importorskip("proactive.teams.clouds")
    async with httpx.AsyncClient() as http:
        client = connector.ConnectorClient(http, None, clouds.PUBLIC, local_dev=True,
                                           local_connectors=[emulator.url])
        url = emulator.url + "teams/"
        conversation_id = await client.create_personal_conversation(
            url, bot_id=BOT, member_id="29:user-a", tenant_id=TENANT)
        activity_id = await client.send(url, conversation_id, message("hello"))
        await client.update(url, conversation_id, activity_id, message("edited"))
        thread, root = await client.create_channel_thread(
            url, bot_id=BOT, channel_id=CHANNEL, tenant_id=TENANT, activity=message("root"))
        await client.send(url, thread, message("in thread"))
        await client.delete(url, conversation_id, activity_id)

        emulator.set_status("29:user-a", "blocked-209")
        with pytest.raises(Unreachable) as blocked:
            await client.send(url, conversation_id, message("again"))
    assert (blocked.value.status, blocked.value.reason) == (403, "blocked")
    assert [(d.text, d.reply_to_id) for d in emulator.deliveries] == [
        ("edited", None), ("root", None), ("in thread", root)]
    assert emulator.deliveries[0].deleted
    assert emulator.authorization_headers == [None] * 7  # no token to a loopback emulator


# ---- command line ----------------------------------------------------------------------------

def test_cli_flags_map_to_options() -> None:
    args = _parser().parse_args([
        "--port", "0", "--rate-limits", "--tenant-rps", "30", "--fault-rate", "0.1",
        "--fault-statuses", "503,hang", "--seed", "7", "--expected-token", "t",
        "--strict-conversations", "--retry-after", "2", "--answer-seconds", "0.25"])
    config = emulator_from_args(args).config()
    assert config == {**config, "rateLimits": True, "tenantRps": 30.0, "faultRate": 0.1,
                      "faultStatuses": [503, "hang"], "seed": 7, "expectedToken": "t",
                      "acceptUnknownConversations": False, "retryAfter": 2.0,
                      "answerSeconds": 0.25}
    with pytest.raises(SystemExit):
        main(["--fault-statuses", "200"])


async def test_main_serves_in_another_process_until_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proactive_devtools.emulator", "--port", "0",
        "--strict-conversations", "--base-path", "teams",
        cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("Connector emulator serviceUrl: http://127.0.0.1:")
        service_url = line.split(": ", 1)[1].strip()
        assert service_url.endswith("/teams/")
        root = service_url.removesuffix("teams/")
        async with httpx.AsyncClient(base_url=service_url, timeout=5.0) as http, \
                httpx.AsyncClient(base_url=root, timeout=5.0) as admin:
            assert (await send(http, "a:x")).status_code == 404
            await admin.post("_admin/conversations", json={"id": "a:x", "tenantId": TENANT})
            assert (await send(http, "a:x", "from outside")).status_code == 201
            state = (await admin.get("_admin/state")).json()
        assert [d["text"] for d in state["deliveries"]] == ["from outside"]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
    assert code == 0
