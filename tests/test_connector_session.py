"""The Connector calls over the Runtime's own aiohttp session (issue 12: a
third of httpx's CPU per call): the same answers, errors and guarantees as
through httpx. Real HTTP on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web

from proactive.config import Settings
from proactive.errors import Permanent, Reason, ServiceUnavailable, Throttled
from proactive.runtime import Runtime
from proactive.teams import clouds
from proactive.teams.connector import ConnectorClient


class Server:
    """A loopback stand-in for a Connector host, recording what reached it."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.answer: Any = web.json_response({"id": "1"})
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.headers),
                              await request.read()))
        answer = self.answer
        if callable(answer):
            answer = await answer()
        return answer


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server]]:
    made, runners = [], []
    for _ in range(2):
        server = Server()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", server.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        server.url = f"http://127.0.0.1:{port}/"
        made.append(server)
        runners.append(runner)
    yield made[0], made[1]
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def client(servers: tuple[Server, Server]) -> AsyncIterator[ConnectorClient]:
    async with httpx.AsyncClient() as http, aiohttp.ClientSession() as session:
        yield ConnectorClient(http, None, clouds.PUBLIC, local_dev=True, timeout=0.3,
                              session=session, local_connectors=[s.url for s in servers])


async def test_a_send_posts_the_activity_and_returns_its_id(
        client: ConnectorClient, servers: tuple[Server, Server]) -> None:
    teams, _ = servers
    teams.answer = web.json_response({"id": "1700000000000"})
    assert await client.send(teams.url, "a:1 b", {"type": "message", "text": "hi"}) \
        == "1700000000000"
    method, path, headers, body = teams.requests[0]
    assert (method, path) == ("POST", "/v3/conversations/a:1 b/activities")
    assert headers["Content-Type"] == "application/json"
    assert body == b'{"type":"message","text":"hi"}'
    assert "Authorization" not in headers  # a loopback stand-in never gets a token


async def test_a_redirect_is_not_followed(client: ConnectorClient,
                                          servers: tuple[Server, Server]) -> None:
    teams, elsewhere = servers
    teams.answer = web.Response(status=307, headers={"Location": elsewhere.url + "steal"})
    with pytest.raises(Permanent):
        await client.send(teams.url, "a:1", {"type": "message"})
    assert not elsewhere.requests


async def test_answers_become_the_same_errors(client: ConnectorClient,
                                             servers: tuple[Server, Server]) -> None:
    teams, _ = servers
    teams.answer = web.json_response({"error": {"code": "Throttled"}}, status=429,
                                     headers={"Retry-After": "3"})
    with pytest.raises(Throttled) as throttled:
        await client.send(teams.url, "a:1", {"type": "message"})
    assert throttled.value.retry_after == 3.0
    teams.answer = web.json_response({"error": {"code": "ConversationBlockedByUser"}},
                                     status=403)
    with pytest.raises(Exception) as blocked:
        await client.send(teams.url, "a:1", {"type": "message"})
    assert getattr(blocked.value, "reason", None) == Reason.BLOCKED


async def test_no_answer_in_time_and_no_connection_are_transient(
        client: ConnectorClient, servers: tuple[Server, Server]) -> None:
    teams, _ = servers

    async def late() -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    teams.answer = late
    with pytest.raises(ServiceUnavailable) as timeout:
        await client.send(teams.url, "a:1", {"type": "message"})
    assert timeout.value.reason == Reason.TIMEOUT
    client.local_connectors += ("http://127.0.0.1:9",)  # configured, and nothing listens
    with pytest.raises(ServiceUnavailable) as refused:
        await client.send("http://127.0.0.1:9/", "a:1", {"type": "message"})
    assert refused.value.reason == Reason.CONNECTION_ERROR


async def test_the_runtime_sends_over_its_own_session_unless_given_a_client(
        settings: Settings) -> None:
    rt = await Runtime.create(settings)
    try:
        assert rt.connector.session is rt.connector_http is not None
    finally:
        await rt.close()
    assert rt.connector_http.closed
    async with httpx.AsyncClient() as http:
        given = await Runtime.create(settings, http=http)
        try:
            assert given.connector.session is None  # the caller's client carries the calls
        finally:
            await given.close()
