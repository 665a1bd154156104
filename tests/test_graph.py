"""The Graph client: its token goes to the cloud's Graph host only, and it reads
Graph's answers (through the fake Graph, which speaks them) into results or
members of proactive.errors."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest

from proactive.errors import Permanent, ServiceUnavailable, Throttled, UntrustedServiceUrl
from proactive.teams.clouds import CLOUDS, DOD, GCC_HIGH, PUBLIC
from proactive.teams.graph import GraphClient
from proactive.teams.service_urls import check_graph_url
from proactive_devtools.fake_graph import FakeGraph


class Tokens:
    async def get_token(self) -> str:
        return "graph-token"


class Recording(httpx.AsyncBaseTransport):
    """Answers every request 200 `{}` and keeps (url, Authorization header)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((str(request.url), request.headers.get("Authorization")))
        return httpx.Response(200, json={"value": [{"id": "u-1"}],
                                         "@odata.nextLink": "https://evil.example/v1.0/next"})


def test_each_cloud_has_its_graph_host() -> None:
    assert PUBLIC.graph_url == CLOUDS["gcc"].graph_url == "https://graph.microsoft.com"
    assert GCC_HIGH.graph_url == "https://graph.microsoft.us"
    assert DOD.graph_url == "https://dod-graph.microsoft.us"


@pytest.mark.parametrize("url", [
    "https://graph.microsoft.us/v1.0/users", "https://graph.microsoft.com.evil.example/v1.0",
    "http://graph.microsoft.com/v1.0/users", "https://smba.trafficmanager.net/teams/",
    "https://user@graph.microsoft.com/v1.0", "https://graph.microsoft.com:8443/v1.0",
    "http://127.0.0.1:5000/v1.0/users"])
def test_only_the_clouds_graph_host_is_allowed(url: str) -> None:
    assert check_graph_url("https://graph.microsoft.com/v1.0/users", PUBLIC, local_dev=False)
    with pytest.raises(UntrustedServiceUrl):
        check_graph_url(url, PUBLIC, local_dev=False)
    with pytest.raises(UntrustedServiceUrl):
        check_graph_url("https://graph.microsoft.com/v1.0", DOD, local_dev=False)


async def test_the_token_goes_to_graph_and_a_page_link_elsewhere_is_refused() -> None:
    transport = Recording()
    async with httpx.AsyncClient(transport=transport) as http:
        graph = GraphClient(http, Tokens(), PUBLIC)
        ids, link = await graph.group_members("g-1")
        assert ids == ["u-1"]
        with pytest.raises(UntrustedServiceUrl):
            await graph.group_members("g-1", link)  # a nextLink to another host
        # Local development: loopback is allowed, but never with the token.
        local = GraphClient(http, Tokens(), PUBLIC, base_url="http://127.0.0.1:9", local_dev=True)
        await local.user_id("a@contoso.com")
    assert transport.seen[0] == (
        "https://graph.microsoft.com/v1.0/groups/g-1/transitiveMembers/microsoft.graph.user"
        "?$select=id&$top=999", "Bearer graph-token")
    assert transport.seen[1][1] is None and transport.seen[1][0].startswith("http://127.0.0.1:9/")
    assert len(transport.seen) == 2  # nothing went to evil.example


@pytest.fixture
async def fake() -> AsyncIterator[FakeGraph]:
    async with FakeGraph(tenant="t-1") as graph:
        yield graph


@pytest.fixture
async def client(fake: FakeGraph) -> AsyncIterator[GraphClient]:
    async with httpx.AsyncClient() as http:
        yield GraphClient(http, None, dataclasses.replace(PUBLIC), base_url=fake.url,
                          local_dev=True)


async def test_install_read_the_installation_and_its_chat(fake: FakeGraph,
                                                          client: GraphClient) -> None:
    fake.add_user("u-1", "ann@contoso.com")
    fake.add_app("cat-1", "manifest-1")
    assert await client.catalog_id("manifest-1") == "cat-1"
    assert await client.catalog_id("other") is None
    assert await client.user_id("Ann@contoso.com") == "u-1"
    assert await client.user_id("nobody@contoso.com") is None
    assert await client.installation("u-1", "cat-1") is None
    assert await client.install("u-1", "cat-1") is True
    assert await client.install("u-1", "cat-1") is False  # 409: installed already
    installation = await client.installation("u-1", "cat-1")
    assert installation is not None
    assert (await client.chat_id("u-1", installation)).startswith("19:")
    with pytest.raises(Permanent) as not_in_catalog:
        await client.install("u-1", "cat-unknown")
    assert not_in_catalog.value.status == 404


async def test_transient_400s_and_429s_are_retryable_with_retry_after(
        fake: FakeGraph, client: GraphClient) -> None:
    fake.add_user("u-1")
    fake.add_app("cat-1", "m")
    fake.transient_400["u-1"] = 1
    with pytest.raises(ServiceUnavailable):
        await client.install("u-1", "cat-1")
    assert await client.install("u-1", "cat-1") is True
    fake.rate = 2
    await client.user_id("u-1")
    await client.user_id("u-1")
    with pytest.raises(Throttled) as throttled:
        await client.user_id("u-1")
    assert throttled.value.retry_after is not None and throttled.value.retry_after >= 1


async def test_group_members_are_paged_by_next_link(fake: FakeGraph, client: GraphClient,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("proactive.teams.graph._PAGE", 100)
    fake.add_group("g-1", [f"u-{i}" for i in range(250)])
    seen, link, pages = [], "", 0
    while True:
        ids, link = await client.group_members("g-1", link)
        seen += ids
        pages += 1
        if not link:
            break
    assert seen == [f"u-{i}" for i in range(250)]
    assert pages == 3


@pytest.mark.parametrize(("env", "problem"), [
    ({"PROACTIVE_GRAPH_APP_CATALOG_ID": "a", "PROACTIVE_GRAPH_APP_MANIFEST_ID": "b"},
     "not both"),
    ({"PROACTIVE_GRAPH_APP_CATALOG_ID": "a'b"}, "PROACTIVE_GRAPH_APP_CATALOG_ID"),
    ({"PROACTIVE_GRAPH_RPS": "31"}, "PROACTIVE_GRAPH_RPS"),
])
def test_install_settings_are_validated_in_one_place(env: dict[str, str], problem: str) -> None:
    from proactive.config import load_settings
    from proactive.errors import ConfigError

    base = {"PROACTIVE_LOCAL_DEV": "true"}
    assert load_settings({**base, "PROACTIVE_GRAPH_APP_MANIFEST_ID": "m-1"}).graph_install
    with pytest.raises(ConfigError, match=problem):
        load_settings({**base, **env})


async def test_graph_calls_are_traced_with_method_host_and_status_only(
        fake: FakeGraph, client: GraphClient) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from proactive import telemetry

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.enable(provider)
    try:
        fake.add_user("u-9", "zoe@contoso.com")
        assert await client.user_id("zoe@contoso.com") == "u-9"
    finally:
        telemetry.disable()
    [span] = exporter.get_finished_spans()
    assert span.name == "Graph GET"
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET", "server.address": "127.0.0.1",
        "http.response.status_code": 200}
