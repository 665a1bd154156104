"""Property-based fuzzing of POST /api/messages (`handle_activity`) on a
production-mode Runtime (local development off, an app id, the cloud's OpenID
metadata pointed at the fake Azure AD), against real Azurite.

How this runs under pytest-asyncio (auto mode): `@given` on an `async def`
test is supported by pytest-asyncio, which runs every example's coroutine on
the test's event loop, the same loop as the async fixtures. So the Runtime (its
storage clients and httpx client are bound to that loop) is built once per test
function and shared by all its examples; hence the suppressed
`function_scoped_fixture` health check: sharing it is intended (the
unauthenticated property checks after every example that nothing was stored).
A single async test looping over `strategy.example()` would also work, but
loses shrinking and the example database, and Hypothesis warns against it.

Properties:

* Without a valid token (random bodies: bytes, JSON, activity-shaped JSON with
  random field types; random headers and Authorization values: text, `Bearer`
  + text, JWT-shaped segments, structured JWTs with random headers and claims,
  RS256 tokens signed by a key that is not published), the answer is always
  401 "unauthorized" — never an exception, never a word about the body (the
  token is checked before the body is parsed) — and nothing is stored or queued.
* With a valid token, activity-shaped bodies with random field types never
  raise either: 200, 400, 401 or 403.

Crashes these found are pinned below as plain tests.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import string
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from proactive.config import Settings
from proactive.receiving.endpoint import Reply, handle_activity
from proactive.runtime import Runtime
from proactive_devtools.fake_aad import FakeAAD, generate_key
from proactive_devtools.provision import provision
from tests.activities_data import BOT, SERVICE_URL, TENANT

APP_ID = BOT.removeprefix("28:")
REFUSED = {400, 401, 403}

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,  # nothing written to the working tree; failures print their example
)


@pytest.fixture
async def rt(settings: Settings, aad: FakeAAD) -> AsyncIterator[Runtime]:
    production = dataclasses.replace(settings, local_dev=False, app_id=APP_ID,
                                     cloud_override=aad.cloud_override())
    await provision(production)
    runtime = await Runtime.create(production)
    try:
        yield runtime
    finally:
        await runtime.close()


# -- strategies ------------------------------------------------------------------------

# Text for JSON strings: any code point, lone surrogates and controls included.
texts = st.text(st.characters(), max_size=40)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | texts
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def either(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A plausible value for a field, or any JSON value in its place."""
    return plausible | json_values


ids = texts | st.sampled_from(["a:1conv", "19:x@thread.tacv2", "29:user"])
tenants = st.sampled_from([TENANT, TENANT.upper(), ""]) | texts
service_urls = st.sampled_from([
    SERVICE_URL, SERVICE_URL.rstrip("/"), "http://127.0.0.1:9/", "https://evil.example/",
    "https://smba.trafficmanager.net.evil.example/", "", "javascript:alert(1)",
]) | texts

ACTIVITY_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "type": either(st.sampled_from(["message", "installationUpdate", "conversationUpdate",
                                    "invoke", "event", ""])),
    "id": either(ids),
    "channelId": either(st.sampled_from(["msteams", "webchat", "MSTEAMS", ""])),
    "serviceUrl": either(service_urls),
    "action": either(st.sampled_from(["add", "remove", "add-upgrade", "remove-upgrade"])),
    "from": either(st.fixed_dictionaries({}, optional={
        "id": either(ids), "aadObjectId": either(ids), "name": json_values})),
    "recipient": either(st.fixed_dictionaries({}, optional={"id": either(
        st.just(BOT) | ids)})),
    "conversation": either(st.fixed_dictionaries({}, optional={
        "id": either(ids), "tenantId": either(tenants),
        "conversationType": either(st.sampled_from(["personal", "groupChat", "channel"]))})),
    "channelData": either(st.fixed_dictionaries({}, optional={
        "tenant": either(st.fixed_dictionaries({}, optional={"id": either(tenants)})),
        "eventType": json_values, "team": json_values, "settings": json_values})),
    "membersAdded": either(st.lists(st.fixed_dictionaries({"id": either(st.just(BOT) | ids)}),
                                    max_size=3)),
    "membersRemoved": json_values,
    "entities": either(st.lists(st.fixed_dictionaries({
        "type": either(st.just("clientInfo")), "timezone": json_values}), max_size=2)),
    "localTimezone": json_values,
    "locale": json_values,
}
activities = st.fixed_dictionaries({}, optional=ACTIVITY_FIELDS)


def _valid_base(activity_id: str) -> dict[str, Any]:
    return {
        "type": "installationUpdate", "action": "add", "id": activity_id,
        "channelId": "msteams", "serviceUrl": SERVICE_URL,
        "from": {"id": "29:user", "aadObjectId": "6f3a8c1e-0000-4000-8000-00000000aaaa"},
        "recipient": {"id": BOT},
        "conversation": {"id": "a:1conv", "conversationType": "personal", "tenantId": TENANT},
        "channelData": {"tenant": {"id": TENANT}},
    }


# A genuine activity with some fields replaced by random values (rarely the two
# the token is bound to: then 401/403 is the right answer).
authenticated_activities = st.builds(
    lambda activity_id, changes, extra: {**_valid_base(activity_id), **changes, **extra},
    st.uuids().map(str),
    st.fixed_dictionaries({}, optional={
        name: strategy for name, strategy in ACTIVITY_FIELDS.items()
        if name not in ("serviceUrl", "channelId")}),
    st.fixed_dictionaries({}, optional={"serviceUrl": ACTIVITY_FIELDS["serviceUrl"],
                                        "channelId": ACTIVITY_FIELDS["channelId"]})
    | st.just({}) | st.just({}) | st.just({}),
)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(_json_bytes),
    activities.map(_json_bytes),
    # JSON text cut short.
    st.tuples(activities.map(_json_bytes), st.integers(0, 400)).map(lambda t: t[0][: t[1]]),
)

B64URL = string.ascii_letters + string.digits + "-_"
segments = st.text(alphabet=B64URL, max_size=60)


def _b64json(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


jwt_headers = st.fixed_dictionaries({}, optional={
    "alg": either(st.sampled_from(["RS256", "none", "HS256", "RS512", "PS256", "ES256"])),
    "kid": either(st.sampled_from(["key-1", "", "unknown"])),
    "typ": json_values,
})
claim_sets = st.fixed_dictionaries({}, optional={
    "iss": either(st.sampled_from(["https://api.botframework.com", "https://evil.example"])),
    "aud": either(st.sampled_from([APP_ID, "other-bot"])),
    "serviceurl": either(service_urls),
    "exp": either(st.integers(int(time.time()) - 10_000, int(time.time()) + 10_000)),
    "nbf": either(st.integers(int(time.time()) - 10_000, int(time.time()) + 10_000)),
})
FORGER = generate_key("key-1")  # the published kid, another key


def _forged(claims: dict[str, Any], kid: str) -> str:
    from proactive_devtools.fake_aad import sign_jwt

    return sign_jwt(claims, alg="RS256", key=FORGER.private_key, headers={"kid": kid})


tokens = st.one_of(
    st.text(max_size=80),
    st.tuples(segments, segments, segments).map(".".join),
    st.tuples(jwt_headers.map(_b64json), claim_sets.map(_b64json), segments).map(".".join),
    st.builds(_forged, claim_sets, st.sampled_from(["key-1", "other"])),
)
authorizations = st.one_of(
    st.text(max_size=80),
    st.tuples(st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Bearer ", ""]),
              st.sampled_from([" ", "  ", "", "\t"]), tokens).map("".join),
)
header_maps = st.tuples(
    st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=40), max_size=3),
    st.sampled_from(["Authorization", "authorization", "AUTHORIZATION", None]),
    authorizations,
).map(lambda t: {**t[0], t[1]: t[2]} if t[1] else t[0])


async def _stored_anything(rt: Runtime) -> list[Any]:
    found: list[Any] = []
    for table in (rt.references.table, rt.activities_table):
        async for entity in table.list_entities(results_per_page=1):
            found.append(dict(entity))
            break
    props = await rt.outbox.queue.get_queue_properties()
    if props.approximate_message_count:
        found.append(f"{props.approximate_message_count} queued")
    return found


# -- properties ------------------------------------------------------------------------


@settings(FUZZ, max_examples=220)
@given(headers=header_maps, body=bodies)
async def test_without_a_valid_token_nothing_gets_in(
    rt: Runtime, headers: dict[str, str], body: bytes
) -> None:
    reply = await handle_activity(rt, headers, body)
    assert reply == Reply(401, "unauthorized")
    assert await _stored_anything(rt) == []


@settings(FUZZ, max_examples=80)
@given(body=authenticated_activities)
async def test_with_a_valid_token_random_activities_never_raise(
    rt: Runtime, aad: FakeAAD, body: dict[str, Any]
) -> None:
    token = aad.mint(aad.claims(app_id=APP_ID, service_url=SERVICE_URL))
    reply = await handle_activity(rt, {"Authorization": f"Bearer {token}"},
                                  json.dumps(body).encode())
    event(f"status {reply.status}")
    assert reply.status in REFUSED | {200}, reply
    if reply.status in (401, 403):
        assert reply.body == "unauthorized"


# -- values that once crashed an authenticated request, and one that still does ---------


@pytest.mark.parametrize("change", [
    {"conversation": {"id": "a:\x7f", "tenantId": TENANT}},  # DEL / C1 controls
    {"from": {"id": "29:x", "aadObjectId": "\x85"}},
    {"id": "\ud800"},  # a lone surrogate
    {"conversation": {"id": "a:" + "x" * 600, "tenantId": TENANT}},  # over the key limit
    {"from": {"id": "29:x", "aadObjectId": "\x00" * 300}},
], ids=["DEL in conversation id", "C1 in aadObjectId", "lone surrogate", "long id",
        "NULs in aadObjectId"])
async def test_awkward_values_in_an_authenticated_activity_are_answered(
    rt: Runtime, aad: FakeAAD, change: dict[str, Any]
) -> None:
    token = aad.mint(aad.claims(app_id=APP_ID, service_url=SERVICE_URL))
    body = {**_valid_base("awkward"), **change}
    reply = await handle_activity(rt, {"Authorization": f"Bearer {token}"},
                                  json.dumps(body).encode())
    assert reply.status in (200, 400)


DEEP = [b"[" * 100_000, b'{"a":' * 50_000]


@pytest.mark.parametrize("body", DEEP, ids=["array", "object"])
async def test_a_bad_token_learns_nothing_about_its_body(rt: Runtime, aad: FakeAAD,
                                                        body: bytes) -> None:
    forged = aad.mint(aad.claims(app_id=APP_ID, service_url=SERVICE_URL), key=FORGER)
    for authorization in ("Bearer x", f"Bearer {forged}"):
        reply = await handle_activity(rt, {"Authorization": authorization}, body)
        assert reply == Reply(401, "unauthorized")


@pytest.mark.parametrize("body", DEEP, ids=["array", "object"])
async def test_deeply_nested_json_with_a_valid_token_is_a_400(
        rt: Runtime, aad: FakeAAD, body: bytes) -> None:
    token = aad.mint(aad.claims(app_id=APP_ID, service_url=SERVICE_URL))
    reply = await handle_activity(rt, {"Authorization": f"Bearer {token}"}, body)
    assert reply == Reply(400, "body is not JSON")


async def test_huge_free_text_fields_are_not_stored_whole(rt: Runtime, aad: FakeAAD) -> None:
    token = aad.mint(aad.claims(app_id=APP_ID, service_url=SERVICE_URL))
    body = {**_valid_base("huge"), "locale": "x" * 70_000}
    reply = await handle_activity(rt, {"Authorization": f"Bearer {token}"},
                                  json.dumps(body).encode())
    assert reply.status in (200, 400)
