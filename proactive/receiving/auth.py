"""Authenticate every activity POSTed to /api/messages (Bot Framework, connector to bot).

Two steps, so that the token is checked before the body is even parsed (a
forged token learns nothing about its body). `verify_token` checks the token
alone, `check_activity` then matches it to the parsed activity;
`authenticate` does both. Each raises `AuthenticationError` (status 401, or
403 where the token is genuine but not good for this activity) on the first
failure, in this order:

`verify_token`:
1. `Authorization` present, at most 16 KB, scheme `Bearer` (any case), a
   compact JWS (three base64url parts);
2. header `alg` exactly `RS256` (`none`, `HS256` and everything else are
   refused before any key lookup) and a `kid`;
3. the key with that `kid` from the cloud's JWKS (found through the OpenID
   metadata `jwks_uri`); the signature;
4. `iss` exactly the cloud's issuer, `aud` the bot's app id, `exp` present;
5. `exp` / `nbf` with at most 5 minutes of clock skew (the injected clock);
6. one `serviceurl` claim (any case of the name; several must agree).

`check_activity`:
7. the key's `endorsements` contain the activity's `channelId` (else 403);
8. the `serviceurl` claim equals the activity's `serviceUrl`, after removing
   one trailing `/` from each;
9. the activity names at most one tenant (`conversation.tenantId`,
   `channelData.tenant.id`, keys in any case: `activities.tenant_of`) (else
   403) and, with an allow-list, that tenant is allowed (else 403).

Signing keys (`signing_keys.py`) are cached for about a day. A `kid` not in the cache triggers a
refetch, at most one per minute, shared by all concurrent callers (single
flight); requests whose `kid` is cached never wait for it. When the keys can't be
fetched and none are cached (or the cache is older than 5 days), requests fail
closed with 401; stale keys (older than a day) keep working while a refetch
fails. Validation can't be switched off: the only exception is
`allow_anonymous_loopback` (local development), which accepts a request without
an Authorization header when, and only when, the activity's serviceUrl is a
loopback URL, to which no token is ever sent.

PyJWT, cryptography and httpx are imported lazily (cold-start cost); the error
reasons never contain the token.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proactive.errors import ConfigError
from proactive.receiving.activities import TenantConflict, tenant_of
from proactive.receiving.signing_keys import (
    ALGORITHM,
    KeysUnavailable,
    SigningKey,
    SigningKeys,
)
from proactive.teams.service_urls import is_loopback

if TYPE_CHECKING:
    import httpx

    from proactive.config import Settings
    from proactive.teams.clouds import Cloud

log = logging.getLogger(__name__)

MAX_AUTHORIZATION_LENGTH = 16 * 1024
CLOCK_SKEW = 5 * 60

# A JWS in compact serialization (RFC 7515 7.1); the API's bearer check uses it too.
COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

Clock = Callable[[], float]


class AuthenticationError(Exception):
    """The request is refused. `status` is 401 or 403; `reason` is for logs only
    (it never contains the token) and should not be sent back to the caller."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"AuthenticationError(status={self.status}, reason={self.reason!r})"


@dataclass(frozen=True)
class Claims:
    app_id: str  # the audience: this bot's app id
    service_url: str  # the token's serviceurl claim (== the activity's, modulo one '/')
    channel_id: str
    tenant_id: str | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    # True only for an accepted local-dev request without a token.
    anonymous: bool = False



@dataclass(frozen=True)
class VerifiedToken:
    """A token whose signature, issuer, audience and lifetime are good; not yet
    matched to an activity (`ActivityAuthenticator.check_activity`)."""

    claims: Mapping[str, Any] = field(repr=False)
    service_url: str  # its serviceurl claim
    endorsements: frozenset[str]  # of the key that signed it



def _present(authorization: str | None) -> bool:
    return authorization is not None and bool(authorization.strip())


def _strip_one_slash(url: str) -> str:
    return url[:-1] if url.endswith("/") else url


class ActivityAuthenticator:
    """Validates the Bot Connector's token for one activity (see module docstring)."""

    def __init__(
        self,
        cloud: Cloud,
        app_id: str,
        http: httpx.AsyncClient,
        clock: Clock = time.time,
        allowed_tenants: Iterable[str] = (),
        *,
        allow_anonymous_loopback: bool = False,
        keys: SigningKeys | None = None,
    ) -> None:
        if not app_id and not allow_anonymous_loopback:
            raise ConfigError("MicrosoftAppId is required to authenticate activities")
        self.cloud = cloud
        self.app_id = app_id
        self._clock = clock
        self._allowed_tenants = frozenset(t.strip().lower() for t in allowed_tenants if t.strip())
        self._allow_anonymous_loopback = allow_anonymous_loopback
        self.keys = keys or SigningKeys(http, cloud.openid_metadata_url, clock=clock)
        if allow_anonymous_loopback:
            log.warning(
                "local-dev mode: activities without a token are accepted from loopback "
                "serviceUrls only; never enable PROACTIVE_LOCAL_DEV in production"
            )

    async def authenticate(
        self, authorization: str | None, activity: Mapping[str, Any]
    ) -> Claims:
        """Both steps: the token (when there is one), then the activity."""
        token = await self.verify_token(authorization) if _present(authorization) else None
        return self.check_activity(token, activity)

    async def verify_token(self, authorization: str | None) -> VerifiedToken:
        """Checks 1-6 (module docstring): everything that needs no activity."""
        if authorization is None or not authorization.strip():
            raise AuthenticationError(401, "missing Authorization header")
        if not self.app_id:
            raise AuthenticationError(401, "no MicrosoftAppId configured: can't check tokens")
        if len(authorization) > MAX_AUTHORIZATION_LENGTH:
            raise AuthenticationError(401, "Authorization header too large")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise AuthenticationError(401, "Authorization scheme is not Bearer")
        token = token.strip()
        if not COMPACT_JWS.fullmatch(token):
            raise AuthenticationError(401, "token is not a compact JWS")

        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthenticationError(401, "token header is malformed") from None
        alg = header.get("alg")
        if alg != ALGORITHM:
            raise AuthenticationError(401, "token algorithm is not RS256")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise AuthenticationError(401, "token has no usable kid")

        try:
            signing_key = await self.keys.get(kid)
        except KeysUnavailable:
            log.error("refusing activity: Bot Framework signing keys are unavailable")
            raise AuthenticationError(401, "signing keys unavailable (fail closed)") from None
        if signing_key is None:
            raise AuthenticationError(401, "token signed with an unknown key")

        claims = self._decode(jwt, token, signing_key)
        self._check_times(claims)

        claim_urls = [v for k, v in claims.items() if k.lower() == "serviceurl"]
        if not claim_urls:
            raise AuthenticationError(401, "token has no serviceurl claim")
        if not all(isinstance(u, str) for u in claim_urls):
            raise AuthenticationError(401, "token's serviceurl claim is not a string")
        claim_url = claim_urls[0]
        if any(u != claim_url for u in claim_urls):
            raise AuthenticationError(401, "token has conflicting serviceurl claims")
        return VerifiedToken(claims=claims, service_url=claim_url,
                             endorsements=signing_key.endorsements)

    def check_activity(self, token: VerifiedToken | None, activity: Mapping[str, Any]) -> Claims:
        """Checks 7-9 (module docstring): the verified token against the parsed
        activity. Without a token, only local development mode accepts it, and
        only from a loopback serviceUrl."""
        if not isinstance(activity, Mapping):
            raise AuthenticationError(401, "activity is not a JSON object")
        service_url = activity.get("serviceUrl")
        channel_id = activity.get("channelId")
        if token is None:
            if (
                self._allow_anonymous_loopback
                and isinstance(service_url, str)
                and is_loopback(service_url)
            ):
                return self._anonymous(activity, service_url, channel_id)
            raise AuthenticationError(401, "missing Authorization header")
        if not isinstance(channel_id, str) or not channel_id:
            raise AuthenticationError(401, "activity has no channelId")
        if channel_id not in token.endorsements:
            raise AuthenticationError(403, "signing key is not endorsed for the activity's channel")
        if not isinstance(service_url, str) or not service_url:
            raise AuthenticationError(401, "activity has no serviceUrl")
        if _strip_one_slash(token.service_url) != _strip_one_slash(service_url):
            raise AuthenticationError(401, "serviceurl claim does not match the activity")

        tenant_id = self._check_tenant(activity)
        return Claims(
            app_id=self.app_id,
            service_url=token.service_url,
            channel_id=channel_id,
            tenant_id=tenant_id,
            raw=token.claims,
        )

    def _decode(self, jwt: Any, token: str, signing_key: SigningKey) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                signing_key.key,
                algorithms=[ALGORITHM],
                audience=self.app_id,
                issuer=self.cloud.issuer,
                options={
                    "verify_signature": True,
                    "verify_aud": True,
                    "verify_iss": True,
                    # Times are checked against the injected clock (_check_times).
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp", "iss", "aud"],
                },
            )
        except jwt.InvalidSignatureError:
            raise AuthenticationError(401, "token signature is invalid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(401, f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError(401, "token issuer is not the cloud's connector") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError(401, "token audience is not this bot") from None
        except jwt.InvalidTokenError as exc:
            raise AuthenticationError(401, f"token is invalid ({type(exc).__name__})") from None
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock()
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise AuthenticationError(401, "token exp is not a number")
        if now > exp + CLOCK_SKEW:
            raise AuthenticationError(401, "token has expired")
        nbf = claims.get("nbf")
        if nbf is not None:
            if not isinstance(nbf, (int, float)) or isinstance(nbf, bool):
                raise AuthenticationError(401, "token nbf is not a number")
            if now + CLOCK_SKEW < nbf:
                raise AuthenticationError(401, "token is not valid yet")

    def _check_tenant(self, activity: Mapping[str, Any]) -> str | None:
        try:
            tenant = tenant_of(activity)
        except TenantConflict:
            raise AuthenticationError(403, "activity names two different tenants") from None
        if self._allowed_tenants:
            if not tenant:
                raise AuthenticationError(403, "activity names no tenant; an allow-list is set")
            if tenant.lower() not in self._allowed_tenants:
                raise AuthenticationError(403, "tenant is not allowed")
        return tenant or None

    def _anonymous(self, activity: Mapping[str, Any], service_url: str, channel_id: Any) -> Claims:
        tenant_id = self._check_tenant(activity)
        return Claims(
            app_id=self.app_id,
            service_url=service_url,
            channel_id=channel_id if isinstance(channel_id, str) else "",
            tenant_id=tenant_id,
            anonymous=True,
        )


def build_authenticator(
    settings: Settings,
    cloud: Cloud,
    http: httpx.AsyncClient,
    *,
    clock: Clock = time.time,
) -> ActivityAuthenticator:
    """The authenticator for these settings (local_dev allows tokenless loopback activities)."""
    return ActivityAuthenticator(
        cloud,
        settings.app_id,
        http,
        clock,
        settings.allowed_tenants,
        allow_anonymous_loopback=settings.local_dev,
    )
