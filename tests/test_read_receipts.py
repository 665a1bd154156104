"""Read receipts (issue 21, README "Read, acknowledged, reminded"): Teams'
`application/vnd.microsoft.readReceipt` event through POST /api/messages,
against real Table Storage (Azurite) and the Connector emulator."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from proactive.api.sends import page_of_recipients, status
from proactive.cli.storage import _status as cli_status
from proactive.cli.storage import send_state
from proactive.receiving.activities import parse_activity
from proactive.receiving.endpoint import handle_activity
from proactive.reporting import reports
from proactive.reporting.reports import send_report
from proactive.runtime import Runtime
from proactive.storage.reads import MAX_MARKS, LastRead, Mark, ReadState, order_of
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from tests.activities_data import TENANT, activity, install

USERS = [f"6f3a8c1e-0000-4000-8000-{n:012d}" for n in range(200)]
GROUP = "19:group-chat@thread.v2"


def receipt(aad: str, conversation: str, last_read: str, *, service_url: str,
            tenant: str = TENANT) -> bytes:
    # The shape of Microsoft Learn's "Read receipts" sample (Messages in bot
    # conversations): an event named application/vnd.microsoft.readReceipt,
    # value.lastReadMessageId, in a personal conversation.
    body = activity("event", aad=aad, conversation=conversation, service_url=service_url,
                    name="application/vnd.microsoft.readReceipt",
                    value={"lastReadMessageId": last_read})
    body["conversation"]["tenantId"] = tenant
    body["channelData"] = {"tenant": {"id": tenant}}
    return json.dumps(body).encode()


async def drain(rt: Runtime) -> None:
    while messages := [m async for m in rt.outbox.queue.receive_messages(max_messages=32)]:
        for message in messages:
            await process(rt, message.content, message_id=message.id)
            await rt.outbox.queue.delete_message(message)


async def rows_of(chunks: AsyncIterator[bytes]) -> list[dict[str, str]]:
    text = b"".join([chunk async for chunk in chunks]).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_teams_message_ids_order_as_numbers_and_others_do_not_compare() -> None:
    # ReadReceiptInfo.IsMessageRead converts both ids to numbers: "read" when
    # the message's id <= lastReadMessageId.
    assert order_of("1718900000000") == 1718900000000
    assert order_of("999") == 999 and order_of("1000") == 1000  # as numbers, not as text
    for bad in ("", "a:1", "1.5", "-3", "1e9", "١٢٣", "9" * 40):
        assert order_of(bad) is None
    chat = LastRead("personal", "u", (Mark("1000", "t1"), Mark("2000", "t2")))
    assert chat.state_of("999") == (ReadState.READ, "t1", False)
    assert chat.state_of("1000") == (ReadState.READ, "t1", False)
    assert chat.state_of("1500") == (ReadState.READ, "t2", False)
    assert chat.state_of("2001") == (ReadState.UNREAD, "", False)
    assert chat.state_of("not-a-number") == (ReadState.UNKNOWN, "", False)
    assert LastRead("personal", "u").state_of("5") == (ReadState.UNREAD, "", False)
    assert LastRead("groupChat").state_of("5") == (ReadState.NOT_AVAILABLE, "", False)
    full = LastRead("personal", "u", tuple(Mark(str(n), f"t{n}")
                                           for n in range(100, 100 + MAX_MARKS)))
    assert full.state_of("1") == (ReadState.READ, "t100", True)  # older marks were dropped


async def test_receipts_mark_exactly_what_they_cover_and_nothing_of_anyone_else(
        runtime: Runtime, emulator: ConnectorEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    url = emulator.url
    for n, aad in enumerate(USERS):
        await runtime.references.record(parse_activity(install(
            service_url=url, aad=aad, conversation=f"a:1conv{n}")))
    await runtime.references.record(parse_activity(activity(
        "conversationUpdate", scope="groupChat", conversation=GROUP, service_url=url,
        membersAdded=[{"id": "28:11111111-2222-3333-4444-555555555555"}])))
    await process(runtime, json.dumps({"version": 1, "op": "send", "key": "r21",
                                       "to": {"users": USERS}, "text": "hi"}), message_id="m")
    await process(runtime, json.dumps({"version": 1, "op": "send", "key": "r21",
                                       "to": {"conversation": GROUP}, "text": "hi"}),
                  message_id="g")
    await drain(runtime)
    sent = {d.conversation_id: d.activity_id for d in emulator.deliveries}
    assert len(sent) == 201

    async def post(body: bytes) -> None:
        assert (await handle_activity(runtime, {}, body)).status == 200

    # Users 0-59 read the message; 60-79 only read up to the message before it.
    for n in range(80):
        message = int(sent[f"a:1conv{n}"])
        last = message if n < 60 else message - 1
        await post(receipt(USERS[n], f"a:1conv{n}", str(last), service_url=url))
    # Forged: user 100 says they read user 80's chat; another tenant names user 81's.
    await post(receipt(USERS[100], "a:1conv80", sent["a:1conv80"], service_url=url))
    await post(receipt(USERS[81], "a:1conv81", sent["a:1conv81"], service_url=url,
                       tenant="11111111-0000-0000-0000-000000000000"))
    # A receipt from a group chat: Teams sends none, and one is not taken.
    await post(receipt(USERS[82], GROUP, sent[GROUP], service_url=url))
    # A redelivered receipt (same activity id and all) and a late, older one change nothing.
    again = receipt(USERS[0], "a:1conv0", sent["a:1conv0"], service_url=url)
    await post(again)
    await post(again)
    await post(receipt(USERS[0], "a:1conv0", "1", service_url=url))

    rows = {row["conversationId"]: row
            for row in await rows_of(send_report(runtime, "r21", "csv"))}
    assert Counter(row["read"] for row in rows.values()) == {
        "read": 60, "unread": 140, "not-available": 1}
    assert all(rows[f"a:1conv{n}"]["readAt"] for n in range(60))
    assert not any(rows[f"a:1conv{n}"]["readAt"] for n in range(60, 200))
    assert rows[GROUP]["read"] == "not-available"
    view = json.loads((await status(runtime, "r21", base_url="http://x/")).body)
    assert view["counts"]["read"] == 60 and view["counts"]["unread"] == 140
    assert view["counts"]["not-available"] == 1
    page, _ = await page_of_recipients(runtime, "r21", limit="1000", continuation=None)
    assert sum(1 for item in page if item.get("read") == "read" and item.get("readAt")) == 60
    # python -m proactive status: the delivery rows, each with its read state.
    shown = await cli_status(runtime.settings, None, "r21")
    assert Counter(row.get("read") for row in shown) == {
        "read": 60, "unread": 140, "not-available": 1}
    assert all(row["readAt"] for row in shown if row["read"] == "read")
    progress = await send_state(runtime.settings, None, "r21")
    assert progress is not None and progress["counts"]["read"] == 60  # progress shows it too
    # Past the cap, status stays a quick read and points at the report instead.
    monkeypatch.setattr(reports, "MAX_ENGAGEMENT_ROWS", 150)
    view = json.loads((await status(runtime, "r21", base_url="http://x/")).body)
    assert "read" not in view["counts"] and "report" in view["engagement"]
