"""The bot's own token, for calls to the Bot Connector (outbound).

`build_token_provider(settings, cloud)` returns a `BotTokenProvider` whose
`get_token()` answers from an in-process cache and refreshes the token 5 minutes
before it expires: one refresh at a time (concurrent callers keep using the
still-valid token, or wait for that one refresh), MSAL's synchronous call run in
a worker thread, only on refresh — never a token request per message. A refresh
has a deadline (`TOKEN_DEADLINE`, 10 s): every HTTP call MSAL makes has that
timeout, and past it the callers get TokenUnavailable (the message is retried
later), one warning names the authority host, and the next attempt after the
retry interval is a fresh request.

Credentials, by `MicrosoftAppType`:

* SingleTenant / MultiTenant: client secret (`MicrosoftAppPassword`) or
  certificate (`MicrosoftAppCertificatePath`: a PEM file with the private key
  and, unless `MicrosoftAppCertificateThumbprint` is set, the certificate),
  through one `msal.ConfidentialClientApplication` per provider, built on the
  first refresh (its constructor does network I/O). Authority
  `{cloud.token_authority}/{tenant}` with the tenant id for SingleTenant and
  `cloud.multi_tenant_authority_tenant` for MultiTenant; scope `cloud.token_scope`.
* UserAssignedMSI: `msal.ManagedIdentityClient` with the bot's app id as the
  user-assigned identity's client id; resource `cloud.msi_resource`.

Use `shared_token_provider()` to keep one provider (so one MSAL client) per
process. Secrets never appear in reprs, logs or exception messages.

msal, requests and cryptography are imported lazily.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from proactive.errors import ConfigError, TokenUnavailable
from proactive.teams.msal_sources import (
    AccessToken,
    Clock,
    _MsalClientCredentials,
    _MsalManagedIdentity,
    _TimedHttp,
    redact,
)

if TYPE_CHECKING:
    from proactive.teams.clouds import Cloud

log = logging.getLogger(__name__)


class Settings(Protocol):
    """The bot's identity settings (proactive.config.Settings has them; teams/
    sits below config, as clouds.py's Settings does)."""

    @property
    def app_id(self) -> str: ...

    @property
    def app_password(self) -> str: ...

    @property
    def app_tenant_id(self) -> str: ...

    @property
    def app_type(self) -> str: ...

    @property
    def certificate_path(self) -> str: ...

    @property
    def certificate_thumbprint(self) -> str: ...

REFRESH_MARGIN = 5 * 60.0
RETRY_INTERVAL = 10.0
# The longest one token request may take (connect, answer, MSAL's own work):
# past it the caller gets TokenUnavailable and the message is retried later.
TOKEN_DEADLINE = 10.0

_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,253}")
_APP_TYPES = {"singletenant": "SingleTenant", "multitenant": "MultiTenant",
              "userassignedmsi": "UserAssignedMSI"}


class BotTokenProvider(Protocol):
    async def get_token(self) -> str: ...


class CachedTokenProvider:
    """Caches one token from a synchronous `acquire()` (run in a worker thread)."""

    def __init__(
        self,
        acquire: Callable[[], AccessToken],
        *,
        clock: Clock = time.time,
        refresh_margin: float = REFRESH_MARGIN,
        retry_interval: float = RETRY_INTERVAL,
        description: str = "bot token",
        secrets: Iterable[str] = (),
        deadline: float = TOKEN_DEADLINE,
        host: str = "",
    ) -> None:
        self._acquire = acquire
        self._clock = clock
        self._margin = refresh_margin
        self._retry_interval = retry_interval
        self.description = description
        self._secrets = tuple(s for s in secrets if s)
        self._deadline = deadline
        self.host = host  # the authority (or identity endpoint) host, for log lines
        self._token: AccessToken | None = None
        self._due = 0.0  # when self._token should be refreshed
        self._lock = asyncio.Lock()
        self._failed_at: float | None = None
        self._failure = TokenUnavailable()
        self.acquisitions = 0  # calls to acquire(), for tests and metrics

    def __repr__(self) -> str:
        return f"CachedTokenProvider({self.description})"

    @staticmethod
    def _copy(failure: TokenUnavailable) -> TokenUnavailable:
        # A fresh exception per caller: a raised one collects its traceback.
        return TokenUnavailable(detail=failure.detail, code=failure.code)

    def _due_time(self, token: AccessToken, now: float) -> float:
        # `margin` before expiry, but at least half-way through a short-lived token,
        # so a token shorter than the margin is not re-requested on every call.
        lifetime = max(token.expires_at - now, 0.0)
        due = token.expires_at - min(self._margin, lifetime / 2)
        if token.refresh_at is not None:
            due = min(due, token.refresh_at)
        return due

    async def get_token(self) -> str:
        token = self._token
        now = self._clock()
        if token is not None and now < self._due:
            return token.token
        if token is not None and now < token.expires_at and self._lock.locked():
            return token.token  # someone is refreshing; this one is still valid
        async with self._lock:
            token = self._token
            now = self._clock()
            if token is not None and now < self._due:
                return token.token  # refreshed while we waited
            if self._failed_at is not None and now - self._failed_at < self._retry_interval:
                if token is not None and now < token.expires_at:
                    return token.token
                raise self._copy(self._failure)
            return await self._refresh(token, now)

    async def _refresh(self, old: AccessToken | None, now: float) -> str:
        self.acquisitions += 1
        try:
            # The thread can't be stopped, but nobody waits for it past the
            # deadline: the lock is released, and once the retry interval has
            # passed the next caller starts a request of its own (the HTTP
            # client's timeout ends the stuck one too: _TimedHttp).
            new = await asyncio.wait_for(asyncio.to_thread(self._acquire), self._deadline)
        except ConfigError:
            raise
        except TimeoutError:
            detail = (f"could not get the {self.description}: no answer from "
                      f"{self.host or 'the token endpoint'} within {self._deadline:g} s")
            self._failed_at = now
            self._failure = TokenUnavailable(detail=redact(detail, self._secrets)[:400],
                                             code="Timeout")
            log.warning("%s", self._failure.detail)
            if old is not None and now < old.expires_at:
                return old.token
            raise self._copy(self._failure) from None
        except Exception as exc:
            # Azure AD refused (its error code is kept), or could not be reached.
            code = exc.code if isinstance(exc, TokenUnavailable) else type(exc).__name__
            cause = exc.detail if isinstance(exc, TokenUnavailable) else f"{code}: {exc}"
            detail = redact(f"could not get the {self.description}: {cause}", self._secrets)
            self._failed_at = now
            self._failure = TokenUnavailable(detail=detail[:400], code=code)
            if old is not None and now < old.expires_at:
                log.warning("%s; using the current token until it expires", detail)
                return old.token
            log.error("%s", detail)
            raise self._copy(self._failure) from None
        self._token = new
        self._due = self._due_time(new, self._clock())
        self._failed_at = None
        return new.token


def _app_type(settings: Settings) -> str:
    try:
        return _APP_TYPES[(settings.app_type or "SingleTenant").strip().lower()]
    except KeyError:
        raise ConfigError(
            "MicrosoftAppType must be SingleTenant, MultiTenant or UserAssignedMSI, "
            f"got {settings.app_type!r}"
        ) from None


def authority_for(settings: Settings, cloud: Cloud) -> str:
    """The token authority for a SingleTenant or MultiTenant bot."""
    app_type = _app_type(settings)
    if app_type == "SingleTenant":
        tenant = settings.app_tenant_id.strip()
        if not tenant:
            raise ConfigError("MicrosoftAppTenantId is required for a SingleTenant bot")
    else:
        tenant = cloud.multi_tenant_authority_tenant
    if not _TENANT.fullmatch(tenant):
        raise ConfigError("MicrosoftAppTenantId must be a tenant id (GUID) or domain name")
    return f"{cloud.token_authority.rstrip('/')}/{tenant}"


def build_token_provider(
    settings: Settings,
    cloud: Cloud,
    *,
    http_client: Any = None,
    clock: Clock = time.time,
    deadline: float = TOKEN_DEADLINE,
) -> CachedTokenProvider:
    """The bot's token provider. `http_client`: a requests-like sync client for MSAL
    (tests: `FakeAAD.msal_http_client()`); None uses requests. Every token
    request ends within `deadline` seconds (TokenUnavailable after it)."""
    app_type = _app_type(settings)
    http_client = _TimedHttp(http_client, deadline)
    app_id = settings.app_id.strip()
    if not app_id:
        raise ConfigError("MicrosoftAppId is required to get the bot's token")

    if app_type == "UserAssignedMSI":
        if settings.app_password or settings.certificate_path:
            raise ConfigError(
                "MicrosoftAppType UserAssignedMSI uses the managed identity: leave "
                "MicrosoftAppPassword and MicrosoftAppCertificatePath empty"
            )
        acquire_msi = _MsalManagedIdentity(app_id, cloud.msi_resource, http_client, clock)
        return CachedTokenProvider(
            acquire_msi, clock=clock, description=f"managed identity token for {app_id}",
            deadline=deadline, host=_identity_host())

    if settings.app_password and settings.certificate_path:
        raise ConfigError(
            "set either MicrosoftAppPassword or MicrosoftAppCertificatePath, not both"
        )
    credential: str | dict[str, str]
    if settings.app_password:
        if settings.certificate_thumbprint:
            raise ConfigError(
                "MicrosoftAppCertificateThumbprint is set without MicrosoftAppCertificatePath"
            )
        credential = settings.app_password
        secrets: tuple[str, ...] = (settings.app_password,)
    elif settings.certificate_path:
        from proactive.teams.certificates import load_certificate

        credential = load_certificate(settings.certificate_path, settings.certificate_thumbprint)
        secrets = (credential["private_key"],)
    else:
        raise ConfigError(
            f"a {app_type} bot needs MicrosoftAppPassword or MicrosoftAppCertificatePath "
            "(or MicrosoftAppType=UserAssignedMSI)"
        )
    authority = authority_for(settings, cloud)
    acquire = _MsalClientCredentials(
        app_id, authority, cloud.token_scope, credential, http_client, clock
    )
    return CachedTokenProvider(
        acquire,
        clock=clock,
        description=f"bot token for {app_id} from {authority}",
        secrets=secrets,
        deadline=deadline,
        host=urlsplit(authority).hostname or authority,
    )


def _identity_host() -> str:
    """The managed identity endpoint's host, as MSAL finds it (App Service's
    IDENTITY_ENDPOINT, else the instance metadata service)."""
    endpoint = os.environ.get("IDENTITY_ENDPOINT") or os.environ.get("MSI_ENDPOINT") or ""
    return urlsplit(endpoint).hostname or "169.254.169.254"


@functools.lru_cache(maxsize=4)
def shared_token_provider(settings: Settings, cloud: Cloud) -> CachedTokenProvider:
    """One provider (so one MSAL client and one token cache) per process and settings."""
    return build_token_provider(settings, cloud)


@functools.lru_cache(maxsize=4)
def graph_token_provider(settings: Settings, cloud: Cloud) -> CachedTokenProvider:
    """The bot's own credentials, for the cloud's Microsoft Graph: scope
    `{graph}/.default` (a managed identity asks for the resource itself)."""
    graph = cloud.graph_url.rstrip("/")
    return build_token_provider(settings, dataclasses.replace(
        cloud, token_scope=f"{graph}/.default", msi_resource=graph))
