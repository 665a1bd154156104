"""Inbound activity authentication against a fake Bot Framework OpenID/JWKS server
on loopback, with real RSA keys and signatures, and an injected clock."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from proactive.config import Settings
from proactive.errors import ConfigError
from proactive.receiving.auth import (
    CLOCK_SKEW,
    ActivityAuthenticator,
    AuthenticationError,
    Claims,
    build_authenticator,
)
from proactive.teams.clouds import Cloud, resolve_cloud
from proactive_devtools.fake_aad import FakeAAD, generate_key
from tests.clock import Clock

APP_ID = "0f3c9a5e-1111-4222-8333-444455556666"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SERVICE_URL = "https://smba.trafficmanager.net/amer/"
T0 = 1_800_000_000.0


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def cloud(aad: FakeAAD) -> Cloud:
    return resolve_cloud(Settings(cloud="Public", cloud_override=aad.cloud_override()))


@pytest.fixture
def auth(cloud: Cloud, http: httpx.AsyncClient, clock: Clock) -> ActivityAuthenticator:
    return ActivityAuthenticator(cloud, APP_ID, http, clock)


def make_activity(**overrides: Any) -> dict[str, Any]:
    activity: dict[str, Any] = {
        "type": "message",
        "id": "1",
        "channelId": "msteams",
        "serviceUrl": SERVICE_URL,
        "from": {"id": "29:user"},
        "recipient": {"id": f"28:{APP_ID}"},
        "conversation": {"id": "a:conv", "conversationType": "personal", "tenantId": TENANT},
        "channelData": {"tenant": {"id": TENANT}},
    }
    for name, value in overrides.items():
        if value is None:
            activity.pop(name, None)
        else:
            activity[name] = value
    return activity


def claims(aad: FakeAAD, clock: Clock, **overrides: Any) -> dict[str, Any]:
    return aad.claims(app_id=APP_ID, service_url=SERVICE_URL, now=clock.now, **overrides)


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def rejected(
    auth: ActivityAuthenticator,
    authorization: str | None,
    activity: dict[str, Any] | None = None,
    status: int = 401,
    *,
    reason: str,
) -> AuthenticationError:
    """Refused by the check that `reason` names (a part of its reason): any
    other check refusing it instead fails the test, so each test proves the
    check it is about."""
    with pytest.raises(AuthenticationError) as info:
        await auth.authenticate(authorization, activity or make_activity())
    error = info.value
    assert (error.status, reason in error.reason) == (status, True), error.reason
    # The token never shows in the error.
    if authorization and len(authorization) > 20:
        token = authorization.split(" ", 1)[-1]
        for text in (str(error), repr(error), error.reason):
            assert token[-20:] not in text
    return error


# -- accepted ---------------------------------------------------------------


async def test_valid_token_is_accepted(auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock):
    result = await auth.authenticate(bearer(aad.mint(claims(aad, clock))), make_activity())
    assert isinstance(result, Claims)
    assert result.app_id == APP_ID
    assert result.service_url == SERVICE_URL
    assert result.channel_id == "msteams"
    assert result.tenant_id == TENANT
    assert result.raw["iss"] == "https://api.botframework.com"
    assert not result.anonymous
    assert "serviceurl" not in repr(result)  # raw claims stay out of reprs
    assert (aad.metadata_fetches, aad.jwks_fetches) == (1, 1)


async def test_scheme_is_case_insensitive(auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock):
    token = aad.mint(claims(aad, clock))
    await auth.authenticate(f"bearer {token}", make_activity())
    await auth.authenticate(f"BEARER  {token} ", make_activity())


async def test_keys_are_cached(auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock):
    for _ in range(5):
        await auth.authenticate(bearer(aad.mint(claims(aad, clock))), make_activity())
        clock.advance(3600)
    assert aad.jwks_fetches == 1


@pytest.mark.parametrize(
    ("claim_url", "activity_url"),
    [
        ("https://smba.trafficmanager.net/amer/", "https://smba.trafficmanager.net/amer"),
        ("https://smba.trafficmanager.net/amer", "https://smba.trafficmanager.net/amer/"),
        ("https://smba.trafficmanager.net/amer", "https://smba.trafficmanager.net/amer"),
    ],
)
async def test_serviceurl_trailing_slash(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock, claim_url: str, activity_url: str
):
    token = aad.mint(claims(aad, clock, serviceurl=claim_url))
    result = await auth.authenticate(bearer(token), make_activity(serviceUrl=activity_url))
    assert result.service_url == claim_url


async def test_serviceurl_claim_name_case(auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock):
    # The spec spells it serviceUrl, tokens carry serviceurl: both are read.
    token = aad.mint(claims(aad, clock, serviceurl=None, serviceUrl=SERVICE_URL))
    await auth.authenticate(bearer(token), make_activity())


@pytest.mark.parametrize("offset", [-CLOCK_SKEW, -CLOCK_SKEW + 1, 0, 3600])
async def test_exp_inside_the_skew_is_accepted(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock, offset: int
):
    token = aad.mint(claims(aad, clock, exp=int(clock.now) + offset))
    await auth.authenticate(bearer(token), make_activity())


@pytest.mark.parametrize("offset", [CLOCK_SKEW, CLOCK_SKEW - 1, 0])
async def test_nbf_inside_the_skew_is_accepted(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock, offset: int
):
    token = aad.mint(claims(aad, clock, nbf=int(clock.now) + offset))
    await auth.authenticate(bearer(token), make_activity())


async def test_audience_list_containing_the_app_is_accepted(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    token = aad.mint(claims(aad, clock, aud=["other", APP_ID]))
    await auth.authenticate(bearer(token), make_activity())


# -- the rejection battery ----------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "   "])
async def test_no_header(auth: ActivityAuthenticator, aad: FakeAAD, header: str | None):
    await rejected(auth, header, reason="missing Authorization header")
    assert aad.metadata_fetches == 0


async def test_wrong_scheme(auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock):
    token = aad.mint(claims(aad, clock))
    for header in (f"Basic {token}", f"Token {token}", token, f"Bearer{token}", f"JWT {token}"):
        await rejected(auth, header, reason="scheme is not Bearer")
    assert aad.metadata_fetches == 0


NOT_JWS = "token is not a compact JWS"
BAD_HEADER = "token header is malformed"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("abc", NOT_JWS),
        ("a.b", NOT_JWS),
        ("a.b.c", BAD_HEADER),  # not JSON inside
        ("e30.e30.sig.extra", NOT_JWS),
        ("eyJhbGciOiJSUzI1NiJ9..sig", NOT_JWS),  # empty payload
        ("not a token at all", NOT_JWS),
        ("eyJhbGciOiJSUzI1NiJ9.e30.c2ln=", NOT_JWS),  # padding is not base64url
        ("W10.e30.c2ln", BAD_HEADER),  # header is a JSON array
    ],
)
async def test_malformed_jwt(auth: ActivityAuthenticator, aad: FakeAAD, token: str, reason: str):
    await rejected(auth, bearer(token), reason=reason)
    assert aad.metadata_fetches == 0


async def test_alg_none(auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock):
    for alg in ("none", "None", "NONE"):
        token = aad.mint(claims(aad, clock), alg="none", headers={"alg": alg})
        await rejected(auth, bearer(token), reason="algorithm is not RS256")
    assert aad.metadata_fetches == 0  # refused before any key lookup


async def test_hs256_signed_with_the_public_key(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    key = aad.keys["key-1"]
    for secret in (key.public_pem(), key.public_pem().decode().strip().encode()):
        token = aad.mint(claims(aad, clock), alg="HS256", key=secret, kid="key-1")
        await rejected(auth, bearer(token), reason="algorithm is not RS256")
    assert aad.metadata_fetches == 0


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS256", "ES256", "HS512"])
async def test_other_algorithms(auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock, alg: str):
    if alg.startswith(("RS", "PS")):
        token = aad.mint(claims(aad, clock), alg=alg)
    else:
        token = aad.mint(claims(aad, clock), alg="HS256", key=b"secret", headers={"alg": alg})
    await rejected(auth, bearer(token), reason="algorithm is not RS256")
    assert aad.metadata_fetches == 0


async def test_rs256_signed_by_an_unknown_key_with_a_known_kid(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    forger = generate_key("key-1")  # same kid, different key
    await rejected(auth, bearer(aad.mint(claims(aad, clock), key=forger)),
                   reason="signature is invalid")


async def test_unknown_kid(auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock):
    forger = generate_key("attacker-kid")
    await rejected(auth, bearer(aad.mint(claims(aad, clock), key=forger)),
                   reason="signed with an unknown key")


async def test_missing_kid(auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock):
    for kid in (None, "", "x" * 257):
        await rejected(auth, bearer(aad.mint(claims(aad, clock), kid=kid)),
                       reason="no usable kid")
    # PyJWT itself refuses a kid that is not a string.
    await rejected(auth, bearer(aad.mint(claims(aad, clock), kid=123)),
                   reason="token header is malformed")
    assert aad.metadata_fetches == 0


@pytest.mark.parametrize(
    "issuer",
    [
        "https://evil.example",
        "https://api.botframework.us",  # another cloud's connector
        "https://api.botframework.com/",
        "https://API.botframework.com",
        "https://sts.windows.net/d6d49420-f39b-4df7-a1dc-d59a935871db/",  # emulator
        "",
    ],
)
async def test_wrong_issuer(auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock, issuer: str):
    await rejected(auth, bearer(aad.mint(claims(aad, clock, iss=issuer))),
                   reason="issuer is not the cloud's")


async def test_missing_issuer(auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock):
    await rejected(auth, bearer(aad.mint(claims(aad, clock, iss=None))),
                   reason="lacks the 'iss' claim")


@pytest.mark.parametrize(("audience", "reason"), [
    ("some-other-bot", "audience is not this bot"),
    (APP_ID.upper(), "audience is not this bot"),
    (["other"], "audience is not this bot"),
    ("", "lacks the 'aud' claim"),  # PyJWT counts an empty audience as none
])
async def test_wrong_audience(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock, audience: Any, reason: str
):
    await rejected(auth, bearer(aad.mint(claims(aad, clock, aud=audience))), reason=reason)


async def test_missing_audience(auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock):
    await rejected(auth, bearer(aad.mint(claims(aad, clock, aud=None))),
                   reason="lacks the 'aud' claim")


async def test_expired_beyond_the_skew(auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock):
    for offset in (-CLOCK_SKEW - 1, -3600):
        await rejected(auth, bearer(aad.mint(claims(aad, clock, exp=int(clock.now) + offset))),
                       reason="token has expired")


async def test_token_expires_with_the_clock(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    token = bearer(aad.mint(claims(aad, clock, lifetime=600)))
    await auth.authenticate(token, make_activity())
    clock.advance(600 + CLOCK_SKEW)
    await auth.authenticate(token, make_activity())
    clock.advance(1)
    await rejected(auth, token, reason="token has expired")


@pytest.mark.parametrize(("exp", "reason"), [
    (None, "lacks the 'exp' claim"),
    ("2099999999", "exp is not a number"),
    (True, "exp is not a number"),
    ([1], "exp is not a number"),
])
async def test_missing_or_bad_exp(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock, exp: Any, reason: str
):
    await rejected(auth, bearer(aad.mint(claims(aad, clock, exp=exp))), reason=reason)


async def test_nbf_in_the_future_beyond_the_skew(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    for offset in (CLOCK_SKEW + 1, 3600):
        await rejected(auth, bearer(aad.mint(claims(aad, clock, nbf=int(clock.now) + offset))),
                       reason="token is not valid yet")
    await rejected(auth, bearer(aad.mint(claims(aad, clock, nbf="0"))),
                   reason="nbf is not a number")


async def test_missing_serviceurl_claim(auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock):
    await rejected(auth, bearer(aad.mint(claims(aad, clock, serviceurl=None))),
                   reason="token has no serviceurl claim")


MISMATCH = "serviceurl claim does not match the activity"


@pytest.mark.parametrize(
    ("claim_url", "activity_url", "reason"),
    [
        ("https://smba.trafficmanager.net/emea/", SERVICE_URL, MISMATCH),
        ("https://smba.trafficmanager.net/amer//", "https://smba.trafficmanager.net/amer",
         MISMATCH),
        ("https://smba.trafficmanager.net/amer", "https://smba.trafficmanager.net/amer//",
         MISMATCH),
        (SERVICE_URL, "https://evil.example/amer/", MISMATCH),
        (SERVICE_URL, "https://SMBA.trafficmanager.net/amer/", MISMATCH),
        ("", SERVICE_URL, MISMATCH),
        (["https://smba.trafficmanager.net/amer/"], SERVICE_URL, "claim is not a string"),
        ("", "", "activity has no serviceUrl"),
    ],
)
async def test_serviceurl_not_matching(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock, claim_url: Any, activity_url: str,
    reason: str,
):
    token = aad.mint(claims(aad, clock, serviceurl=claim_url))
    await rejected(auth, bearer(token), make_activity(serviceUrl=activity_url), reason=reason)


async def test_conflicting_serviceurl_claims(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    token = aad.mint(claims(aad, clock, serviceUrl="https://evil.example/"))
    await rejected(auth, bearer(token), reason="conflicting serviceurl claims")


async def test_activity_without_serviceurl_or_channel(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    token = bearer(aad.mint(claims(aad, clock)))
    await rejected(auth, token, make_activity(serviceUrl=None), reason="no serviceUrl")
    await rejected(auth, token, make_activity(channelId=None), reason="no channelId")
    await rejected(auth, token, make_activity(channelId=["msteams"]), reason="no channelId")


async def test_key_without_the_msteams_endorsement(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    webchat_key = aad.add_key("key-webchat", endorsements=["webchat", "directline"])
    bare_key = aad.add_key("key-bare", endorsements=[])
    for key in (webchat_key, bare_key):
        await rejected(auth, bearer(aad.mint(claims(aad, clock), key=key)), status=403,
                       reason="not endorsed for the activity's channel")
    # The same key is fine for the channel it is endorsed for.
    token = aad.mint(claims(aad, clock), key=webchat_key)
    await auth.authenticate(bearer(token), make_activity(channelId="webchat"))


async def test_endorsement_is_checked_against_the_activity_channel(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    token = bearer(aad.mint(claims(aad, clock)))  # key-1 is endorsed for msteams only
    await rejected(auth, token, make_activity(channelId="webchat"), status=403,
                   reason="not endorsed for the activity's channel")


async def test_huge_header(auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock):
    huge = aad.mint(claims(aad, clock, padding="x" * 100_000))
    await rejected(auth, bearer(huge), reason="Authorization header too large")
    assert aad.metadata_fetches == 0


async def test_token_for_another_cloud_is_refused(aad: FakeAAD, http: httpx.AsyncClient, clock):
    gov = resolve_cloud(Settings(cloud="GCCHigh", cloud_override=aad.cloud_override()))
    auth = ActivityAuthenticator(gov, APP_ID, http, clock)
    await rejected(auth, bearer(aad.mint(claims(aad, clock))),  # iss: public cloud
                   reason="issuer is not the cloud's")


# -- keys: rotation, refetch policy, failures ---------------------------------------


async def test_key_rotation_is_picked_up_after_one_refetch(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    await auth.authenticate(bearer(aad.mint(claims(aad, clock))), make_activity())
    assert aad.jwks_fetches == 1
    clock.advance(3600)
    new_key = aad.add_key("key-2")
    aad.remove_key("key-1")
    result = await auth.authenticate(
        bearer(aad.mint(claims(aad, clock), key=new_key)), make_activity()
    )
    assert result.app_id == APP_ID
    assert aad.jwks_fetches == 2
    # The refetched set replaced the old one: key-1 is no longer trusted.
    clock.advance(120)
    old_key_token = bearer(aad.mint(claims(aad, clock), kid="key-1", key=generate_key()))
    await rejected(auth, old_key_token, reason="signed with an unknown key")


async def test_new_kid_within_a_minute_of_a_fetch_waits_for_the_next_window(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    await auth.authenticate(bearer(aad.mint(claims(aad, clock))), make_activity())
    new_key = aad.add_key("key-2")
    clock.advance(30)
    token = bearer(aad.mint(claims(aad, clock), key=new_key))
    await rejected(auth, token, reason="unknown key")  # no refetch yet: one a minute at most
    assert aad.jwks_fetches == 1
    clock.advance(31)
    await auth.authenticate(token, make_activity())
    assert aad.jwks_fetches == 2


async def test_flood_of_unknown_kids_refetches_at_most_once_a_minute(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    await auth.authenticate(bearer(aad.mint(claims(aad, clock))), make_activity())
    assert aad.jwks_fetches == 1
    clock.advance(120)

    async def bad(i: int) -> None:
        forger = forgers[i % len(forgers)]
        token = aad.mint(claims(aad, clock), key=forger, kid=f"bogus-{i}")
        await rejected(auth, bearer(token), reason="signed with an unknown key")

    forgers = [generate_key() for _ in range(2)]
    await asyncio.gather(*(bad(i) for i in range(50)))  # concurrent
    assert aad.jwks_fetches == 2  # one shared refetch
    for step in range(11):  # ten more minutes, a flood every 6 s
        clock.advance(6)
        await asyncio.gather(*(bad(1000 * step + i) for i in range(10)))
    assert aad.jwks_fetches == 3  # one more, after 60 s
    assert aad.metadata_fetches == aad.jwks_fetches


async def test_valid_kids_do_not_wait_for_a_refetch(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    await auth.authenticate(bearer(aad.mint(claims(aad, clock))), make_activity())
    clock.advance(120)
    assert aad.jwks_entered is not None
    aad.jwks_entered.clear()
    gate = asyncio.Event()
    aad.jwks_gate = gate
    forger = generate_key()
    flood = [
        asyncio.create_task(
            auth.authenticate(
                bearer(aad.mint(claims(aad, clock), key=forger, kid=f"bogus-{i}")),
                make_activity(),
            )
        )
        for i in range(20)
    ]
    await asyncio.wait_for(aad.jwks_entered.wait(), 10)  # the refetch is held open
    # A valid-kid request goes through while the refetch is pending.
    good = await asyncio.wait_for(
        auth.authenticate(bearer(aad.mint(claims(aad, clock))), make_activity()), 10
    )
    assert good.app_id == APP_ID
    assert not any(task.done() for task in flood)
    gate.set()
    results = await asyncio.gather(*flood, return_exceptions=True)
    assert all(isinstance(r, AuthenticationError) and r.status == 401
               and r.reason == "token signed with an unknown key" for r in results)
    assert aad.jwks_fetches == 2


async def test_cold_start_concurrent_requests_share_one_fetch(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    tokens = [bearer(aad.mint(claims(aad, clock, jti=str(i)))) for i in range(20)]
    results = await asyncio.gather(*(auth.authenticate(t, make_activity()) for t in tokens))
    assert len(results) == 20
    assert (aad.metadata_fetches, aad.jwks_fetches) == (1, 1)


async def test_cancelled_caller_does_not_cancel_the_shared_fetch(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    assert aad.jwks_entered is not None
    gate = asyncio.Event()
    aad.jwks_gate = gate
    token = bearer(aad.mint(claims(aad, clock)))
    first = asyncio.create_task(auth.authenticate(token, make_activity()))
    second = asyncio.create_task(auth.authenticate(token, make_activity()))
    await asyncio.wait_for(aad.jwks_entered.wait(), 10)
    first.cancel()
    gate.set()
    assert (await second).app_id == APP_ID
    assert aad.jwks_fetches == 1


@pytest.mark.parametrize("failure", ["metadata_503", "jwks_500", "server_down"])
async def test_metadata_unreachable_fails_closed(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock, failure: str
):
    token = bearer(aad.mint(claims(aad, clock)))
    if failure == "metadata_503":
        aad.metadata_status = 503
    elif failure == "jwks_500":
        aad.jwks_status = 500
    else:
        await aad.stop()
    await rejected(auth, token, reason="signing keys unavailable")
    # Concurrent requests during the failure window don't hammer the endpoint.
    await asyncio.gather(*(rejected(auth, token, reason="signing keys unavailable")
                           for _ in range(10)))
    assert auth.keys.fetch_attempts == 1
    if failure != "server_down":
        aad.metadata_status = aad.jwks_status = 200
        clock.advance(6)  # failures are retried after a few seconds
        await auth.authenticate(token, make_activity())
        assert auth.keys.fetch_attempts == 2


async def test_bad_documents_fail_closed(aad: FakeAAD, http: httpx.AsyncClient, clock: Clock):
    aad.keys.clear()  # a JWKS without keys
    cloud = resolve_cloud(Settings(cloud_override=aad.cloud_override()))
    auth = ActivityAuthenticator(cloud, APP_ID, http, clock)
    await rejected(auth, bearer(aad.mint(claims(aad, clock), key=generate_key("k"))),
                   reason="signing keys unavailable")


async def test_jwks_uri_must_be_https_unless_loopback(http: httpx.AsyncClient, clock: Clock):
    from proactive.receiving.signing_keys import _trusted_jwks_uri

    assert _trusted_jwks_uri("https://login.botframework.com/v1/.well-known/keys",
                             "https://login.botframework.com/v1/.well-known/openidconfiguration")
    assert not _trusted_jwks_uri("http://login.botframework.com/v1/.well-known/keys",
                                 "https://login.botframework.com/v1/.well-known/openidconfiguration")
    assert not _trusted_jwks_uri("http://127.0.0.1:1/keys",
                                 "https://login.botframework.com/v1/.well-known/openidconfiguration")
    assert _trusted_jwks_uri("http://127.0.0.1:1/keys", "http://127.0.0.1:1/meta")


async def test_stale_keys_keep_working_while_refetch_fails(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    await auth.authenticate(bearer(aad.mint(claims(aad, clock))), make_activity())
    clock.advance(25 * 3600)  # keys are now older than a day
    aad.metadata_status = 503
    await auth.authenticate(bearer(aad.mint(claims(aad, clock))), make_activity())
    await asyncio.wait_for(auth.keys.settle(), 10)  # the background refetch failed
    assert auth.keys.fetch_attempts == 2
    await auth.authenticate(bearer(aad.mint(claims(aad, clock))), make_activity())
    clock.advance(5 * 24 * 3600)  # beyond the maximum key age: fail closed
    await rejected(auth, bearer(aad.mint(claims(aad, clock))), reason="signing keys unavailable")
    aad.metadata_status = 200
    clock.advance(10)
    await auth.authenticate(bearer(aad.mint(claims(aad, clock))), make_activity())


async def test_stale_keys_are_refreshed_in_the_background(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    await auth.authenticate(bearer(aad.mint(claims(aad, clock))), make_activity())
    clock.advance(25 * 3600)
    await auth.authenticate(bearer(aad.mint(claims(aad, clock))), make_activity())
    assert auth.keys.fetch_attempts == 2
    # The refresh completes; later requests use fresh keys without fetching.
    await asyncio.wait_for(auth.keys.settle(), 10)
    assert aad.jwks_fetches == 2
    clock.advance(120)
    await auth.authenticate(bearer(aad.mint(claims(aad, clock))), make_activity())
    assert auth.keys.fetch_attempts == 2


# -- tenants, local dev, construction ----------------------------------------------


async def test_tenant_allow_list(aad: FakeAAD, http: httpx.AsyncClient, clock: Clock, cloud):
    auth = ActivityAuthenticator(cloud, APP_ID, http, clock, [TENANT.upper(), "other"])
    token = bearer(aad.mint(claims(aad, clock)))
    assert (await auth.authenticate(token, make_activity())).tenant_id == TENANT
    only_conversation = make_activity(channelData={})
    assert (await auth.authenticate(token, only_conversation)).tenant_id == TENANT
    only_channel_data = make_activity(conversation={"id": "a:conv"})
    assert (await auth.authenticate(token, only_channel_data)).tenant_id == TENANT

    stranger = "11111111-2222-3333-4444-555555555555"
    await rejected(
        auth,
        token,
        make_activity(
            conversation={"id": "a:c", "tenantId": stranger},
            channelData={"tenant": {"id": stranger}},
        ),
        status=403,
        reason="tenant is not allowed",
    )
    await rejected(
        auth, token, make_activity(channelData={"tenant": {"id": stranger}}), status=403,
        reason="activity names two different tenants",
    )
    await rejected(
        auth,
        token,
        make_activity(conversation={"id": "a:c"}, channelData={}),
        status=403,
        reason="activity names no tenant",
    )


STRANGER = "11111111-2222-3333-4444-555555555555"


@pytest.mark.parametrize("key", ["tenantID", "TenantId", "TENANTID"])
async def test_a_tenant_under_any_spelling_of_its_key_meets_the_allow_list(
    aad: FakeAAD, http: httpx.AsyncClient, clock: Clock, cloud: Cloud, key: str
):
    # The allow-list read conversation.tenantId only, storage any spelling: an
    # activity naming the allowed tenant in channelData and another under
    # `tenantID` passed, and was stored under the other tenant.
    auth = ActivityAuthenticator(cloud, APP_ID, http, clock, [TENANT])
    token = bearer(aad.mint(claims(aad, clock)))
    smuggled = make_activity(conversation={"id": "a:c", key: STRANGER})
    await rejected(auth, token, smuggled, status=403,
                   reason="activity names two different tenants")
    alone = make_activity(conversation={"id": "a:c", key: STRANGER}, channelData={})
    await rejected(auth, token, alone, status=403, reason="tenant is not allowed")
    allowed = make_activity(conversation={"id": "a:c", key: TENANT}, channelData={})
    assert (await auth.authenticate(token, allowed)).tenant_id == TENANT


async def test_two_tenants_in_one_activity_are_refused_without_an_allow_list(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    token = bearer(aad.mint(claims(aad, clock)))
    for conversation in ({"id": "a:c", "tenantId": STRANGER}, {"id": "a:c", "tenantID": STRANGER}):
        await rejected(auth, token, make_activity(conversation=conversation), status=403,
                       reason="activity names two different tenants")


async def test_the_token_is_verified_before_the_activity_is_read(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    forged = bearer(aad.mint(claims(aad, clock), key=generate_key("key-1")))
    # A forged token is refused for its signature, whatever the activity lacks.
    for activity in (make_activity(channelId=None), make_activity(serviceUrl=None),
                     make_activity(channelId="webchat")):
        await rejected(auth, forged, activity, reason="signature is invalid")
    with pytest.raises(AuthenticationError, match="signature is invalid"):
        await auth.verify_token(forged)  # needs no activity at all
    verified = await auth.verify_token(bearer(aad.mint(claims(aad, clock))))
    assert auth.check_activity(verified, make_activity()).tenant_id == TENANT


async def test_no_allow_list_accepts_any_tenant(
    auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock
):
    token = bearer(aad.mint(claims(aad, clock)))
    result = await auth.authenticate(token, make_activity(conversation={"id": "a"}, channelData={}))
    assert result.tenant_id is None


async def test_local_dev_accepts_tokenless_loopback_only(
    aad: FakeAAD, http: httpx.AsyncClient, clock: Clock, cloud: Cloud
):
    settings = Settings(app_id=APP_ID, local_dev=True)
    auth = build_authenticator(settings, cloud, http, clock=clock)
    local = make_activity(serviceUrl="http://localhost:56150/_connector")
    result = await auth.authenticate(None, local)
    assert result.anonymous and result.service_url == "http://localhost:56150/_connector"
    missing = "missing Authorization header"
    await rejected(auth, None, reason=missing)  # a real serviceUrl without a token
    await rejected(auth, None, make_activity(serviceUrl="http://localhost.evil.com/"),
                   reason=missing)
    # A token, when present, is always checked.
    await rejected(auth, bearer(aad.mint(claims(aad, clock), key=generate_key("key-1"))), local,
                   reason="signature is invalid")
    # Without local_dev, loopback gets no pass.
    strict = build_authenticator(Settings(app_id=APP_ID), cloud, http, clock=clock)
    await rejected(strict, None, local, reason=missing)


async def test_local_dev_without_app_id(aad: FakeAAD, http, clock: Clock, cloud: Cloud):
    auth = build_authenticator(Settings(local_dev=True), cloud, http, clock=clock)
    await auth.authenticate(None, make_activity(serviceUrl="http://127.0.0.1:3978/"))
    await rejected(auth, bearer(aad.mint(claims(aad, clock))), reason="no MicrosoftAppId")
    with pytest.raises(ConfigError):
        build_authenticator(Settings(), cloud, http, clock=clock)


async def test_non_mapping_activity(auth: ActivityAuthenticator, aad: FakeAAD, clock: Clock):
    with pytest.raises(AuthenticationError, match="activity is not a JSON object"):
        await auth.authenticate(bearer(aad.mint(claims(aad, clock))), ["not", "a", "dict"])  # type: ignore[arg-type]


def test_module_import_is_light() -> None:
    code = (
        "import sys, proactive.receiving.auth, proactive.teams.service_urls;"
        "import proactive.teams.clouds;"
        "heavy = [m for m in ('jwt', 'cryptography', 'httpx', 'msal', 'aiohttp', 'requests')"
        " if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
