"""The HTTP API's Entra ID bearer option: real RS256 tokens from the fake
Azure AD, its tenant metadata and keys fetched over loopback HTTP."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import azure.functions as func
import httpx
import pytest

from proactive import runtime as runtime_module
from proactive.api import routes
from proactive.api.bearer import ApiTokens
from proactive.api.problems import Problem
from proactive.config import Settings
from proactive.runtime import Runtime
from proactive_devtools.fake_aad import DEFAULT_AUTHORITY_HOST, FakeAAD, generate_key
from proactive_devtools.provision import provision

TENANT = str(uuid.uuid4())
AUDIENCE = "api://proactive-test"
ROLE = "Notifications.Send"
AUTHORITY = f"https://{DEFAULT_AUTHORITY_HOST}"
NOW = 1_900_000_000.0


class ToFakeAAD(httpx.AsyncBaseTransport):
    """Sends https://login.fake.test/... to the fake's loopback port; nothing else."""

    def __init__(self, aad: FakeAAD) -> None:
        self.aad, self.inner = aad, httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != DEFAULT_AUTHORITY_HOST:
            raise httpx.ConnectError(f"refused: {request.url}")
        request.url = httpx.URL(self.aad.base_url + request.url.raw_path.decode())
        return await self.inner.handle_async_request(request)


def claims(**overrides: Any) -> dict[str, Any]:
    out = {"iss": f"{AUTHORITY}/{TENANT}/v2.0", "aud": AUDIENCE, "exp": int(NOW) + 3600,
           "nbf": int(NOW) - 60, "roles": [ROLE], "tid": TENANT}
    for name, value in overrides.items():
        if value is None:
            out.pop(name)
        else:
            out[name] = value
    return out


@pytest.fixture
async def http(aad: FakeAAD) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=ToFakeAAD(aad)) as client:
        yield client


@pytest.fixture
def tokens(http: httpx.AsyncClient) -> ApiTokens:
    return ApiTokens(http, authority=AUTHORITY, tenant=TENANT, audience=AUDIENCE, role=ROLE,
                     clock=lambda: NOW)


async def test_a_good_token_passes(tokens: ApiTokens, aad: FakeAAD) -> None:
    found = await tokens.check("Bearer " + aad.mint(claims()))
    assert found["roles"] == [ROLE]


async def test_lifetime_has_five_minutes_of_skew(tokens: ApiTokens, aad: FakeAAD) -> None:
    await tokens.check("Bearer " + aad.mint(claims(exp=int(NOW) - 299)))
    await tokens.check("Bearer " + aad.mint(claims(nbf=int(NOW) + 299)))


def _bad(aad: FakeAAD) -> dict[str, tuple[str, int]]:
    stranger = generate_key("stranger")
    public_pem = aad.default_key().public_pem()
    return {
        "missing": ("", 401),
        "basic": ("Basic dXNlcjpwYXNz", 401),
        "garbage": ("Bearer not.a-token", 401),
        "expired": ("Bearer " + aad.mint(claims(exp=int(NOW) - 301)), 401),
        "not yet valid": ("Bearer " + aad.mint(claims(nbf=int(NOW) + 301)), 401),
        "no exp": ("Bearer " + aad.mint(claims(exp=None)), 401),
        "wrong audience": ("Bearer " + aad.mint(claims(aud="api://someone-else")), 401),
        "other tenant": ("Bearer " + aad.mint(claims(iss=f"{AUTHORITY}/{uuid.uuid4()}/v2.0")),
                         401),
        "v1 issuer": ("Bearer " + aad.mint(claims(iss=f"https://sts.windows.net/{TENANT}/")),
                      401),
        "unpublished key": ("Bearer " + aad.mint(claims(), key=stranger), 401),
        "hs256 with the public key": ("Bearer " + aad.mint(claims(), alg="HS256",
                                                           key=public_pem), 401),
        "alg none": ("Bearer " + aad.mint(claims(), alg="none"), 401),
        "no role": ("Bearer " + aad.mint(claims(roles=None)), 403),
        "other role": ("Bearer " + aad.mint(claims(roles=["Reports.Read"])), 403),
        "role as a string": ("Bearer " + aad.mint(claims(roles=ROLE)), 403),
    }


CASES = ["missing", "basic", "garbage", "expired", "not yet valid", "no exp", "wrong audience",
         "other tenant", "v1 issuer", "unpublished key", "hs256 with the public key",
         "alg none", "no role", "other role", "role as a string"]


@pytest.mark.parametrize("case", CASES)
async def test_bad_tokens_are_refused(tokens: ApiTokens, aad: FakeAAD, case: str) -> None:
    header, status = _bad(aad)[case]
    with pytest.raises(Problem) as caught:
        await tokens.check(header)
    assert caught.value.status == status


async def test_no_signing_keys_fails_closed(tokens: ApiTokens, aad: FakeAAD) -> None:
    aad.metadata_status = aad.jwks_status = 503
    with pytest.raises(Problem) as caught:
        await tokens.check("Bearer " + aad.mint(claims()))
    assert caught.value.status == 503


@pytest.fixture
async def bearer_rt(settings: Settings, aad: FakeAAD, http: httpx.AsyncClient,
                    monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Runtime]:
    """The process Runtime, with the bearer check on, as the routes find it."""
    configured = replace(settings, api_audience=AUDIENCE, api_role=ROLE, api_tenant=TENANT,
                         cloud_override=aad.cloud_override())
    await provision(configured)
    rt = await Runtime.create(configured, http=http)
    monkeypatch.setattr(runtime_module, "_runtime", rt)
    monkeypatch.setattr(runtime_module, "_api_runtime", rt)  # the routes' one
    try:
        yield rt
    finally:
        await rt.queue_service.close()
        await rt.table_service.close()
        if rt.table_http is not None:
            await rt.table_http.close()


async def _post(authorization: str) -> func.HttpResponse:
    body = {"version": 1, "op": "send", "key": "bearer-1", "to": {"user": "u1"}, "text": "hi"}
    req = func.HttpRequest("POST", "http://localhost/api/notifications",
                           headers={"Authorization": authorization,
                                    "Content-Type": "application/json"},
                           body=json.dumps(body).encode())
    return await routes.api_notifications(req)


async def test_route_refuses_bad_tokens_and_enqueues_nothing(bearer_rt: Runtime,
                                                             aad: FakeAAD) -> None:
    real_now = time.time()
    for case in ("missing", "wrong audience", "no role", "other tenant"):
        header, status = _bad(aad)[case]
        if case != "missing":  # these were minted for NOW; re-mint for the real clock
            token = header.removeprefix("Bearer ")
            import jwt
            data = jwt.decode(token, options={"verify_signature": False})
            data.update(exp=int(real_now) + 3600, nbf=int(real_now) - 60)
            header = "Bearer " + aad.mint(data)
        r = await _post(header)
        assert r.status_code == status, r.get_body()
        assert r.mimetype == "application/problem+json"
    assert await bearer_rt.outbox.queue.peek_messages(max_messages=32) == []
    good = claims(exp=int(real_now) + 3600, nbf=int(real_now) - 60)
    r = await _post("Bearer " + aad.mint(good))
    assert r.status_code == 202, r.get_body()
    assert len(await bearer_rt.outbox.queue.peek_messages(max_messages=32)) == 1


def test_audience_without_role_or_tenant_is_a_configuration_error() -> None:
    bare = Settings(local_dev=True, api_audience=AUDIENCE)
    assert any("PROACTIVE_API_ROLE" in p for p in bare.problems())
    assert not any("PROACTIVE_API" in p for p in replace(
        bare, api_role=ROLE, api_tenant=TENANT).problems())
