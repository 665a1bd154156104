"""Local development can't be driven by a web page (issue 16, §5), replayed
from outside: the function app in the built-in host as a child process
(`python -m proactive host`), local development on, real HTTP on loopback,
against Azurite."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from proactive.receiving.activities import MAX_ACTIVITY_BODY, parse_activity
from proactive.runtime import Runtime
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from proactive_devtools.processes import Azurite
from tests.activities_data import install
from tests.api_support import ApiApp, api_app
from tests.polling import eventually


@pytest.fixture(scope="module")
def app(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiApp]:
    with api_app(azurite, tmp_path_factory.mktemp("localdev")) as running:
        yield running


def tokenless_install() -> tuple[str, dict[str, Any]]:
    """A tokenless install from a loopback serviceUrl, its user's AAD id."""
    aad = str(uuid.uuid4())
    return aad, install(aad=aad, service_url="http://127.0.0.1:9/")


async def post(app: ApiApp, body: dict[str, Any], **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=20) as client:
        return await client.post(app.base + "messages", content=json.dumps(body).encode(),
                                 headers=headers)


@pytest.mark.parametrize("headers, status", [
    ({"Content-Type": "text/plain"}, 415),  # a page's form or fetch() without preflight
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ({}, 415),
    ({"Content-Type": "application/json", "Origin": "https://evil.example"}, 403),
    ({"Content-Type": "application/json", "Origin": "null"}, 403),
    ({"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, 403),
    ({"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"}, 403),
])
async def test_a_browser_request_is_refused_and_records_nothing(
        app: ApiApp, rt: Runtime, headers: dict[str, str], status: int) -> None:
    aad, activity = tokenless_install()
    r = await post(app, activity, **headers)
    assert r.status_code == status, r.text
    assert await rt.references.user(aad) is None


@pytest.mark.parametrize("headers", [
    {"Content-Type": "application/json; charset=utf-8"},  # as the Bot Framework sends it
    {"Content-Type": "application/json", "Sec-Fetch-Site": "none"},  # typed by the user
])
async def test_a_tool_posting_json_is_still_served(app: ApiApp, rt: Runtime,
                                                   headers: dict[str, str]) -> None:
    aad, activity = tokenless_install()
    r = await post(app, activity, **headers)
    assert r.status_code == 200, r.text
    assert await rt.references.user(aad) is not None


async def test_a_body_over_the_limit_is_refused_by_its_length_unread(app: ApiApp) -> None:
    port = int(app.base.split(":")[2].split("/")[0])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        # 60 MB announced, not a byte sent: the answer can only come from the length.
        writer.write(b"POST /api/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 62914560\r\n\r\n")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    assert status_line.split()[1] == b"413", status_line
    # Just over the app's own limit is refused too, and at the limit it is read.
    async with httpx.AsyncClient(timeout=20) as client:
        over = await client.post(app.base + "messages", content=b" " * (MAX_ACTIVITY_BODY + 1),
                                 headers={"Content-Type": "application/json"})
        assert over.status_code == 413


async def test_the_access_log_keeps_no_function_key(app: ApiApp) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        r = await client.get(f"{app.base}sends/some-key?code={app.key}")
    assert r.status_code == 404
    # The access line is written once the answer has gone: wait for it.
    log = await eventually(lambda: (text := app.log.read_text()) and
                           "/api/sends/some-key" in text and text, what="the access line")
    assert app.key not in log


async def test_the_worker_calls_only_the_configured_local_connector(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    """A reference whose serviceUrl is another loopback port (a service on the
    developer's machine) gets no request: untrusted-service-url, recorded."""
    async with ConnectorEmulator() as victim:  # any loopback port but the configured one
        aad_victim, aad_ok = str(uuid.uuid4()), str(uuid.uuid4())
        await runtime.references.record(parse_activity(install(
            aad=aad_victim, conversation="a:victim", service_url=victim.url)))
        await runtime.references.record(parse_activity(install(
            aad=aad_ok, conversation="a:ok", service_url=emulator.url)))
        for key, aad in (("to-victim", aad_victim), ("to-emulator", aad_ok)):
            message = json.dumps({"version": 1, "op": "send", "key": key,
                                  "to": {"user": aad}, "text": "hi"})
            await process(runtime, message, message_id=key)
        assert victim.counters["requests"] == 0
    assert emulator.counters["delivered"] == 1
    [row] = [r async for r in runtime.deliveries.table.query_entities(
        "PartitionKey eq 'to-victim'")]
    assert (row["state"], row["reason"]) == ("failed", "untrusted-service-url")
