"""The HTTP API's optional Entra ID check: a bearer token for our API.

On when PROACTIVE_API_AUDIENCE is set; then every API request needs, besides
the Functions key, `Authorization: Bearer <token>` where the token is
- a compact JWS signed RS256 (nothing else) by a key of the tenant's OpenID
  metadata (`<authority>/<tenant>/v2.0/.well-known/openid-configuration`),
  fetched and cached as for inbound activities (`receiving.signing_keys`);
- issued by `<authority>/<tenant>/v2.0` (v2 access tokens: the API's app
  registration sets `"accessTokenAcceptedVersion": 2`);
- for the audience PROACTIVE_API_AUDIENCE, within its lifetime (5 minutes'
  skew, as for activities), and holding PROACTIVE_API_ROLE in `roles` (an
  application role granted to the producer's identity).
A missing or bad token is 401, a good one without the role 403; with no usable
signing keys it fails closed (503). The reason never says more than needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from proactive.api.problems import Problem
from proactive.receiving.auth import CLOCK_SKEW, COMPACT_JWS, MAX_AUTHORIZATION_LENGTH
from proactive.receiving.signing_keys import ALGORITHM, KeysUnavailable, SigningKeys

if TYPE_CHECKING:
    import httpx

    from proactive.runtime import Runtime


def _refuse(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail)


class ApiTokens:
    """Validates the API's bearer tokens for one tenant, audience and role."""

    def __init__(self, http: httpx.AsyncClient, *, authority: str, tenant: str, audience: str,
                 role: str, clock: Callable[[], float] = time.time) -> None:
        self.issuer = f"{authority.rstrip('/')}/{tenant}/v2.0"
        self.audience, self.role, self._clock = audience, role, clock
        self.keys = SigningKeys(http, f"{self.issuer}/.well-known/openid-configuration",
                                clock=clock)

    async def check(self, authorization: str) -> dict[str, Any]:
        """The token's claims; Problem 401 / 403 / 503 otherwise."""
        import jwt

        if not authorization.strip():
            raise _refuse("a bearer token is required")
        if len(authorization) > MAX_AUTHORIZATION_LENGTH:
            raise _refuse("the Authorization header is too large")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not COMPACT_JWS.fullmatch(token):
            raise _refuse("the Authorization header is not a bearer token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _refuse("the token's header is malformed") from None
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str) or not 0 < len(kid) <= 256:
            raise _refuse("the token is not RS256 with a key id")
        try:
            key = await self.keys.get(kid)
        except KeysUnavailable:
            raise Problem(503, "keys-unavailable", "the tenant's signing keys can't be "
                                                   "fetched; retry later") from None
        if key is None:
            raise _refuse("the token is signed with an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=[ALGORITHM], audience=self.audience,
                issuer=self.issuer,
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "require": ["exp", "iss", "aud"]})
        except jwt.InvalidTokenError as exc:
            raise _refuse(f"the token is not valid here ({type(exc).__name__})") from None
        self._check_times(claims)
        roles = claims.get("roles")
        if not isinstance(roles, list) or self.role not in roles:
            raise Problem(403, "forbidden", f"the token lacks the app role {self.role!r}")
        return claims

    def _check_times(self, claims: dict[str, Any]) -> None:
        now, exp, nbf = self._clock(), claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, int | float) or isinstance(exp, bool) or now > exp + CLOCK_SKEW:
            raise _refuse("the token has expired")
        if nbf is not None and (not isinstance(nbf, int | float) or isinstance(nbf, bool)
                                or now + CLOCK_SKEW < nbf):
            raise _refuse("the token is not valid yet")


_validators: dict[int, ApiTokens] = {}


def tokens_for(rt: Runtime) -> ApiTokens:
    """The Runtime's validator, made once (its key cache lives as long)."""
    found = _validators.get(id(rt))
    if found is None:
        s = rt.settings
        found = _validators[id(rt)] = ApiTokens(
            rt.http, authority=rt.cloud.token_authority, tenant=s.api_tenant or s.app_tenant_id,
            audience=s.api_audience, role=s.api_role)
    return found


async def check_request(rt: Runtime, authorization: str) -> dict[str, Any]:
    return await tokens_for(rt).check(authorization)
