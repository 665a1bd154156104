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

G1 = "6a1f0000-0000-4000-8000-00000000e001"
U1, U9 = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000009"


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
        users, link = await graph.group_members(G1)
        assert [u.id for u in users] == ["u-1"]
        with pytest.raises(UntrustedServiceUrl):
            await graph.group_members(G1, link)  # a nextLink to another host
        # Local development: loopback is allowed, but never with the token.
        local = GraphClient(http, Tokens(), PUBLIC, base_url="http://127.0.0.1:9", local_dev=True)
        await local.user("a@contoso.com")
    assert transport.seen[0] == (
        f"https://graph.microsoft.com/v1.0/groups/{G1}/transitiveMembers/microsoft.graph.user"
        "?$select=id,accountEnabled,userType&$top=999&$count=true", "Bearer graph-token")
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
    fake.add_user(U1, "ann@contoso.com")
    fake.add_app("cat-1", "manifest-1")
    assert await client.catalog_id("manifest-1") == "cat-1"
    assert await client.catalog_id("other") is None
    found = await client.user("Ann@contoso.com")
    assert found is not None and found.id == U1
    assert await client.user("nobody@contoso.com") is None
    assert await client.installation(U1, "cat-1") is None
    assert await client.install(U1, "cat-1") is True
    assert await client.install(U1, "cat-1") is False  # 409: installed already
    installation = await client.installation(U1, "cat-1")
    assert installation is not None
    assert (await client.chat_id(U1, installation)).startswith("19:")
    with pytest.raises(Permanent) as not_in_catalog:
        await client.install(U1, "cat-unknown")
    assert not_in_catalog.value.status == 404


async def test_transient_400s_and_429s_are_retryable_with_retry_after(
        fake: FakeGraph, client: GraphClient) -> None:
    fake.add_user(U1)
    fake.add_app("cat-1", "m")
    fake.transient_400[U1] = 1
    with pytest.raises(ServiceUnavailable):
        await client.install(U1, "cat-1")
    assert await client.install(U1, "cat-1") is True
    fake.rate = 2
    await client.user(U1)
    await client.user(U1)
    with pytest.raises(Throttled) as throttled:
        await client.user(U1)
    assert throttled.value.retry_after is not None and throttled.value.retry_after >= 1


async def test_group_members_are_paged_by_next_link(fake: FakeGraph, client: GraphClient,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("proactive.teams.graph._PAGE", 100)
    members = [f"00000000-0000-4000-8000-{i:012d}" for i in range(250)]
    fake.add_group(G1, members)
    fake.page_throttle = 1  # Graph throttles between pages: each refused once
    seen, link, pages, throttled = [], "", 0, 0
    while True:
        try:
            users, link = await client.group_members(G1, link)
        except Throttled:
            throttled += 1
            continue
        seen += [u.id for u in users]
        pages += 1
        if not link:
            break
    assert seen == members
    assert pages == 3 and throttled == 2


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
        fake.add_user(U9, "zoe@contoso.com")
        found = await client.user("zoe@contoso.com")
        assert found is not None and found.id == U9
    finally:
        telemetry.disable()
    [span] = exporter.get_finished_spans()
    assert span.name == "Graph GET"
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET", "server.address": "127.0.0.1",
        "http.response.status_code": 200}


async def test_the_cast_needs_the_advanced_query_parameters_and_reads_who_is_reachable(
        fake: FakeGraph, client: GraphClient) -> None:
    import httpx as raw

    fake.add_user(U1, "ann@contoso.com")
    fake.add_user(U9, "gus@fabrikam.com", user_type="Guest")
    off = "00000000-0000-4000-8000-000000000005"
    fake.add_user(off, "off@contoso.com", enabled=False)
    device = "00000000-0000-4000-8000-0000000000d1"
    fake.add_device(device)
    fake.add_group(G1, [U1, device, U9, off])
    # The fake refuses the cast without them, as Graph does.
    async with raw.AsyncClient() as http:
        bare = await http.get(f"{fake.url}/v1.0/groups/{G1}/transitiveMembers/"
                              "microsoft.graph.user?$select=id")
    assert bare.status_code == 400
    assert bare.json()["error"]["code"] == "Request_UnsupportedQuery"
    users, link = await client.group_members(G1)
    assert link == ""
    assert [(u.id, u.enabled, u.guest) for u in users] == [
        (U1, True, False), (U9, True, True), (off, False, False)]  # no device


@pytest.mark.parametrize("upn", ["$adele@contoso.com", "o'brien@contoso.com",
                                 "a#b@contoso.com", "a%2F@contoso.com", "q?x@contoso.com"])
async def test_principal_names_are_escaped_in_the_path(fake: FakeGraph, client: GraphClient,
                                                       upn: str) -> None:
    fake.add_user(U1, upn)
    found = await client.user(upn)
    assert found is not None and found.id == U1


@pytest.mark.parametrize("bad", ["not-an-id", "../users", "a b@contoso.com", "@contoso.com",
                                 "x@", "19:abc@thread.tacv2/x"])
async def test_what_is_neither_a_guid_nor_a_upn_is_refused_before_any_call(
        fake: FakeGraph, client: GraphClient, bad: str) -> None:
    with pytest.raises(Permanent) as refused:
        await client.user(bad)
    assert refused.value.reason == "invalid-id"
    with pytest.raises(Permanent):
        await client.install(bad, "cat-1")
    with pytest.raises(Permanent):
        await client.group_members(bad)
    assert not fake.calls and not fake.refused


def test_graph_tells_a_missing_permission_from_one_users_403() -> None:
    from proactive.teams.graph import to_error

    app = to_error(403, b'{"error": {"code": "Forbidden", "message": "Missing role '
                        b'permissions on the request. API requires one of \'x\'."}}', None)
    user = to_error(403, b'{"error": {"code": "Forbidden", "message": "Failed to get '
                         b'license information for the user."}}', None)
    assert app.reason == "graph-permission" and user.reason == "forbidden"
    assert "license" in user.detail
