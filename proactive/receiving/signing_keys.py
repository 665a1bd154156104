"""The Bot Framework's signing keys, as inbound token validation needs them.

Found through the cloud's OpenID metadata (`jwks_uri`, which must be on the
metadata's own host), cached for about a day; a `kid` not in the cache
triggers one shared refetch at most once a minute; stale keys keep working
while a refetch fails, for up to five days; then requests fail closed.
httpx and PyJWT are imported lazily (cold-start cost).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proactive.teams.service_urls import is_loopback

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

# The only signature algorithm the Bot Framework uses; every other is refused.
ALGORITHM = "RS256"

KEY_TTL = 24 * 3600
MAX_KEY_AGE = 5 * 24 * 3600
MIN_REFETCH_INTERVAL = 60.0
FAILURE_RETRY_INTERVAL = 5.0
FETCH_TIMEOUT = 10.0
MAX_DOCUMENT_BYTES = 1024 * 1024


Clock = Callable[[], float]


class KeysUnavailable(Exception):
    """No usable signing keys: the metadata/JWKS could not be fetched."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    key: Any  # jwt.PyJWK
    endorsements: frozenset[str]


class SigningKeys:
    """The cloud's signing keys, fetched with the injected httpx client.

    Cache policy: keys are fresh for `ttl`; an unknown or stale `kid` triggers a
    refetch, at most once per `min_refetch_interval` after a successful fetch
    (`failure_retry_interval` after a failed one), single flight. Stale keys stay
    usable up to `max_age` while refetches fail.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        metadata_url: str,
        *,
        clock: Clock = time.time,
        ttl: float = KEY_TTL,
        max_age: float = MAX_KEY_AGE,
        min_refetch_interval: float = MIN_REFETCH_INTERVAL,
        failure_retry_interval: float = FAILURE_RETRY_INTERVAL,
    ) -> None:
        self._http = http
        self._metadata_url = metadata_url
        self._clock = clock
        self._ttl = ttl
        self._max_age = max_age
        self._min_refetch_interval = min_refetch_interval
        self._failure_retry_interval = failure_retry_interval
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._last_ok = False
        self._inflight: asyncio.Future[bool] | None = None
        self.fetch_attempts = 0

    # -- lookup ---------------------------------------------------------
    async def get(self, kid: str) -> SigningKey | None:
        """The key for `kid`, None if unknown; KeysUnavailable if there are no usable keys."""
        now = self._clock()
        known = self._keys.get(kid)
        if known is not None and self._fresh(now):
            return known
        if self._inflight is not None and self._inflight.done():
            self._inflight = None  # e.g. cancelled before it could run
        if self._inflight is None and self._may_fetch(now):
            self._last_attempt = now
            self.fetch_attempts += 1
            self._inflight = asyncio.ensure_future(self._refresh())
        if known is not None and not self._too_old(now):
            # A stale but known key: answer now, the refetch (if any) runs on.
            return known
        if self._inflight is not None:
            # Shielded: a caller that goes away does not cancel the shared fetch.
            await asyncio.shield(self._inflight)
        return self._lookup(kid)

    async def settle(self) -> None:
        """Wait for a fetch in flight, if any (tests, graceful shutdown)."""
        if self._inflight is not None:
            await asyncio.shield(self._inflight)

    def _fresh(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at < self._ttl

    def _may_fetch(self, now: float) -> bool:
        if self._last_attempt is None:
            return True
        interval = self._min_refetch_interval if self._last_ok else self._failure_retry_interval
        elapsed = now - self._last_attempt
        return elapsed >= interval or elapsed < 0  # < 0: the clock was set back

    def _too_old(self, now: float) -> bool:
        return self._fetched_at is None or now - self._fetched_at > self._max_age

    def _lookup(self, kid: str) -> SigningKey | None:
        if self._too_old(self._clock()):
            raise KeysUnavailable("no signing keys could be fetched")
        return self._keys.get(kid)

    # -- fetching -------------------------------------------------------
    async def _refresh(self) -> bool:
        try:
            keys = await self._fetch()
        except Exception as exc:  # any failure: keep what we have; fail closed if nothing
            self._last_ok = False
            log.warning(
                "fetching Bot Framework signing keys from %s failed: %s",
                self._metadata_url,
                _describe_error(exc),
            )
            return False
        else:
            self._keys = keys
            self._fetched_at = self._clock()
            self._last_ok = True
            log.info("loaded %d Bot Framework signing keys", len(keys))
            return True
        finally:
            self._inflight = None

    async def _get_json(self, url: str) -> Any:
        response = await self._http.get(
            url, timeout=FETCH_TIMEOUT, headers={"Accept": "application/json"}
        )
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code} from {url}")
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise RuntimeError(f"document from {url} is too large")
        return response.json()

    async def _fetch(self) -> dict[str, SigningKey]:
        metadata = await self._get_json(self._metadata_url)
        jwks_uri = metadata.get("jwks_uri") if isinstance(metadata, dict) else None
        if not isinstance(jwks_uri, str) or not _trusted_jwks_uri(jwks_uri, self._metadata_url):
            raise RuntimeError("OpenID metadata has no usable https jwks_uri")
        jwks = await self._get_json(jwks_uri)
        entries = jwks.get("keys") if isinstance(jwks, dict) else None
        if not isinstance(entries, list):
            raise RuntimeError("JWKS has no 'keys' list")
        keys = _parse_keys(entries)
        if not keys:
            raise RuntimeError("JWKS holds no usable RSA signing key")
        return keys


def _trusted_jwks_uri(jwks_uri: str, metadata_url: str) -> bool:
    if jwks_uri.lower().startswith("https://"):
        return True
    # Only a loopback test server (test-only cloud override) may use plain http.
    return (
        jwks_uri.lower().startswith("http://")
        and is_loopback(jwks_uri)
        and is_loopback(metadata_url)
    )


def _parse_keys(entries: Iterable[Any]) -> dict[str, SigningKey]:
    import jwt

    keys: dict[str, SigningKey] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or entry.get("kty") != "RSA":
            continue
        if entry.get("use", "sig") != "sig":
            continue
        raw_endorsements = entry.get("endorsements")
        endorsements = frozenset(
            e for e in raw_endorsements or () if isinstance(e, str)
        ) if isinstance(raw_endorsements, list) else frozenset()
        try:
            key = jwt.PyJWK(entry, algorithm=ALGORITHM)
        except (jwt.PyJWKError, ValueError, TypeError) as exc:
            log.warning("skipping signing key %r: %s", kid[:64], type(exc).__name__)
            continue
        keys[kid] = SigningKey(kid=kid, key=key, endorsements=endorsements)
    return keys


def _describe_error(exc: BaseException) -> str:
    text = str(exc)
    return type(exc).__name__ + (f": {text[:200]}" if text else "")
