"""Security at the edges, end to end: the real endpoint and outbox worker on a
production-mode Runtime (local development off, an app id and a client secret),
real Azurite, the fake Azure AD (OpenID/JWKS + token endpoint, real MSAL) and
the Connector emulator served over TLS on an allow-listed `127.0.0.1:<port>`.

* Forged tokens are refused with 401/403 and the body "unauthorized", and
  nothing is written (tables, queues).
* The bot's token goes to allow-listed Connector hosts only: every untrusted
  serviceUrl fails the send with `untrusted-service-url`, without retry and
  without any HTTP request. The Connector calls go over production's own
  aiohttp session (`proactive.runtime.connector_session`), on a connection pool
  that records every request and refuses anything but loopback (so no test can
  reach the network); the app's httpx client (signing keys, Graph) records into
  the same list under the same rule.
* Secrets (client secret, the bot's access token, inbound JWTs) never show in
  logs (every logger, DEBUG), storage, queue messages, HTTP answers or what
  the Connector received (apart from its Authorization header).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import ipaddress
import json
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proactive.config import Settings
from proactive.contract import Content, Op, OutboxMessage, Target
from proactive.delivering.outcomes import Action, Outcome
from proactive.receiving.activities import parse_activity
from proactive.receiving.endpoint import Reply, handle_activity
from proactive.runtime import Runtime, connector_session
from proactive.storage import deliveries as d
from proactive.storage.queues import dumps, encode
from proactive.storage.tables import safe_key
from proactive.teams.credentials import build_token_provider
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from proactive_devtools.fake_aad import FakeAAD, LoopbackHttpClient, generate_key
from proactive_devtools.provision import provision
from tests.activities_data import (
    BOT,
    SERVICE_URL,
    TENANT,
    USER_AAD,
    activity,
    install,
    team_install,
)

APP_ID = BOT.removeprefix("28:")
OTHER_TENANT = "0badc0de-0000-4000-8000-00000000beef"
SECRET = f"S3cr3t-{uuid.uuid4()}"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


# -- TLS for the emulator: a self-signed certificate made at test time ----------------


@dataclasses.dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext  # trusts exactly that certificate


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "proactive test connector")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    folder: Path = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert_pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode("ascii"))
    return Tls(server, client)


# -- a transport that records every request the app makes ---------------------------


@dataclasses.dataclass(frozen=True)
class Sent:
    method: str
    url: httpx.URL


class RecordingTransport(httpx.AsyncBaseTransport):
    """Under the app's own httpx client: records every request, and lets only
    loopback ones through (the rest fail as a connection error, recorded).
    `pool()` makes the same for the Connector's aiohttp session."""

    def __init__(self, verify: ssl.SSLContext) -> None:
        self.requests: list[Sent] = []
        self.verify = verify
        self._inner = httpx.AsyncHTTPTransport(verify=verify)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(Sent(request.method, request.url))
        if request.url.host not in LOOPBACK_HOSTS:
            raise httpx.ConnectError(f"test transport: {request.url.host} is not loopback",
                                     request=request)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def pool(self) -> aiohttp.TCPConnector:
        return RecordingPool(self)

    def since(self, mark: int) -> list[str]:
        return [f"{r.method} {r.url}" for r in self.requests[mark:]]


class RecordingPool(aiohttp.TCPConnector):
    """The Connector session's connection pool, as production's (64 connections)
    but trusting the test's certificate: aiohttp asks it for a connection on
    every request, so it records each one and refuses any but loopback (as a
    connection error, which the app sees as it would a real one)."""

    def __init__(self, recorder: RecordingTransport) -> None:
        super().__init__(limit=64, ssl=recorder.verify)
        self.recorder = recorder

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        self.recorder.requests.append(Sent(req.method, httpx.URL(str(req.url))))
        if req.url.host not in LOOPBACK_HOSTS:
            raise aiohttp.ClientConnectionError(f"test pool: {req.url.host} is not loopback")
        return await super().connect(req, traces, timeout)


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture
async def aad() -> AsyncIterator[FakeAAD]:
    async with FakeAAD() as server:
        server.add_key("key-1")
        server.token_prefix = f"bot-token-{uuid.uuid4().hex}-"
        yield server


@pytest.fixture
async def connector(tls: Tls) -> AsyncIterator[ConnectorEmulator]:
    """The Connector emulator over https on 127.0.0.1 (allow-listed by the override)."""
    emulator = ConnectorEmulator()
    await emulator.start(ssl_context=tls.server)
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
async def plain() -> AsyncIterator[ConnectorEmulator]:
    """A second emulator over plain http on loopback (local development's stand-in)."""
    async with ConnectorEmulator() as emulator:
        yield emulator


@pytest.fixture
def transport(tls: Tls) -> RecordingTransport:
    return RecordingTransport(tls.client)


def host_port(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.host}:{parsed.port}"


def production_settings(base: Settings, aad: FakeAAD, connector: ConnectorEmulator,
                        **changes: Any) -> Settings:
    """Local development off, an app id and secret, the cloud pointed at the fake
    AD, the TLS emulator's `127.0.0.1:<port>` added to the Connector hosts."""
    return dataclasses.replace(
        base,
        local_dev=False,
        app_id=APP_ID,
        app_tenant_id=TENANT,
        app_password=SECRET,
        cloud_override=aad.cloud_override(add_connector_hosts=[host_port(connector.url)]),
        **changes,
    )


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings, aad: FakeAAD, transport: RecordingTransport,
                       ) -> AsyncIterator[Runtime]:
    """A Runtime on the recording transport (the Connector calls over production's
    aiohttp session) whose bot token comes from the fake AD's token endpoint
    through the real MSAL client (client secret)."""
    await provision(settings)
    rt = await Runtime.create(settings, http=httpx.AsyncClient(transport=transport),
                              connector_http=connector_session(transport.pool()))
    assert rt.connector.session is rt.connector_http is not None  # production's path
    msal_http: LoopbackHttpClient | None = None
    try:
        if settings.app_id:
            aad.register_client(APP_ID, scope=rt.cloud.token_scope, secret=SECRET)
            msal_http = aad.msal_http_client()
            rt.connector.tokens = build_token_provider(
                dataclasses.replace(settings, app_password=SECRET, app_tenant_id=TENANT), rt.cloud,
                http_client=msal_http)
        yield rt
    finally:
        await rt.close()
        if msal_http is not None:
            msal_http.close()


async def bot_token_for(rt: Runtime, connector: ConnectorEmulator) -> str:
    """The bot's token (cached by the provider); the emulator then refuses any other."""
    assert rt.connector.tokens is not None
    token = await rt.connector.tokens.get_token()
    connector.configure(expected_token=token)
    return token


@pytest.fixture
async def rt(settings: Settings, aad: FakeAAD, connector: ConnectorEmulator,
             transport: RecordingTransport) -> AsyncIterator[Runtime]:
    async with open_runtime(production_settings(settings, aad, connector), aad, transport) as r:
        yield r


# -- helpers -------------------------------------------------------------------------


def token_for(aad: FakeAAD, service_url: str = SERVICE_URL, **overrides: Any) -> str:
    return aad.mint(aad.claims(app_id=APP_ID, service_url=service_url, **overrides))


async def post(rt: Runtime, body: dict[str, Any] | bytes, token: str | None = None,
               headers: dict[str, str] | None = None) -> Reply:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await handle_activity(rt, sent, raw)


async def stored(rt: Runtime) -> dict[str, list[Any]]:
    """Every entity of every table of this test, and every visible queue message."""
    found: dict[str, list[Any]] = {}
    prefix = rt.settings.table_prefix
    async for table in rt.table_service.list_tables():
        if table.name.startswith(prefix):
            client = rt.table_service.get_table_client(table.name)
            found[table.name] = [dict(e) async for e in client.list_entities()]
    for name in (rt.settings.outbox_queue, rt.settings.poison_queue):
        queue = rt.queue_service.get_queue_client(name)
        found[name] = [m.content for m in await queue.peek_messages(max_messages=32)]
    return found


async def queue_counts(rt: Runtime) -> tuple[int, int]:
    """(outbox, poison) message counts, including invisible (delayed) messages."""
    counts = []
    for client in (rt.outbox.queue, rt.outbox.poison_queue):
        props = await client.get_queue_properties()
        counts.append(int(props.approximate_message_count or 0))
    return counts[0], counts[1]


async def assert_nothing_written(rt: Runtime) -> None:
    assert {name: rows for name, rows in (await stored(rt)).items() if rows} == {}
    assert await queue_counts(rt) == (0, 0)


async def take_queued(rt: Runtime) -> list[tuple[str, str]]:
    """Receive and delete the visible outbox messages: (id, content)."""
    taken = []
    async for message in rt.outbox.queue.receive_messages(max_messages=32):
        taken.append((str(message.id), str(message.content)))
        await rt.outbox.queue.delete_message(message)
    return taken


def send_message(key: str, to: dict[str, Any], text: str = "Build **42** is green") -> str:
    return json.dumps({"version": 1, "op": "send", "key": key, "to": to, "text": text})


async def delivery(rt: Runtime, key: str, recipient: str) -> dict[str, Any]:
    return dict(await rt.deliveries.table.get_entity(safe_key(key), safe_key(recipient)))


def personal(aad_id: str, service_url: str, tenant: str = TENANT) -> dict[str, Any]:
    """A personal install by `aad_id` (own conversation), in `tenant`."""
    body = install(service_url=service_url, aad=aad_id, conversation=f"a:1conv-{aad_id}")
    body["conversation"]["tenantId"] = tenant
    body["channelData"] = {"tenant": {"id": tenant}}
    return body


# == 1. Every activity is authenticated ================================================

Forgery = Callable[[FakeAAD], "str | None"]


def _bearer(token: str) -> str:
    return f"Bearer {token}"


# Each forgery, the status, and the check that must refuse it (its logged reason):
# were that check gone, the forgery would get through (or another check would
# refuse it, and the test would say so).
FORGERIES: dict[str, tuple[Forgery, int, str]] = {
    "no header": (lambda aad: None, 401, ""),  # refused before any check: see below
    "empty header": (lambda aad: "", 401, ""),
    "wrong scheme": (lambda aad: f"Basic {token_for(aad)}", 401, "scheme is not Bearer"),
    "no scheme": (lambda aad: token_for(aad), 401, "scheme is not Bearer"),
    "malformed": (lambda aad: "Bearer not-a.jwt", 401, "not a compact JWS"),
    "not a JWS at all": (lambda aad: "Bearer {\"alg\":\"none\"}", 401, "not a compact JWS"),
    "alg none": (lambda aad: _bearer(aad.mint(
        aad.claims(app_id=APP_ID, service_url=SERVICE_URL), alg="none")), 401,
        "algorithm is not RS256"),
    "HS256 signed with the public key": (lambda aad: _bearer(aad.mint(
        aad.claims(app_id=APP_ID, service_url=SERVICE_URL), alg="HS256",
        key=aad.keys["key-1"].public_pem(), kid="key-1")), 401, "algorithm is not RS256"),
    "unknown key": (lambda aad: _bearer(aad.mint(
        aad.claims(app_id=APP_ID, service_url=SERVICE_URL), key=generate_key("attacker"))), 401,
        "signed with an unknown key"),
    "known kid, wrong key": (lambda aad: _bearer(aad.mint(
        aad.claims(app_id=APP_ID, service_url=SERVICE_URL), key=generate_key("key-1"))), 401,
        "signature is invalid"),
    "wrong issuer": (lambda aad: _bearer(token_for(aad, iss="https://evil.example")), 401,
                     "issuer is not the cloud's"),
    "wrong audience": (lambda aad: _bearer(token_for(aad, aud="another-bot")), 401,
                       "audience is not this bot"),
    "expired": (lambda aad: _bearer(token_for(
        aad, exp=int(time.time()) - 3600, nbf=int(time.time()) - 7200)), 401, "expired"),
    "not valid yet": (lambda aad: _bearer(token_for(aad, nbf=int(time.time()) + 3600)), 401,
                      "not valid yet"),
    "no serviceurl claim": (lambda aad: _bearer(token_for(aad, serviceurl=None)), 401,
                            "no serviceurl claim"),
    "serviceurl mismatch": (lambda aad: _bearer(
        token_for(aad, service_url="https://evil.example/")), 401,
        "serviceurl claim does not match"),
    "missing endorsement": (lambda aad: _bearer(aad.mint(
        aad.claims(app_id=APP_ID, service_url=SERVICE_URL),
        key=aad.add_key("webchat-only", endorsements=["webchat"]))), 403,
        "not endorsed for the activity's channel"),
    "huge header": (lambda aad: _bearer(token_for(aad, padding="x" * 100_000)), 401,
                    "header too large"),
}


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "proactive.receiving.endpoint" and "refused" in r.getMessage()]


@pytest.mark.parametrize("case", list(FORGERIES))
async def test_forged_tokens_are_refused_and_nothing_is_written(
    rt: Runtime, aad: FakeAAD, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    forge, status, reason = FORGERIES[case]
    authorization = forge(aad)
    headers = {} if authorization is None else {"Authorization": authorization}
    # An install: were it accepted, it would store references and queue a welcome.
    with caplog.at_level(logging.DEBUG):
        reply = await handle_activity(rt, headers, json.dumps(install()).encode())
    assert reply == Reply(status, "unauthorized")
    await assert_nothing_written(rt)
    if reason:
        found = refusals(caplog)
        assert len(found) == 1 and reason in found[0], found
    else:  # no token and not local development: refused before anything is read
        assert refusals(caplog) == [] and aad.metadata_fetches == 0
    if authorization and len(authorization) > 40:
        assert authorization.split()[-1][-32:] not in caplog.text


async def test_a_valid_token_is_accepted_and_the_reference_stored(
    rt: Runtime, aad: FakeAAD
) -> None:
    reply = await post(rt, install(), token_for(aad))
    assert reply == Reply(200, "")
    ref = await rt.references.user(USER_AAD)
    assert ref is not None and ref.service_url == SERVICE_URL and ref.tenant_id == TENANT
    assert await queue_counts(rt) == (1, 0)  # the welcome


async def test_the_same_token_for_another_activity_channel_is_refused(
    rt: Runtime, aad: FakeAAD, caplog: pytest.LogCaptureFixture
) -> None:
    reply = await post(rt, install(channelId="webchat"), token_for(aad))
    assert reply == Reply(403, "unauthorized")
    assert refusals(caplog) == [
        "refused an activity: signing key is not endorsed for the activity's channel"]
    await assert_nothing_written(rt)


# -- tenant allow-list ----------------------------------------------------------------


@pytest.fixture
async def rt_allow_list(settings: Settings, aad: FakeAAD, connector: ConnectorEmulator,
                        transport: RecordingTransport) -> AsyncIterator[Runtime]:
    allowed = production_settings(settings, aad, connector, allowed_tenants=(TENANT,))
    async with open_runtime(allowed, aad, transport) as r:
        yield r


async def test_activity_from_another_tenant_is_refused(
    rt_allow_list: Runtime, aad: FakeAAD, caplog: pytest.LogCaptureFixture
) -> None:
    rt = rt_allow_list
    reply = await post(rt, personal(USER_AAD, SERVICE_URL, OTHER_TENANT), token_for(aad))
    assert reply == Reply(403, "unauthorized")
    assert refusals(caplog) == ["refused an activity: tenant is not allowed"]
    await assert_nothing_written(rt)
    # The same activity from the allowed tenant is accepted.
    assert (await post(rt, personal(USER_AAD, SERVICE_URL), token_for(aad))).status == 200


@pytest.mark.parametrize("key", ["tenantID", "TenantId"])
async def test_another_tenant_under_another_spelling_is_neither_let_in_nor_stored(
    rt_allow_list: Runtime, aad: FakeAAD, caplog: pytest.LogCaptureFixture, key: str
) -> None:
    # The allowed tenant in channelData, another under `conversation.tenantID`:
    # the allow-list read only `tenantId`, storage any spelling, so the activity
    # passed and its reference was stored under the other tenant.
    rt = rt_allow_list
    body = personal(USER_AAD, SERVICE_URL)
    del body["conversation"]["tenantId"]
    body["conversation"][key] = OTHER_TENANT
    reply = await post(rt, body, token_for(aad))
    assert reply == Reply(403, "unauthorized")
    assert refusals(caplog) == ["refused an activity: activity names two different tenants"]
    await assert_nothing_written(rt)


async def test_send_to_a_disallowed_tenant_makes_no_connector_call(
    rt_allow_list: Runtime, aad: FakeAAD, connector: ConnectorEmulator,
    transport: RecordingTransport
) -> None:
    rt = rt_allow_list
    await bot_token_for(rt, connector)
    # References stored before the allow-list was set, on a host that would work.
    stranger, newcomer = "0badc0de-0000-4000-8000-000000000001", "0badc0de-0000-4000-8000-2"
    await rt.references.record(parse_activity(personal(stranger, connector.url, OTHER_TENANT)))
    group = activity(scope="groupChat", conversation="19:group@thread.v2",
                     service_url=connector.url)
    group["conversation"]["tenantId"] = OTHER_TENANT
    group["channelData"] = {"tenant": {"id": OTHER_TENANT}}
    await rt.references.record(parse_activity(group))
    mark = len(transport.requests)
    targets = {
        "user": ({"user": stranger}, f"user:{stranger}"),
        "new 1:1 chat": ({"user": newcomer, "tenant": OTHER_TENANT}, f"user:{newcomer}"),
        "conversation": ({"conversation": "19:group@thread.v2"}, "conv:19:group@thread.v2"),
    }
    for name, (to, recipient) in targets.items():
        outcome = await process(rt, send_message(f"k-{name}", to), message_id=name)
        assert outcome == Outcome(Action.FAILED, "tenant-not-allowed"), name
        row = await delivery(rt, f"k-{name}", recipient)
        assert (row["state"], row["reason"]) == (d.FAILED, "tenant-not-allowed")
    assert transport.since(mark) == []
    assert connector.counters["requests"] == 0
    assert await queue_counts(rt) == (0, 0)  # not retried


# == 2. The bot's token goes to allow-listed Connector hosts only =======================


UNTRUSTED = [
    "https://evil.example/",
    "https://smba.trafficmanager.net.evil.example/",
    "http://smba.trafficmanager.net/",
    "https://evil.trafficmanager.net/",  # a suffix match would let this through
    "https://smba.trafficmanager.net:8443/",
    "https://smba.trafficmanager.net@evil.example/",
    "https://smba.trafficmanager.net%2F@evil.example/",
    "{plain}",  # http on loopback, outside local development
    "{localhost}",  # the allow-listed TLS emulator, spelled with another host name
]


def resolve(url: str, connector: ConnectorEmulator, plain: ConnectorEmulator) -> str:
    return url.format(plain=plain.url,
                      localhost=connector.url.replace("127.0.0.1", "localhost"))


@pytest.mark.parametrize("url", UNTRUSTED)
async def test_untrusted_service_url_fails_the_send_without_any_request(
    rt: Runtime, aad: FakeAAD, connector: ConnectorEmulator, plain: ConnectorEmulator,
    transport: RecordingTransport, url: str
) -> None:
    url = resolve(url, connector, plain)
    await bot_token_for(rt, connector)
    # The Connector's token vouches for the serviceUrl: the activity is accepted
    # and the reference stored verbatim. Sending to it is what must not happen.
    assert (await post(rt, install(service_url=url), token_for(aad, url))).status == 200
    [(welcome_id, welcome)] = await take_queued(rt)
    mark = len(transport.requests)
    outcomes = [
        await process(rt, welcome, message_id=welcome_id),
        await process(rt, send_message("k1", {"user": USER_AAD}), message_id="m1"),
    ]
    assert outcomes == [Outcome(Action.FAILED, "untrusted-service-url")] * 2
    rows = [dict(e) async for e in rt.deliveries.table.list_entities()]
    assert len(rows) == 2
    assert {(r["state"], r["reason"]) for r in rows} == {(d.FAILED, "untrusted-service-url")}
    assert await queue_counts(rt) == (0, 0)  # not retried, not poisoned
    assert transport.since(mark) == []
    assert connector.counters["requests"] == plain.counters["requests"] == 0


async def test_untrusted_tenant_service_url_is_not_used_to_create_a_chat(
    rt: Runtime, aad: FakeAAD, transport: RecordingTransport
) -> None:
    evil = "https://smba.trafficmanager.net.evil.example/teams/"
    team = team_install(service_url=evil)
    assert (await post(rt, team, token_for(aad, evil))).status == 200
    mark = len(transport.requests)
    # A user never seen: the 1:1 chat would be created on the tenant's serviceUrl.
    outcome = await process(rt, send_message("k1", {"user": "new-user", "tenant": TENANT}),
                            message_id="m1")
    assert outcome == Outcome(Action.FAILED, "untrusted-service-url")
    assert transport.since(mark) == []


@pytest.mark.parametrize("op", ["update", "delete"])
async def test_edits_of_a_record_with_an_untrusted_service_url_make_no_request(
    rt: Runtime, transport: RecordingTransport, op: str
) -> None:
    recipient = f"user:{USER_AAD}"
    await rt.deliveries.table.create_entity({
        "PartitionKey": safe_key("k1"), "RowKey": safe_key(recipient), "key": "k1",
        "recipient": recipient, "state": d.SENT, "attempts": 1, "tenantId": TENANT,
        "serviceUrl": "https://evil.example/", "conversationId": "a:1conv",
        "activityId": "1700000000000",
    })
    message = {"version": 1, "op": op, "key": "k1"}
    if op == "update":
        message["text"] = "edited"
    outcome = await process(rt, json.dumps(message), message_id="m1")
    assert outcome == Outcome(Action.DONE, op)
    row = await delivery(rt, "k1", recipient)
    assert (row[f"{op}State"], row[f"{op}Reason"]) == ("failed", "untrusted-service-url")
    assert row["state"] == d.SENT
    assert transport.requests == []
    assert await queue_counts(rt) == (0, 0)


@pytest.mark.parametrize("message", [
    {"version": 1, "op": "send", "key": "k1", "text": "hi",
     "to": {"user": USER_AAD, "serviceUrl": "https://evil.example/"}},
    {"version": 1, "op": "send", "key": "k1", "text": "hi", "to": {"user": USER_AAD},
     "serviceUrl": "https://evil.example/"},
])
async def test_a_queue_message_cannot_choose_the_service_url(
    rt: Runtime, aad: FakeAAD, transport: RecordingTransport, message: dict[str, Any]
) -> None:
    await rt.references.record(parse_activity(install()))
    outcome = await process(rt, json.dumps(message), message_id="m1")
    assert outcome == Outcome(Action.POISONED, "schema")
    assert transport.requests == []
    assert await queue_counts(rt) == (0, 1)


async def test_the_token_is_attached_on_an_allow_listed_host(
    rt: Runtime, aad: FakeAAD, connector: ConnectorEmulator, transport: RecordingTransport
) -> None:
    bot_token = await bot_token_for(rt, connector)
    assert (await post(rt, install(service_url=connector.url),
                       token_for(aad, connector.url))).status == 200
    [(welcome_id, welcome)] = await take_queued(rt)
    mark = len(transport.requests)
    assert await process(rt, welcome, message_id=welcome_id) == Outcome(Action.DONE, d.SENT)
    assert await process(rt, send_message("k1", {"user": USER_AAD}),
                         message_id="m1") == Outcome(Action.DONE, d.SENT)
    update = {"version": 1, "op": "update", "key": "k1", "text": "edited"}
    assert await process(rt, json.dumps(update), message_id="m2") == Outcome(Action.DONE, "update")
    delete = {"version": 1, "op": "delete", "key": "k1"}
    assert await process(rt, json.dumps(delete), message_id="m3") == Outcome(Action.DONE, "delete")
    assert connector.authorization_headers == [f"Bearer {bot_token}"] * 4
    sent = transport.requests[mark:]
    assert len(sent) == 4
    assert {r.url.host for r in sent} == {"127.0.0.1"} and {r.url.scheme for r in sent} == {
        "https"}
    # One token request for all of it (MSAL with the client secret, cached).
    assert [r["auth"] for r in aad.token_requests] == ["secret"]


async def test_local_dev_sends_no_token_to_loopback(
    settings: Settings, aad: FakeAAD, connector: ConnectorEmulator, plain: ConnectorEmulator,
    transport: RecordingTransport
) -> None:
    local = dataclasses.replace(
        settings, local_dev=True, app_id=APP_ID,
        cloud_override=aad.cloud_override(add_connector_hosts=[host_port(connector.url)]),
        local_connectors=(plain.url, connector.url))  # the loopback ones it may call
    async with open_runtime(local, aad, transport) as rt:
        # The app refuses local development with credentials; give it a token
        # anyway, to show that loopback stand-ins never receive it.
        bot_token = await bot_token_for(rt, connector)
        # Without a token, only loopback serviceUrls get in, even in local dev.
        for url in (SERVICE_URL, "https://evil.example/", "http://localhost.evil.example/"):
            assert await post(rt, personal("remote", url)) == Reply(401, "unauthorized")
        await assert_nothing_written(rt)
        https_localhost = connector.url.replace("127.0.0.1", "localhost")
        users = {"plain": plain.url, "localhost": https_localhost, "listed": connector.url}
        for user, url in users.items():
            assert (await post(rt, personal(user, url))).status == 200  # no token: local dev
        for message_id, body in await take_queued(rt):  # the three welcomes
            await process(rt, body, message_id=message_id)
        rows = [dict(e) async for e in rt.deliveries.table.list_entities()]
    assert plain.authorization_headers == [None]
    # The allow-listed TLS emulator gets the token under its listed name only.
    assert sorted(connector.authorization_headers, key=str) == [f"Bearer {bot_token}", None]
    states = {row["recipient"]: (row["state"], row.get("reason", "")) for row in rows}
    assert states == {"user:plain": (d.SENT, ""), "user:listed": (d.SENT, ""),
                      # the emulator expects the token: a tokenless call is refused
                      "user:localhost": (d.FAILED, "unauthorized")}


# == 3. Secrets never leak =============================================================


async def test_secrets_never_leak(
    settings: Settings, aad: FakeAAD, connector: ConnectorEmulator,
    transport: RecordingTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: azure, httpx, msal, aiohttp, ours
    # The libraries' loggers default to WARNING (telemetry.quiet_libraries): an
    # operator who turns them up to DEBUG must still see no secret.
    from proactive.telemetry import QUIET_LOGGERS

    for name in QUIET_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    replies: list[Reply] = []
    outcomes: list[Outcome] = []
    inbound: list[str] = []
    evil = "https://smba.trafficmanager.net.evil.example/"

    async with open_runtime(production_settings(settings, aad, connector), aad,
                            transport) as rt:
        # The runtime quiets the SDK's per-request log; an operator may turn it
        # back on, so search it too.
        caplog.set_level(logging.DEBUG, logger="azure.core.pipeline.policies.http_logging_policy")
        bot_token = await bot_token_for(rt, connector)

        async def activity_in(body: dict[str, Any], token: str) -> None:
            inbound.append(token)
            replies.append(await post(rt, body, token))

        async def work() -> None:
            for message_id, body in await take_queued(rt):
                outcomes.append(await process(rt, body, message_id=message_id))

        # Installs with valid tokens; their welcomes go out with the bot's token.
        await activity_in(personal("alice", connector.url), token_for(aad, connector.url))
        await activity_in(personal("bob", connector.url), token_for(aad, connector.url))
        await activity_in(personal("mallory", evil), token_for(aad, evil))
        connector.set_status("a:1conv-bob", "blocked")
        await work()
        # A send that succeeds after one retry, one that fails, an untrusted one.
        connector.inject(503, count=1, retry_after=0, operation="send")
        for key, user in (("k1", "alice"), ("k2", "bob"), ("k3", "mallory")):
            await rt.outbox.put(OutboxMessage(Op.SEND, key, target=Target.user(user),
                                              content=Content(text="hello")))
        await rt.outbox.queue.send_message(encode(dumps({"version": 1, "op": "explode"})))
        await work()
        await work()  # the retry
        # Refused activities: forged, and a genuine token replayed elsewhere.
        await activity_in(personal("eve", connector.url),
                          aad.mint(aad.claims(app_id=APP_ID, service_url=connector.url),
                                   key=generate_key("key-1")))
        await activity_in(personal("eve", evil), token_for(aad, connector.url))

        everything_stored = await stored(rt)
        described = [repr(rt.settings), repr(rt.connector.tokens), repr(rt.cloud)]

    # The scenario really ran: the secret was used, the token sent, all outcomes seen.
    assert [r["auth"] for r in aad.token_requests] == ["secret"]
    assert f"Bearer {bot_token}" in connector.authorization_headers
    assert [r.status for r in replies] == [200, 200, 200, 401, 401]
    reasons = sorted(o.reason for o in outcomes)
    assert reasons == sorted([d.SENT, "blocked", "untrusted-service-url", "unavailable",
                              d.SENT, "blocked", "untrusted-service-url", "unknown-op"])
    assert everything_stored[settings.poison_queue]
    loggers = {record.name.split(".")[0] for record in caplog.records}
    assert {"azure", "httpx", "msal", "proactive"} <= loggers, loggers

    secrets = {"client secret": SECRET, "bot token": bot_token}
    for i, jwt in enumerate(inbound):
        secrets[f"inbound JWT {i}"] = jwt
        secrets[f"inbound JWT {i} signature"] = jwt.rsplit(".", 1)[1]
    state = connector.state()
    state.pop("authorization")
    config = state["config"]
    assert config.pop("expectedToken") == bot_token  # the emulator's own setting
    places = {
        "logs": caplog.text + "\n".join(repr(vars(record)) for record in caplog.records),
        "storage": repr(everything_stored),
        "replies": repr(replies),
        "outcomes": repr(outcomes),
        "connector received": json.dumps(state, default=str),
        "reprs": "\n".join(described),
    }
    leaks = [f"{secret} in {place}" for secret, value in secrets.items()
             for place, text in places.items() if value in text]
    assert leaks == []
