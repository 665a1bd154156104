"""The bot's outbound token: caching, refresh ahead of expiry, single flight,
configuration errors, secrets kept out of sight, and the real MSAL client
against the fake token endpoint on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from proactive.config import Settings
from proactive.errors import ConfigError, TokenUnavailable
from proactive.teams.clouds import GCC_HIGH, PUBLIC, Cloud, resolve_cloud
from proactive.teams.credentials import (
    RETRY_INTERVAL,
    CachedTokenProvider,
    authority_for,
    build_token_provider,
    shared_token_provider,
)
from proactive.teams.msal_sources import AccessToken
from proactive_devtools.fake_aad import (
    FakeAAD,
    generate_key,
    self_signed_certificate,
    sha1_thumbprint,
)
from tests.clock import Clock

APP_ID = "0f3c9a5e-1111-4222-8333-444455556666"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SECRET = "s3cr3t~Value.With-Chars_0123456789"
T0 = 1_800_000_000.0


class Acquirer:
    """A fake acquire(): counts calls; can block (threading.Event) or fail."""

    def __init__(self, clock: Clock, lifetime: float = 3600) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.error: Exception | None = None
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def __call__(self) -> AccessToken:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        if self.error is not None:
            raise self.error
        return AccessToken(f"token-{self.calls}", self.clock() + self.lifetime)


# -- CachedTokenProvider ------------------------------------------------------------


async def test_token_is_cached_until_five_minutes_before_expiry():
    clock = Clock(T0)
    acquire = Acquirer(clock)
    provider = CachedTokenProvider(acquire, clock=clock)
    assert await provider.get_token() == "token-1"
    for _ in range(100):
        assert await provider.get_token() == "token-1"
    clock.advance(3600 - 301)
    assert await provider.get_token() == "token-1"
    assert acquire.calls == 1
    clock.advance(2)  # now inside the 5-minute margin
    assert await provider.get_token() == "token-2"
    assert acquire.calls == 2


async def test_short_lived_tokens_are_not_refetched_on_every_call():
    clock = Clock(T0)
    acquire = Acquirer(clock, lifetime=120)  # shorter than the margin
    provider = CachedTokenProvider(acquire, clock=clock)
    for _ in range(10):
        await provider.get_token()
    assert acquire.calls == 1
    clock.advance(61)
    await provider.get_token()
    assert acquire.calls == 2


async def test_refresh_hint_is_honoured():
    clock = Clock(T0)

    def acquire() -> AccessToken:
        return AccessToken("t", clock() + 7200, refresh_at=clock() + 3600)

    provider = CachedTokenProvider(acquire, clock=clock)
    await provider.get_token()
    clock.advance(3599)
    await provider.get_token()
    assert provider.acquisitions == 1
    clock.advance(2)
    await provider.get_token()
    assert provider.acquisitions == 2


async def test_concurrent_callers_share_one_refresh():
    clock = Clock(T0)
    acquire = Acquirer(clock)
    acquire.gate = threading.Event()
    provider = CachedTokenProvider(acquire, clock=clock)
    tasks = [asyncio.create_task(provider.get_token()) for _ in range(50)]
    assert await asyncio.to_thread(acquire.entered.wait, 10)
    assert not any(t.done() for t in tasks)
    acquire.gate.set()
    assert set(await asyncio.gather(*tasks)) == {"token-1"}
    assert acquire.calls == 1


async def test_callers_keep_the_valid_token_while_one_refreshes():
    clock = Clock(T0)
    acquire = Acquirer(clock)
    provider = CachedTokenProvider(acquire, clock=clock)
    await provider.get_token()
    clock.advance(3600 - 100)  # refresh due, token still valid
    acquire.entered.clear()
    acquire.gate = threading.Event()
    refresher = asyncio.create_task(provider.get_token())
    assert await asyncio.to_thread(acquire.entered.wait, 10)
    # Others are not blocked by the refresh in flight.
    others = await asyncio.wait_for(asyncio.gather(*(provider.get_token() for _ in range(20))), 5)
    assert set(others) == {"token-1"}
    acquire.gate.set()
    assert await refresher == "token-2"
    assert await provider.get_token() == "token-2"
    assert acquire.calls == 2


async def test_failure_without_a_valid_token_raises_and_backs_off(caplog):
    clock = Clock(T0)
    acquire = Acquirer(clock)
    acquire.error = RuntimeError(f"server said: bad secret {SECRET}")
    provider = CachedTokenProvider(acquire, clock=clock, secrets=[SECRET])
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(TokenUnavailable) as info:
            await provider.get_token()
        assert SECRET not in str(info.value) and "***" in str(info.value)
        # Concurrent and repeated callers within the retry interval don't hammer.
        results = await asyncio.gather(
            *(provider.get_token() for _ in range(10)), return_exceptions=True
        )
    assert all(isinstance(r, TokenUnavailable) for r in results)
    assert acquire.calls == 1
    assert SECRET not in caplog.text
    clock.advance(11)
    acquire.error = None
    assert await provider.get_token() == "token-2"


async def test_failure_with_a_valid_token_keeps_using_it():
    clock = Clock(T0)
    acquire = Acquirer(clock)
    provider = CachedTokenProvider(acquire, clock=clock)
    await provider.get_token()
    clock.advance(3600 - 200)
    acquire.error = ConnectionError("network down")
    assert await provider.get_token() == "token-1"
    assert await provider.get_token() == "token-1"  # backing off: no new attempt
    assert acquire.calls == 2
    clock.advance(250)  # expired, and the identity service is still down
    with pytest.raises(TokenUnavailable):
        await provider.get_token()


def test_reprs_hide_tokens_and_secrets():
    token = AccessToken("very-secret-access-token", T0)
    assert "very-secret-access-token" not in repr(token)
    settings = Settings(app_id=APP_ID, app_password=SECRET, app_tenant_id=TENANT)
    assert SECRET not in repr(settings)
    provider = build_token_provider(settings, PUBLIC)
    for text in (repr(provider), str(provider), repr(vars(provider).get("_acquire"))):
        assert SECRET not in text


# -- configuration -----------------------------------------------------------------


def test_authorities_per_app_type_and_cloud():
    single = Settings(app_id=APP_ID, app_tenant_id=TENANT, app_type="SingleTenant")
    multi = Settings(app_id=APP_ID, app_type="MultiTenant")
    assert authority_for(single, PUBLIC) == f"https://login.microsoftonline.com/{TENANT}"
    assert authority_for(multi, PUBLIC) == "https://login.microsoftonline.com/botframework.com"
    assert authority_for(single, GCC_HIGH) == f"https://login.microsoftonline.us/{TENANT}"
    assert (
        authority_for(multi, GCC_HIGH)
        == "https://login.microsoftonline.us/MicrosoftServices.onmicrosoft.us"
    )
    assert GCC_HIGH.token_scope == "https://api.botframework.us/.default"
    assert PUBLIC.msi_resource == "https://api.botframework.com"
    assert authority_for(dataclasses.replace(multi, app_type="multitenant"), PUBLIC).endswith(
        "/botframework.com"
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (Settings(app_password=SECRET, app_tenant_id=TENANT), "MicrosoftAppId"),
        (Settings(app_id=APP_ID, app_password=SECRET), "MicrosoftAppTenantId"),
        (
            Settings(app_id=APP_ID, app_password=SECRET, app_tenant_id="evil.com/x?"),
            "MicrosoftAppTenantId",
        ),
        (Settings(app_id=APP_ID, app_tenant_id=TENANT), "MicrosoftAppPassword"),
        (
            Settings(app_id=APP_ID, app_password=SECRET, certificate_path="/x.pem",
                     app_tenant_id=TENANT),
            "not both",
        ),
        (
            Settings(app_id=APP_ID, app_password=SECRET, app_type="UserAssignedMSI"),
            "managed identity",
        ),
        (Settings(app_id=APP_ID, app_password=SECRET, app_type="Guest"), "MicrosoftAppType"),
        (
            Settings(app_id=APP_ID, app_password=SECRET, app_tenant_id=TENANT,
                     certificate_thumbprint="AB" * 20),
            "Thumbprint",
        ),
        (
            Settings(app_id=APP_ID, app_tenant_id=TENANT, certificate_path="/nonexistent.pem"),
            "can't be read",
        ),
    ],
)
def test_configuration_errors(settings: Settings, message: str):
    with pytest.raises(ConfigError) as info:
        build_token_provider(settings, PUBLIC)
    assert message in str(info.value)
    assert SECRET not in str(info.value)


def _pem(*parts: bytes) -> bytes:
    return b"".join(parts)


@pytest.fixture(scope="module")
def cert_material() -> tuple[bytes, bytes, str]:
    key = generate_key().private_key
    cert = self_signed_certificate(key)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM), sha1_thumbprint(cert)


def test_certificate_errors(tmp_path: Path, cert_material: tuple[bytes, bytes, str]):
    key_pem, cert_pem, thumbprint = cert_material
    base = Settings(app_id=APP_ID, app_tenant_id=TENANT)

    def check(content: bytes, thumb: str, message: str) -> None:
        path = tmp_path / "cert.pem"
        path.write_bytes(content)
        settings = dataclasses.replace(base, certificate_path=str(path),
                                       certificate_thumbprint=thumb)
        with pytest.raises(ConfigError) as info:
            build_token_provider(settings, PUBLIC)
        assert message in str(info.value)
        assert "PRIVATE KEY" not in str(info.value)

    check(cert_pem, "", "no usable PEM private key")
    check(b"garbage", "", "no usable PEM private key")
    check(key_pem, "", "no certificate matching")
    check(_pem(key_pem, cert_pem), "00" * 20, "does not match")
    check(_pem(key_pem, cert_pem), "not-hex", "40 hex digits")
    other_cert = self_signed_certificate(generate_key().private_key)
    check(_pem(key_pem, other_cert.public_bytes(serialization.Encoding.PEM)), "",
          "no certificate matching")
    encrypted = generate_key().private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    check(encrypted, thumbprint, "encrypted")


def test_shared_provider_is_one_per_settings():
    settings = Settings(app_id=APP_ID, app_password=SECRET, app_tenant_id=TENANT)
    assert shared_token_provider(settings, PUBLIC) is shared_token_provider(settings, PUBLIC)
    other = dataclasses.replace(settings, app_tenant_id="contoso.onmicrosoft.com")
    assert shared_token_provider(other, PUBLIC) is not shared_token_provider(settings, PUBLIC)


def test_module_import_is_light():
    code = (
        "import sys, proactive.teams.credentials;"
        "heavy = [m for m in ('jwt', 'cryptography', 'msal', 'requests', 'httpx')"
        " if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the real MSAL client against the fake token endpoint ---------------------------


@pytest.fixture
async def aad() -> AsyncIterator[FakeAAD]:
    async with FakeAAD() as server:
        yield server


def _cloud(aad: FakeAAD, name: str = "Public") -> Cloud:
    return resolve_cloud(Settings(cloud=name, cloud_override=aad.cloud_override()))


async def test_msal_client_secret(aad: FakeAAD):
    cloud = _cloud(aad)
    aad.register_client(APP_ID, scope=cloud.token_scope, secret=SECRET)
    settings = Settings(app_id=APP_ID, app_password=SECRET, app_tenant_id=TENANT)
    http = aad.msal_http_client()
    try:
        provider = build_token_provider(settings, cloud, http_client=http)
        tokens = await asyncio.gather(*(provider.get_token() for _ in range(20)))
        assert set(tokens) == {"fake-bot-token-1"}
        for _ in range(50):
            assert await provider.get_token() == "fake-bot-token-1"
    finally:
        http.close()
    assert aad.token_requests == [
        {"tenant": TENANT, "client_id": APP_ID, "scope": cloud.token_scope, "auth": "secret"}
    ]
    assert provider.acquisitions == 1


async def test_msal_multi_tenant_and_gov_authorities(aad: FakeAAD):
    for cloud_name, tenant, scope in [
        ("Public", "botframework.com", "https://api.botframework.com/.default"),
        ("GCCHigh", "MicrosoftServices.onmicrosoft.us", "https://api.botframework.us/.default"),
    ]:
        cloud = _cloud(aad, cloud_name)
        aad.register_client(APP_ID, scope=scope, secret=SECRET)
        settings = Settings(app_id=APP_ID, app_password=SECRET, app_type="MultiTenant")
        http = aad.msal_http_client()
        try:
            provider = build_token_provider(settings, cloud, http_client=http)
            await provider.get_token()
        finally:
            http.close()
        assert aad.token_requests[-1]["tenant"] == tenant
        assert aad.token_requests[-1]["scope"] == scope


async def test_msal_wrong_secret_is_a_clean_error(aad: FakeAAD, caplog):
    cloud = _cloud(aad)
    aad.register_client(APP_ID, scope=cloud.token_scope, secret="the-right-one")
    settings = Settings(app_id=APP_ID, app_password=SECRET, app_tenant_id=TENANT)
    http = aad.msal_http_client()
    try:
        provider = build_token_provider(settings, cloud, http_client=http)
        with caplog.at_level(logging.DEBUG), pytest.raises(TokenUnavailable) as info:
            await provider.get_token()
    finally:
        http.close()
    assert "invalid_client" in str(info.value)
    assert SECRET not in str(info.value) and "the-right-one" not in str(info.value)
    assert SECRET not in caplog.text
    assert aad.token_failures == 1


async def test_msal_refreshes_short_lived_tokens_over_the_network(aad: FakeAAD):
    cloud = _cloud(aad)
    aad.token_lifetime = 200  # MSAL itself treats < 5 minutes as expired
    aad.register_client(APP_ID, scope=cloud.token_scope, secret=SECRET)
    settings = Settings(app_id=APP_ID, app_password=SECRET, app_tenant_id=TENANT)
    clock = Clock(T0)
    http = aad.msal_http_client()
    try:
        provider = build_token_provider(settings, cloud, http_client=http, clock=clock)
        assert await provider.get_token() == "fake-bot-token-1"
        clock.advance(50)
        assert await provider.get_token() == "fake-bot-token-1"
        clock.advance(51)  # past half of its life
        assert await provider.get_token() == "fake-bot-token-2"
    finally:
        http.close()
    assert len(aad.token_requests) == 2


@pytest.mark.parametrize("layout", ["key+cert", "cert+key", "key-only+thumbprint"])
async def test_msal_certificate(
    aad: FakeAAD, tmp_path: Path, cert_material: tuple[bytes, bytes, str], layout: str
):
    key_pem, cert_pem, thumbprint = cert_material
    from cryptography import x509

    cloud = _cloud(aad)
    aad.register_client(
        APP_ID, scope=cloud.token_scope, certificate=x509.load_pem_x509_certificate(cert_pem)
    )
    path = tmp_path / "bot.pem"
    thumb_setting = ""
    if layout == "key+cert":
        path.write_bytes(key_pem + cert_pem)
    elif layout == "cert+key":
        path.write_bytes(cert_pem + key_pem)
        thumb_setting = ":".join(thumbprint[i : i + 2] for i in range(0, 40, 2)).lower()
    else:
        path.write_bytes(key_pem)
        thumb_setting = thumbprint
    settings = Settings(
        app_id=APP_ID,
        app_tenant_id=TENANT,
        certificate_path=str(path),
        certificate_thumbprint=thumb_setting,
    )
    http = aad.msal_http_client()
    try:
        provider = build_token_provider(settings, cloud, http_client=http)
        assert await provider.get_token() == "fake-bot-token-1"
        assert "PRIVATE KEY" not in repr(provider)
    finally:
        http.close()
    assert aad.token_requests[0]["auth"] == "certificate"


async def test_msal_certificate_not_registered_is_refused(
    aad: FakeAAD, tmp_path: Path, cert_material: tuple[bytes, bytes, str]
):
    key_pem, cert_pem, _ = cert_material
    cloud = _cloud(aad)
    other = self_signed_certificate(generate_key().private_key)
    aad.register_client(APP_ID, scope=cloud.token_scope, certificate=other)
    path = tmp_path / "bot.pem"
    path.write_bytes(key_pem + cert_pem)
    settings = Settings(app_id=APP_ID, app_tenant_id=TENANT, certificate_path=str(path))
    http = aad.msal_http_client()
    try:
        provider = build_token_provider(settings, cloud, http_client=http)
        with pytest.raises(TokenUnavailable) as info:
            await provider.get_token()
    finally:
        http.close()
    assert "invalid_client" in str(info.value)
    assert "PRIVATE KEY" not in str(info.value)


async def test_msal_user_assigned_managed_identity(aad: FakeAAD, monkeypatch):
    for name, value in aad.msi_environment().items():
        monkeypatch.setenv(name, value)
    for name in ("IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET"):
        monkeypatch.delenv(name, raising=False)
    cloud = _cloud(aad)
    settings = Settings(app_id=APP_ID, app_type="UserAssignedMSI")
    http = aad.msal_http_client()
    try:
        provider = build_token_provider(settings, cloud, http_client=http)
        tokens = await asyncio.gather(*(provider.get_token() for _ in range(10)))
    finally:
        http.close()
    assert set(tokens) == {"fake-msi-token-1"}
    assert aad.msi_requests == [{"resource": "https://api.botframework.com", "client_id": APP_ID}]


# ---- a token endpoint that takes the request and never answers ----------------------------

async def test_a_hung_token_endpoint_fails_at_the_deadline_and_the_next_attempt_is_fresh(
        aad: FakeAAD, caplog: pytest.LogCaptureFixture) -> None:
    cloud = _cloud(aad)
    aad.register_client(APP_ID, scope=cloud.token_scope, secret=SECRET)
    settings = Settings(app_id=APP_ID, app_password=SECRET, app_tenant_id=TENANT)
    clock = Clock()
    http = aad.msal_http_client()
    aad.hang = True
    try:
        provider = build_token_provider(settings, cloud, http_client=http, clock=clock,
                                        deadline=0.5)
        with caplog.at_level(logging.WARNING, logger="proactive.teams.credentials"):
            # Every caller gets its answer (TokenUnavailable), none waits on the hung one.
            results = await asyncio.gather(*(provider.get_token() for _ in range(5)),
                                           return_exceptions=True)
        assert all(isinstance(r, TokenUnavailable) for r in results), results
        assert {r.code for r in results if isinstance(r, TokenUnavailable)} == {"Timeout"}
        assert aad.hung_requests == 1
        warnings = [r for r in caplog.records if r.name == "proactive.teams.credentials"]
        assert [r.levelno for r in warnings] == [logging.WARNING]
        assert aad.authority_host in warnings[0].getMessage()
        assert SECRET not in caplog.text

        # Entra ID answers again: after the retry interval, a new request gets a token.
        aad.hang = False
        clock.advance(RETRY_INTERVAL + 1)
        assert await provider.get_token() == "fake-bot-token-1"
        assert provider.acquisitions == 2
    finally:
        http.close()


async def test_a_hung_managed_identity_endpoint_fails_at_the_deadline(
        aad: FakeAAD, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in aad.msi_environment().items():
        monkeypatch.setenv(name, value)
    for name in ("IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(app_id=APP_ID, app_type="UserAssignedMSI")
    clock = Clock()
    http = aad.msal_http_client()
    aad.hang = True
    try:
        provider = build_token_provider(settings, _cloud(aad), http_client=http, clock=clock,
                                        deadline=0.5)
        with pytest.raises(TokenUnavailable) as info:
            await provider.get_token()
        assert "127.0.0.1" in info.value.detail and info.value.code == "Timeout"
        aad.hang = False
        clock.advance(RETRY_INTERVAL + 1)
        assert await provider.get_token() == "fake-msi-token-1"
    finally:
        http.close()
