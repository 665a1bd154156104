"""POST /api/messages handling (local development mode: no token, loopback
serviceUrls only), against real Table and Queue Storage."""

from __future__ import annotations

import json

from proactive.receiving.endpoint import handle_activity
from proactive.runtime import Runtime
from tests.activities_data import TENANT, USER_AAD, activity, install

LOOPBACK = "http://127.0.0.1:9/connector/"


def body(data: object) -> bytes:
    return json.dumps(data).encode()


async def queued(rt: Runtime) -> list[dict]:
    messages = await rt.outbox.queue.peek_messages(max_messages=32)
    return [json.loads(m.content) for m in messages]


async def test_install_stores_reference_and_queues_one_welcome(runtime: Runtime) -> None:
    event = install(service_url=LOOPBACK)
    reply = await handle_activity(runtime, {}, body(event))
    assert reply.status == 200
    ref = await runtime.references.user(USER_AAD)
    assert ref is not None and ref.service_url == LOOPBACK
    messages = await queued(runtime)
    assert len(messages) == 1
    welcome = messages[0]
    assert welcome["op"] == "send"
    assert welcome["to"] == {"user": USER_AAD, "tenant": TENANT}
    assert welcome["card"]["type"] == "AdaptiveCard"
    # Teams redelivers a slow answer: the same activity again changes nothing.
    again = await handle_activity(runtime, {}, body(event))
    assert again.status == 200
    assert len(await queued(runtime)) == 1


async def test_malformed_activities_get_400_and_store_nothing(runtime: Runtime) -> None:
    bad = [b"not json", b"[]", body({"type": "message", "serviceUrl": LOOPBACK}),
           body({**activity(service_url=LOOPBACK), "conversation": None})]
    for raw in bad:
        reply = await handle_activity(runtime, {}, raw)
        assert reply.status == 400, raw
        assert reply.body
    assert await runtime.references.user(USER_AAD) is None


async def test_local_dev_accepts_no_token_only_from_loopback(runtime: Runtime) -> None:
    remote = install(service_url="https://smba.trafficmanager.net/emea/")
    reply = await handle_activity(runtime, {}, body(remote))
    assert reply.status == 401
    assert reply.body == "unauthorized"
    assert await runtime.references.user(USER_AAD) is None
    assert await queued(runtime) == []


async def test_unknown_activity_types_get_200(runtime: Runtime) -> None:
    reply = await handle_activity(runtime, {}, body(activity("somethingNew",
                                                             service_url=LOOPBACK)))
    assert reply.status == 200
