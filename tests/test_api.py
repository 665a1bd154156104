"""The HTTP API (README "HTTP API") through the built-in host as a child
process with Functions keys required, against Azurite."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from proactive.api.notifications import MAX_BATCH, MAX_BODY
from proactive.runtime import Runtime
from proactive.worker import process
from proactive_devtools.processes import Azurite
from tests.api_support import ApiApp, api_app

USER = "00000000-0000-0000-0000-0000000000a1"


@pytest.fixture(scope="module")
def app(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiApp]:
    with api_app(azurite, tmp_path_factory.mktemp("api")) as running:
        yield running


async def queued(rt: Runtime) -> list[dict[str, Any]]:
    """Every message on the app's outbox (peeked: they stay)."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        peeked = await rt.outbox.queue.peek_messages(max_messages=32)
    except ResourceNotFoundError:
        return []
    out = []
    for m in peeked:
        text = m.content
        if not text.lstrip().startswith("{"):
            text = base64.b64decode(text).decode()
        out.append(json.loads(text))
    return out


def send(key: str | None = None, **fields: Any) -> dict[str, Any]:
    message = {"version": 1, "op": "send", "to": {"user": USER}, "text": "hi", **fields}
    if key:
        message["key"] = key
    return message


def assert_problem(r: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["reason"] == reason
    assert body["title"] and body["type"].endswith(reason) and "detail" in body
    return body


@pytest.mark.parametrize("auth", [{}, {"x-functions-key": "wrong"}, {"code": "wrong"},
                                  {"x-functions-key": ""}])
async def test_notifications_refused_without_the_right_key_and_nothing_enqueued(
        app: ApiApp, rt: Runtime, auth: dict[str, str]) -> None:
    before = len(await queued(rt))
    headers = {k: v for k, v in auth.items() if k != "code"}
    params = {k: v for k, v in auth.items() if k == "code"}
    async with httpx.AsyncClient(base_url=app.base, timeout=20) as anon:
        r = await anon.post("notifications", json=send("nokey"), headers=headers, params=params)
        assert r.status_code == 401
        for path in ("sends/x", "sends/x/recipients", "openapi.json"):
            assert (await anon.get(path, headers=headers, params=params)).status_code == 401
        assert (await anon.post("sends/x/cancel", headers=headers)).status_code == 401
    assert len(await queued(rt)) == before


async def test_key_in_code_query_parameter_is_accepted(app: ApiApp, rt: Runtime) -> None:
    async with httpx.AsyncClient(base_url=app.base, timeout=20) as anon:
        r = await anon.post("notifications", json=send("by-code"), params={"code": app.key})
    assert r.status_code == 202, r.text
    assert any(m.get("key") == "by-code" for m in await queued(rt))


async def test_valid_message_is_enqueued_verbatim_with_key_and_status_url(
        client: httpx.AsyncClient, rt: Runtime, app: ApiApp) -> None:
    message = send("deploy/4711", summary="Deploy")
    r = await client.post("notifications", json=message)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["key"] == "deploy/4711"
    assert body["status"] == app.base + "sends/deploy%2F4711"
    assert r.headers["location"] == body["status"]
    assert message in await queued(rt)


async def test_send_without_key_gets_a_generated_one(client: httpx.AsyncClient,
                                                     rt: Runtime) -> None:
    r = await client.post("notifications", json=send())
    assert r.status_code == 202, r.text
    key = r.json()["key"]
    assert key.startswith("api-")
    assert send(key) in await queued(rt)


async def test_batch_is_enqueued_whole_or_refused_whole(client: httpx.AsyncClient,
                                                         rt: Runtime) -> None:
    r = await client.post("notifications", json=[send("b-1"), send("b-2")])
    assert r.status_code == 202, r.text
    assert [a["key"] for a in r.json()["accepted"]] == ["b-1", "b-2"]
    keys = {m.get("key") for m in await queued(rt)}
    assert {"b-1", "b-2"} <= keys

    bad = [send("c-1"), {**send("c-2"), "colour": "red"}, send("c-3", to={})]
    body = assert_problem(await client.post("notifications", json=bad), 400, "schema")
    assert [(e["index"], e["reason"]) for e in body["errors"]] == [(1, "schema"), (2, "schema")]
    assert "colour" in body["errors"][0]["detail"]
    assert not {"c-1", "c-2", "c-3"} & {m.get("key") for m in await queued(rt)}

    too_many = [send(f"d-{i}") for i in range(MAX_BATCH + 1)]
    assert_problem(await client.post("notifications", json=too_many), 400, "schema")
    assert_problem(await client.post("notifications", json=[]), 400, "schema")


async def test_a_batch_of_rules_that_never_fire_is_refused_whole(
        client: httpx.AsyncClient, rt: Runtime) -> None:
    # An INTERVAL that never meets its days (issue 16 §3): each is checked when
    # accepted and refused with its reason; none is queued.
    rule = "FREQ=MINUTELY;INTERVAL=7;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO;BYHOUR=23;BYMINUTE=59"
    batch = [send(f"never-{i}", schedule={"rrule": rule, "start": "2026-01-01T00:00"})
             for i in range(MAX_BATCH)]
    body = assert_problem(await client.post("notifications", json=batch), 400,
                          "invalid-schedule")
    assert len(body["errors"]) == MAX_BATCH and all(
        "never fires" in e["detail"] for e in body["errors"])
    assert not {m.get("key") for m in await queued(rt)} & {f"never-{i}" for i in range(25)}


@pytest.mark.parametrize(("body", "reason", "detail"), [
    (b"{nope", "not-json", "the message is not JSON"),
    (json.dumps(send("u", colour="red")).encode(), "schema", "unknown field(s): colour"),
    (json.dumps({**send("v"), "version": 2}).encode(), "unsupported-version",
     "'version' must be 1"),
    (json.dumps({**send("o"), "op": "shout"}).encode(), "unknown-op", None),
    (json.dumps(send("big", text="x" * 60_000)).encode(), "too-large", None),
])
async def test_invalid_message_gets_the_poison_queues_reason_and_detail(
        client: httpx.AsyncClient, rt: Runtime, body: bytes, reason: str,
        detail: str | None) -> None:
    before = await queued(rt)
    r = await client.post("notifications", content=body,
                          headers={"content-type": "application/json"})
    problem = assert_problem(r, 400, reason)
    if detail:
        assert problem["detail"] == detail
    # The worker, given the same body, parks it with the same reason and detail.
    await process(rt, body.decode(), message_id="m1")
    received = await rt.outbox.poison_queue.receive_message()
    assert received is not None
    parked = json.loads(received.content)
    assert (parked["reason"], parked["detail"]) == (reason, problem["detail"])
    assert await queued(rt) == before


@pytest.mark.parametrize(("extra", "field"), [
    ({"part": True}, "part"), ({"attempt": 3}, "attempt"), ({"service": True}, "service"),
    ({"to": {"group": "00000000-0000-0000-0000-0000000000g1",
             "continuation": "https://graph.microsoft.com/v1.0/users?$select=id"}},
     "to.continuation"),
    ({"signature": "k.forged"}, "signature"),
])
async def test_fields_only_the_app_sets_are_refused_by_name(
        client: httpx.AsyncClient, rt: Runtime, extra: dict[str, Any], field: str) -> None:
    """Issue 16 §1: `part`, `attempt`, `service`, `to.continuation` are the app's own."""
    key = f"app-only-{field}"
    r = await client.post("notifications", json={**send(key), **extra})
    body = assert_problem(r, 400, "app-only-field")
    assert body["detail"] == f"'{field}' is set by the app only: leave it out"
    assert key not in {m.get("key") for m in await queued(rt)}


async def test_oversize_body_and_wrong_media_type_never_reach_the_queue(
        client: httpx.AsyncClient, rt: Runtime) -> None:
    before = await queued(rt)
    huge = json.dumps(send("huge", text="x" * MAX_BODY)).encode()
    assert_problem(await client.post("notifications", content=huge,
                                     headers={"content-type": "application/json"}),
                   413, "too-large")
    assert_problem(await client.post("notifications", content=json.dumps(send("form")),
                                     headers={"content-type": "text/plain"}),
                   415, "unsupported-media-type")
    assert await queued(rt) == before


async def test_status_of_unknown_key_is_404_and_of_a_delivered_key_its_counts(
        client: httpx.AsyncClient, rt: Runtime) -> None:
    assert_problem(await client.get("sends/never-sent"), 404, "unknown-key")
    # The worker handles a send to a user nobody has seen: one failed delivery row.
    await process(rt, json.dumps(send("st-1")), message_id="m2")
    r = await client.get("sends/st-1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["key"] == "st-1" and body["state"] == "done"
    assert body["counts"] == {"failed": 1, "failed_unknown_user": 1, "read": 0, "acked": 0}
    assert body["links"]["recipients"].endswith("/sends/st-1/recipients")


async def test_status_of_an_all_users_send_to_nobody_is_done_saying_why(
        client: httpx.AsyncClient, rt: Runtime) -> None:
    await process(rt, json.dumps(send("empty-api", to={"allUsers": True, "tenant": "t-none"})),
                  message_id="e1")
    body = (await client.get("sends/empty-api")).json()
    assert body["state"] == "done" and body["reason"] == "no-recipients"
    assert "'t-none'" in body["detail"]


async def test_cancel_queues_a_cancel_message(client: httpx.AsyncClient, rt: Runtime) -> None:
    r = await client.post("sends/camp%2F1/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["key"] == "camp/1"
    assert {"version": 1, "op": "cancel", "key": "camp/1"} in await queued(rt)


async def test_recipients_are_paged_with_a_continuation_token(
        client: httpx.AsyncClient, rt: Runtime) -> None:
    users = [f"00000000-0000-0000-0000-{i:012d}" for i in range(5)]
    for i, user in enumerate(users):
        await process(rt, json.dumps(send("pg-1", to={"user": user})), message_id=f"p{i}")
    seen: list[str] = []
    token = None
    for _ in range(10):
        params = {"limit": "2", **({"continuation": token} if token else {})}
        r = await client.get("sends/pg-1/recipients", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 2
        seen += [item["recipient"] for item in page["items"]]
        token = page.get("continuation")
        if not token:
            break
    assert sorted(seen) == sorted(f"user:{u}" for u in users)
    assert_problem(await client.get("sends/pg-1/recipients", params={"limit": "0"}),
                   400, "bad-page-size")
    assert_problem(await client.get("sends/pg-1/recipients", params={"continuation": "!!"}),
                   400, "bad-continuation")


async def test_report_pages_as_json_and_csv(client: httpx.AsyncClient, rt: Runtime) -> None:
    users = [f"00000000-0000-0000-0000-{i:012d}" for i in range(100, 103)]
    for i, user in enumerate(users):
        await process(rt, json.dumps(send("rp-1", to={"user": user})), message_id=f"r{i}")
    r = await client.get("sends/rp-1/report", params={"format": "json", "limit": "2"})
    assert r.status_code == 200, r.text
    page = r.json()
    assert len(page["items"]) == 2 and page["continuation"]
    assert 'rel="next"' in r.headers["link"]
    rest = await client.get("sends/rp-1/report",
                            params={"format": "json", "continuation": page["continuation"]})
    assert len(rest.json()["items"]) == 1 and "continuation" not in rest.json()

    r = await client.get("sends/rp-1/report", headers={"accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.splitlines()
    assert lines[0].startswith("recipient,state,reason") and len(lines) == 4
    assert all(",failed,unknown-user," in line for line in lines[1:])
    assert_problem(await client.get("sends/rp-1/report", params={"format": "xml"}),
                   400, "bad-format")


async def test_one_report_everywhere_and_status_counts_skips_by_reason(
        client: httpx.AsyncClient, rt: Runtime) -> None:
    from proactive.reporting.reports import REPORT_COLUMNS, send_report
    from proactive.runtime import DELIVERIES_TABLE

    key, at = "one-1", "2026-12-01T10:00:00Z"
    table = rt.sdk_table(DELIVERIES_TABLE)
    for recipient, fields in {
        "user:a": {"state": "sent", "attempts": 1, "sentAt": at, "activityId": "1:x",
                   "conversationId": "a:1", "tenantId": "t-1"},
        "user:b": {"state": "skipped", "reason": "opted-out", "optedOut": "deployments",
                   "attempts": 0},
        "user:c": {"state": "failed", "reason": "unknown-user", "attempts": 0,
                   "detail": "no stored conversation for this user"},
    }.items():
        await table.upsert_entity({"PartitionKey": key, "RowKey": recipient, "key": key,
                                   "recipient": recipient, "createdAt": at, "updatedAt": at,
                                   **fields})

    status = (await client.get(f"sends/{key}")).json()
    # The sent row has no activity id here: its read state is unknown (not `unknown`,
    # the delivery state of a skipped unknown outcome).
    assert status["counts"] == {"sent": 1, "skipped": 1, "failed": 1,
                                "skipped_opted_out": 1, "failed_unknown_user": 1,
                                "read": 0, "read_unknown": 1, "acked": 0}

    # The API's pages are the report the CLI streams: the same columns, the same values.
    streamed_csv = b"".join([chunk async for chunk in send_report(rt, key, "csv")]).decode()
    csv_page = await client.get(f"sends/{key}/report", params={"format": "csv"})
    assert csv_page.text == streamed_csv
    assert csv_page.text.splitlines()[0] == ",".join(REPORT_COLUMNS)
    lines = b"".join([chunk async for chunk in send_report(rt, key, "json")]).splitlines()
    streamed = [{k: v for k, v in json.loads(line).items() if v not in (None, "")}
                for line in lines]
    assert (await client.get(f"sends/{key}/report")).json()["items"] == streamed
    assert (await client.get(f"sends/{key}/recipients")).json()["items"] == streamed
    assert streamed[1]["optedOut"] == "deployments" and "detail" in streamed[2]


async def test_reach_counts_references_per_tenant(client: httpx.AsyncClient,
                                                  rt: Runtime) -> None:
    from proactive.runtime import REFERENCES_TABLE

    table = rt.sdk_table(REFERENCES_TABLE)
    for i in range(3):
        await table.upsert_entity({"PartitionKey": f"user:{i}", "RowKey": "tenant-r",
                                   "kind": "user", "aadObjectId": f"aad-{i}",
                                   "tenantId": "tenant-r"})
    # One of them blocked the bot, one opted out of a topic.
    await table.upsert_entity({"PartitionKey": "user:1", "RowKey": "tenant-r",
                               "installState": "blocked", "blockedAt": "2026-12-01T10:00:00Z"})
    await rt.preferences.opt_out("aad-2", "deployments", via="command", tenant_id="tenant-r")
    r = await client.get("reach")
    assert r.status_code == 200, r.text
    tenants = {t["tenant"]: t["counts"] for t in r.json()["tenants"]}
    assert tenants["tenant-r"] == {"user": 3}
    who = {(e["user"], e["status"], e["topic"]) for e in r.json()["unreachable"]}
    assert who == {("aad-1", "blocked", ""), ("aad-2", "opted-out", "deployments")}


async def test_reach_with_a_group_but_no_graph_install_is_a_400(
        client: httpx.AsyncClient) -> None:
    problem = assert_problem(await client.get("reach", params={"group": "g-1"}), 400, "bad-group")
    assert "PROACTIVE_GRAPH_APP_CATALOG_ID" in problem["detail"]
