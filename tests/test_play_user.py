"""The dev tool that plays the Teams user (proactive_devtools/user.py): a read
receipt and a button press posted over real HTTP to an app that authenticates
every activity (local development off), signed by the fake AAD like the Bot
Connector signs them; real Table Storage (Azurite)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from proactive.config import Settings
from proactive.receiving.activities import parse_activity
from proactive.receiving.endpoint import handle_activity
from proactive.runtime import Runtime
from proactive.storage import tables
from proactive.storage.reference_keys import conv_pk
from proactive_devtools import user as play
from proactive_devtools.fake_aad import FakeAAD
from proactive_devtools.provision import provision
from tests.activities_data import BOT, SERVICE_URL, TENANT, USER_AAD, install

APP_ID = BOT.removeprefix("28:")
CHAT = "a:1personal-conversation"


@pytest.fixture
async def endpoint(settings: Settings, aad: FakeAAD) -> AsyncIterator[tuple[str, Runtime]]:
    checked = dataclasses.replace(settings, local_dev=False, app_id=APP_ID,
                                  app_tenant_id=TENANT, app_password="not-used",
                                  cloud_override=aad.cloud_override())
    await provision(checked)
    rt = await Runtime.create(checked)

    async def messages(request: web.Request) -> web.Response:
        reply = await handle_activity(rt, dict(request.headers), await request.read())
        return web.Response(status=reply.status, text=reply.body,
                            content_type=reply.content_type)

    app = web.Application()
    app.router.add_post("/api/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        await rt.references.record(parse_activity(install()))
        yield f"http://127.0.0.1:{port}/api/messages", rt
    finally:
        await runner.cleanup()
        await rt.close()


async def test_a_signed_receipt_and_press_are_taken_and_an_unsigned_one_is_not(
        endpoint: tuple[str, Runtime], aad: FakeAAD) -> None:
    url, rt = endpoint
    megan = play.User(aad_id=USER_AAD, tenant_id=TENANT, conversation_id=CHAT, bot_id=BOT,
                      service_url=SERVICE_URL, timezone="Europe/Paris")

    assert await play.post(url, megan.read_receipt("1700000000000")) == (401, "unauthorized")
    row = await tables.read(rt.references.table, conv_pk(CHAT), tables.safe_key(TENANT))
    assert row is not None and "lastReadMessageId" not in row[0]

    status, _ = await play.post(url, megan.read_receipt("1700000000000"), aad=aad, app_id=APP_ID)
    assert status == 200
    row = await tables.read(rt.references.table, conv_pk(CHAT), tables.safe_key(TENANT))
    assert row is not None and row[0]["lastReadMessageId"] == "1700000000000"

    # A press for a key never sent to her: answered (an error card), nothing recorded.
    status, body = await play.post(url, megan.ack_press("never-sent"), aad=aad, app_id=APP_ID)
    answer = json.loads(body)
    assert status == 200 and answer["statusCode"] == 200
    assert answer["value"]["body"][0]["text"].startswith("This acknowledgement could not")


def test_the_command_says_what_is_missing_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert play.main(["read", "--playground-port", "9"]) == 2
    assert play.main(["read", "--message", "1", "--playground-port", "9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no running Playground" in err[1]
