"""Where the bot's token comes from (teams/credentials.py caches it): MSAL's
confidential client (client secret or certificate) and managed identity, each
a synchronous `() -> AccessToken` run in a worker thread, with every HTTP
call MSAL makes held to the refresh's deadline. Secrets never appear in
reprs, logs or exception messages. msal and requests are imported lazily."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from proactive.errors import TokenUnavailable

Clock = Callable[[], float]

_AADSTS = re.compile(r"AADSTS\d+")


@dataclass(frozen=True)
class AccessToken:
    token: str = field(repr=False)
    expires_at: float  # clock seconds
    # When to refresh at the latest (defaults to expires_at - margin).
    refresh_at: float | None = None


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _token_from_msal(
    result: Mapping[str, Any] | None, clock: Clock, secrets: Iterable[str]
) -> AccessToken:
    if not result or "access_token" not in result:
        result = result or {}
        error = str(result.get("error") or "no_token")
        description = str(result.get("error_description") or "").splitlines()
        first = description[0] if description else ""
        # Azure AD's code says what to fix (AADSTS7000215: wrong secret), and
        # holds no secret; the description is redacted all the same.
        found = _AADSTS.search(first)
        code = f"{error} {found.group()}" if found else error
        raise TokenUnavailable(detail=redact(f"{error}: {first}"[:300], secrets), code=code)
    now = clock()
    expires_in = float(result.get("expires_in") or 0)
    refresh_in = result.get("refresh_in")
    return AccessToken(
        token=str(result["access_token"]),
        expires_at=now + expires_in,
        refresh_at=now + float(refresh_in) if isinstance(refresh_in, (int, float)) else None,
    )


class _TimedHttp:
    """A requests-like client whose every call has a timeout: MSAL passes none
    to a client it is given, and requests waits forever by default."""

    def __init__(self, http: Any, timeout: float) -> None:
        self._given = http  # None: a requests session, made on first use
        self._timeout = timeout

    @functools.cached_property
    def _http(self) -> Any:
        if self._given is not None:
            return self._given
        import requests

        return requests.Session()

    def _timed(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        given = kwargs.get("timeout")
        kwargs["timeout"] = self._timeout if not isinstance(given, (int, float)) \
            else min(float(given), self._timeout)
        return kwargs

    def get(self, url: str, **kwargs: Any) -> Any:
        return self._http.get(url, **self._timed(kwargs))

    def post(self, url: str, **kwargs: Any) -> Any:
        return self._http.post(url, **self._timed(kwargs))

    def close(self) -> None:
        self._http.close()




class _MsalClientCredentials:
    """acquire() for a confidential client; the MSAL app is built on first use."""

    def __init__(
        self,
        app_id: str,
        authority: str,
        scope: str,
        credential: str | dict[str, str],
        http_client: Any,
        clock: Clock,
    ) -> None:
        self._app_id = app_id
        self._authority = authority
        self._scope = scope
        self._credential = credential
        self._http_client = http_client
        self._clock = clock
        self._app: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"_MsalClientCredentials(app_id={self._app_id!r}, authority={self._authority!r})"

    def _secrets(self) -> tuple[str, ...]:
        if isinstance(self._credential, str):
            return (self._credential,)
        return tuple(v for k, v in self._credential.items() if k == "private_key")

    def __call__(self) -> AccessToken:
        import msal

        app = self._app
        if app is None:
            # Built outside the lock (the constructor asks the authority for its
            # metadata): a request stuck there must not hold up the next attempt.
            app = msal.ConfidentialClientApplication(
                self._app_id,
                client_credential=self._credential,
                authority=self._authority,
                http_client=self._http_client,
                # Our authorities are fixed by the cloud preset: no discovery call.
                instance_discovery=False,
            )
            with self._lock:
                if self._app is None:
                    self._app = app
                app = self._app
        result = app.acquire_token_for_client(scopes=[self._scope])
        return _token_from_msal(result, self._clock, self._secrets())


class _MsalManagedIdentity:
    """acquire() for a user-assigned managed identity."""

    def __init__(self, client_id: str, resource: str, http_client: Any, clock: Clock) -> None:
        self._client_id = client_id
        self._resource = resource
        self._http_client = http_client
        self._clock = clock
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"_MsalManagedIdentity(client_id={self._client_id!r})"

    def __call__(self) -> AccessToken:
        import msal

        with self._lock:
            if self._client is None:  # no I/O here: the request comes below
                self._client = msal.ManagedIdentityClient(
                    msal.UserAssignedManagedIdentity(client_id=self._client_id),
                    http_client=self._http_client,
                )
            client = self._client
        result = client.acquire_token_for_client(resource=self._resource)
        return _token_from_msal(result, self._clock, ())
