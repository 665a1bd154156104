"""A local stand-in for the identity services the bot talks to, on loopback.

* Bot Framework OpenID metadata + JWKS (inbound tokens): RSA keys generated at
  run time, `endorsements` per key, keys added/removed at run time (rotation),
  fetch counters, and `mint()` to make valid and forged tokens.
* An Entra ID-like tenant discovery + token endpoint (client credentials with a
  secret or a certificate assertion, checked for real) and an App Service
  managed-identity endpoint, so the real MSAL client can run against it
  (`msal_http_client()` maps `https://login.fake.test/...` to this server).
* The managed-identity endpoint speaks the App Service protocol that
  azure-identity's ManagedIdentityCredential and MSAL use (`IDENTITY_ENDPOINT`,
  header `X-IDENTITY-HEADER: <IDENTITY_HEADER>`, `GET ?api-version=2019-08-01
  &resource=...&client_id=...`). Tokens for Azure Storage are JWTs shaped as
  Entra ID issues them (audience https://storage.azure.com, issuer
  https://sts.windows.net/<tenant>/, nbf/iat/exp), which Azurite's `--oauth basic`
  checks (not the signature: nothing can check it against a real tenant here).

Test and dev tooling only; nothing here is deployed logic.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

DEFAULT_ISSUER = "https://api.botframework.com"
DEFAULT_AUTHORITY_HOST = "login.fake.test"
METADATA_PATH = "/v1/.well-known/openidconfiguration"
JWKS_PATH = "/v1/.well-known/keys"
MSI_PATH = "/msi/token"
MSI_API_VERSION = "2019-08-01"
STORAGE_RESOURCE = "https://storage.azure.com"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

_DEFAULT: Any = object()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass
class TestKey:
    """An RSA signing key, as the Bot Framework publishes it (with endorsements)."""

    __test__ = False  # not a pytest test class

    kid: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    endorsements: list[str] = field(default_factory=lambda: ["msteams"])

    def public_jwk(self) -> dict[str, Any]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _int_b64(numbers.n),
            "e": _int_b64(numbers.e),
            "endorsements": list(self.endorsements),
        }

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def generate_key(kid: str | None = None, endorsements: Iterable[str] = ("msteams",)) -> TestKey:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return TestKey(kid or uuid.uuid4().hex, private_key, list(endorsements))


def self_signed_certificate(
    key: rsa.RSAPrivateKey, common_name: str = "proactive-test"
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


def sha1_thumbprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex().upper()


_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}


def sign_jwt(
    claims: Mapping[str, Any],
    *,
    alg: str,
    key: Any,
    headers: Mapping[str, Any] | None = None,
) -> str:
    """A compact JWS over `claims`, signed however asked (including insecurely).

    `key`: an RSA private key (RS*/PS*), bytes or str (HS*), ignored for `none`.
    A header value of None removes that header.
    """
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    for name, value in (headers or {}).items():
        if value is None:
            header.pop(name, None)
        else:
            header[name] = value
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
    ).encode("ascii")
    if alg == "none":
        signature = b""
    elif alg.startswith("HS"):
        secret = key.encode() if isinstance(key, str) else bytes(key)
        digest = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}[alg[2:]]
        signature = hmac.new(secret, signing_input, digest).digest()
    elif alg.startswith("RS"):
        signature = key.sign(signing_input, padding.PKCS1v15(), _HASHES[alg[2:]]())
    elif alg.startswith("PS"):
        hash_alg = _HASHES[alg[2:]]()
        signature = key.sign(
            signing_input,
            padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size),
            hash_alg,
        )
    else:
        raise ValueError(f"sign_jwt can't sign with {alg!r}")
    return signing_input.decode("ascii") + "." + b64url(signature)


@dataclass
class _Client:
    client_id: str
    scope: str
    secret: str | None = field(default=None, repr=False)
    certificate: x509.Certificate | None = None


class LoopbackHttpClient:
    """A requests-like sync client for MSAL that only talks to one FakeAAD.

    `https://{authority_host}/...` is sent to the fake server over loopback http;
    anything else is refused, so a test can never reach the real network.
    """

    def __init__(self, base_url: str, authority_host: str) -> None:
        self._base_url = base_url
        self._prefix = f"https://{authority_host}/"
        self._client = httpx.Client(timeout=10.0)

    def _map(self, url: str) -> str:
        if url.startswith(self._prefix):
            return self._base_url + "/" + url[len(self._prefix) :]
        if url.startswith(self._base_url + "/"):
            return url
        raise RuntimeError(f"LoopbackHttpClient refuses to call {url!r}")

    @staticmethod
    def _timeout(kwargs: Mapping[str, Any]) -> Any:
        # requests' `timeout=` (seconds for the connection and each read), as
        # httpx takes it; none given: the client's 10 s.
        given = kwargs.get("timeout")
        return given if isinstance(given, (int, float)) else httpx.USE_CLIENT_DEFAULT

    def get(self, url: str, params: Any = None, headers: Any = None,
            **kwargs: Any) -> httpx.Response:
        return self._client.get(self._map(url), params=params, headers=headers,
                                timeout=self._timeout(kwargs))

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None,
        **kwargs: Any
    ) -> httpx.Response:
        timeout = self._timeout(kwargs)
        if isinstance(data, (str, bytes)):
            return self._client.post(
                self._map(url), params=params, content=data, headers=headers, timeout=timeout
            )
        if isinstance(data, Mapping):
            # MSAL passes some values (the client assertion) as bytes, which
            # requests form-encodes as text; httpx would use their repr.
            data = {
                k: v.decode() if isinstance(v, bytes) else v for k, v in data.items()
            }
        return self._client.post(self._map(url), params=params, data=data, headers=headers,
                                 timeout=timeout)

    def close(self) -> None:
        self._client.close()


class FakeAAD:
    """OpenID metadata + JWKS + token endpoints on 127.0.0.1 (port 0: a free port)."""

    def __init__(
        self,
        *,
        issuer: str = DEFAULT_ISSUER,
        authority_host: str = DEFAULT_AUTHORITY_HOST,
        token_lifetime: int = 3600,
        port: int = 0,
    ) -> None:
        self.issuer = issuer
        self.authority_host = authority_host
        self.token_lifetime = token_lifetime
        self._port = port
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.keys: dict[str, TestKey] = {}
        # Counters and switches for tests.
        self.metadata_fetches = 0
        self.jwks_fetches = 0
        self.metadata_status = 200  # set to e.g. 503 to make the metadata unreachable
        self.jwks_status = 200
        # Set `jwks_gate` to an unset asyncio.Event to hold JWKS answers until it is
        # set; `jwks_entered` is set whenever a JWKS request arrives.
        self.jwks_gate: asyncio.Event | None = None
        self.jwks_entered: asyncio.Event | None = None
        self.clients: dict[str, _Client] = {}
        self.token_requests: list[dict[str, str]] = []
        # Issued bot tokens are f"{token_prefix}{n}": set a distinctive prefix to
        # look for the token where it must not be (logs, storage, answers).
        self.token_prefix = "fake-bot-token-"
        self.token_failures = 0
        # Set True to make the token and managed-identity endpoints take the
        # request and never answer (a hung Entra ID); `hung_requests` counts them.
        self.hang = False
        self.hung_requests = 0
        self._stopping = asyncio.Event()
        self.identity_header = uuid.uuid4().hex
        self.msi_requests: list[dict[str, str]] = []
        # The tenant of the managed identities (the storage tokens' issuer names it).
        self.tenant_id = str(uuid.uuid4())
        # Client ids of the user-assigned identities "attached" to the app; None: any.
        # An unknown one gets App Service's 400, as a wrong __clientId would in Azure.
        self.msi_client_ids: set[str] | None = None
        self.msi_status = 200  # set to e.g. 500 to make the identity endpoint fail
        self.msi_lifetime: int | None = None  # storage token lifetime (default token_lifetime)
        self._counter = itertools.count(1)

    # -- lifecycle --------------------------------------------------------
    async def start(self) -> FakeAAD:
        self.jwks_entered = asyncio.Event()
        app = web.Application()
        app.router.add_get(METADATA_PATH, self._metadata)
        app.router.add_get(JWKS_PATH, self._jwks)
        app.router.add_get(MSI_PATH, self._msi)
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._tenant_config)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        # A tenant's keys (its metadata's jwks_uri): the same published keys.
        app.router.add_get("/{tenant}/discovery/v2.0/keys", self._jwks)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeAAD:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- inbound: keys and tokens ------------------------------------------
    @property
    def metadata_url(self) -> str:
        return self.base_url + METADATA_PATH

    @property
    def jwks_url(self) -> str:
        return self.base_url + JWKS_PATH

    def add_key(
        self, kid: str | None = None, *, endorsements: Iterable[str] = ("msteams",)
    ) -> TestKey:
        key = generate_key(kid, endorsements)
        self.keys[key.kid] = key
        return key

    def remove_key(self, kid: str) -> None:
        self.keys.pop(kid, None)

    def default_key(self) -> TestKey:
        if not self.keys:
            self.add_key()
        return next(iter(self.keys.values()))

    def claims(
        self,
        *,
        app_id: str,
        service_url: str,
        now: float | None = None,
        lifetime: int = 3600,
        **overrides: Any,
    ) -> dict[str, Any]:
        """Claims like the Bot Connector's; an override of None removes a claim."""
        now = time.time() if now is None else now
        claims: dict[str, Any] = {
            "serviceurl": service_url,
            "nbf": int(now) - 60,
            "exp": int(now) + lifetime,
            "iss": self.issuer,
            "aud": app_id,
        }
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def mint(
        self,
        claims: Mapping[str, Any],
        *,
        kid: Any = _DEFAULT,
        alg: str = "RS256",
        key: Any = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """A token over `claims`. Defaults: RS256, signed by the first published key,
        with its kid. `key` may be a TestKey or RSA private key (RS*/PS*), or bytes
        (HS*: e.g. a public key's PEM, the classic confusion attack). `kid=None`
        leaves the kid out; a `headers` value of None removes that header."""
        if key is None:
            key = self.default_key()
        if isinstance(key, TestKey):
            if kid is _DEFAULT:
                kid = key.kid
            key = key.private_key
        elif kid is _DEFAULT:
            kid = self.default_key().kid
        extra: dict[str, Any] = {"kid": kid, "x5t": kid}
        extra.update(headers or {})
        return sign_jwt(claims, alg=alg, key=key, headers=extra)

    def cloud_override(self, **extra: Any) -> str:
        """A PROACTIVE_CLOUD_OVERRIDE value pointing a cloud preset at this server."""
        data: dict[str, Any] = {
            "openid_metadata_url": self.metadata_url,
            "token_authority": f"https://{self.authority_host}",
        }
        data.update(extra)
        return json.dumps(data)

    async def _metadata(self, request: web.Request) -> web.Response:
        self.metadata_fetches += 1
        if self.metadata_status != 200:
            return web.json_response({"error": "unavailable"}, status=self.metadata_status)
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.base_url}/authorize",
                "jwks_uri": self.jwks_url,
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        if self.jwks_entered is not None:
            self.jwks_entered.set()
        if self.jwks_gate is not None:
            await self.jwks_gate.wait()
        if self.jwks_status != 200:
            return web.json_response({"error": "unavailable"}, status=self.jwks_status)
        return web.json_response({"keys": [k.public_jwk() for k in self.keys.values()]})

    # -- outbound: client credentials and managed identity -------------------
    def register_client(
        self,
        client_id: str,
        *,
        scope: str,
        secret: str | None = None,
        certificate: x509.Certificate | None = None,
    ) -> None:
        if (secret is None) == (certificate is None):
            raise ValueError("register a client with a secret or a certificate")
        self.clients[client_id] = _Client(client_id, scope, secret, certificate)

    def authority(self, tenant: str) -> str:
        return f"https://{self.authority_host}/{tenant}"

    def msal_http_client(self) -> LoopbackHttpClient:
        return LoopbackHttpClient(self.base_url, self.authority_host)

    def msi_environment(self) -> dict[str, str]:
        """Environment variables that make MSAL use this server as App Service MSI."""
        return {
            "IDENTITY_ENDPOINT": self.base_url + MSI_PATH,
            "IDENTITY_HEADER": self.identity_header,
        }

    async def _tenant_config(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        base = self.authority(tenant)
        return web.json_response(
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
            }
        )

    def _error(self, status: int, error: str, description: str) -> web.Response:
        self.token_failures += 1
        return web.json_response(
            {"error": error, "error_description": description}, status=status
        )

    async def _hang(self) -> None:
        self.hung_requests += 1
        # Until the server stops (aiohttp keeps a handler running when its client
        # goes away, and would wait for it at cleanup).
        await self._stopping.wait()
        raise web.HTTPServiceUnavailable()

    async def _token(self, request: web.Request) -> web.Response:
        if self.hang:
            await self._hang()
        tenant = request.match_info["tenant"]
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return self._error(400, "unsupported_grant_type", "AADSTS70003: grant type")
        client = self.clients.get(str(form.get("client_id", "")))
        if client is None:
            return self._error(400, "unauthorized_client", "AADSTS700016: unknown application")
        if form.get("scope") != client.scope:
            return self._error(400, "invalid_scope", "AADSTS70011: invalid scope")
        if client.secret is not None:
            given = str(form.get("client_secret", ""))
            if not hmac.compare_digest(given.encode(), client.secret.encode()):
                return self._error(401, "invalid_client", "AADSTS7000215: Invalid client secret.")
            auth = "secret"
        else:
            audience = f"{self.authority(tenant)}/oauth2/v2.0/token"
            problem = self._check_assertion(form, client, audience)
            if problem:
                return self._error(401, "invalid_client", f"AADSTS700027: {problem}")
            auth = "certificate"
        n = next(self._counter)
        self.token_requests.append(
            {"tenant": tenant, "client_id": client.client_id, "scope": client.scope, "auth": auth}
        )
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": f"{self.token_prefix}{n}",
            }
        )

    def _check_assertion(self, form: Any, client: _Client, audience: str) -> str | None:
        import jwt

        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            return "no client assertion"
        assertion = str(form.get("client_assertion", ""))
        assert client.certificate is not None
        cert = client.certificate
        try:
            header = jwt.get_unverified_header(assertion)
            sha1 = b64url(cert.fingerprint(hashes.SHA1()))
            sha256 = b64url(cert.fingerprint(hashes.SHA256()))
            x5t = str(header.get("x5t", "")).rstrip("=")  # MSAL keeps base64 padding
            x5t256 = str(header.get("x5t#S256", "")).rstrip("=")
            if x5t != sha1 and x5t256 != sha256:
                return "certificate thumbprint does not match"
            claims = jwt.decode(
                assertion,
                cert.public_key(),  # type: ignore[arg-type]
                algorithms=["RS256", "PS256"],
                audience=audience,
                issuer=client.client_id,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            return f"bad client assertion ({type(exc).__name__})"
        if claims.get("sub") != client.client_id:
            return "assertion subject is not the client"
        return None

    async def _msi(self, request: web.Request) -> web.Response:
        if self.hang:
            await self._hang()
        if request.headers.get("X-IDENTITY-HEADER") != self.identity_header:
            return web.json_response({"statusCode": 401, "message": "bad header"}, status=401)
        if request.query.get("api-version") != MSI_API_VERSION:
            return web.json_response({"statusCode": 400, "message": "api-version not supported"},
                                     status=400)
        resource = request.query.get("resource", "")
        client_id = request.query.get("client_id", "")
        if self.msi_client_ids is not None and client_id not in self.msi_client_ids:
            return web.json_response({"statusCode": 400, "message": (
                "No User Assigned or Delegated Managed Identity found for specified "
                "ClientId/ResourceId/PrincipalId.")}, status=400)
        if self.msi_status != 200:
            return web.json_response({"statusCode": self.msi_status, "message": "unavailable"},
                                     status=self.msi_status)
        n = next(self._counter)
        self.msi_requests.append({"resource": resource, "client_id": client_id})
        now = int(time.time())
        lifetime = self.token_lifetime
        if resource.rstrip("/") == STORAGE_RESOURCE:
            lifetime = self.msi_lifetime or lifetime
            token = self.storage_token(client_id or "system-assigned", now=now, lifetime=lifetime,
                                       resource=resource, serial=n)
        else:
            token = f"fake-msi-token-{n}"
        return web.json_response(
            {
                "access_token": token,
                "expires_on": str(now + lifetime),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": client_id,
            }
        )

    def storage_token(self, client_id: str, *, now: float | None = None, lifetime: int = 3600,
                      resource: str = STORAGE_RESOURCE, serial: int = 0) -> str:
        """An access token for Azure Storage as Entra ID issues one to a managed
        identity (v1 claims), signed with this server's first key."""
        now = int(time.time() if now is None else now)
        claims = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": now, "nbf": now, "exp": now + lifetime,
            "appid": client_id, "oid": client_id, "sub": client_id, "tid": self.tenant_id,
            "idtyp": "app", "ver": "1.0", "uti": f"fake-{serial}",
        }
        return self.mint(claims)
