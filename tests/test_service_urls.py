"""The serviceUrl allow-list: the bot's token only goes to exact connector hosts."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proactive.errors import UntrustedServiceUrl
from proactive.teams.clouds import DOD, GCC, GCC_HIGH, PUBLIC, apply_override
from proactive.teams.service_urls import check_service_url, is_loopback

ALLOWED_PUBLIC = [
    "https://smba.trafficmanager.net/teams/",
    "https://smba.trafficmanager.net/amer/",
    "https://smba.trafficmanager.net/emea/a1b2c3d4-tenant/",
    "https://smba.trafficmanager.net",
    "https://smba.onyx.prod.teams.trafficmanager.net/amer/",
    "https://smba.infra.gcc.teams.microsoft.com/teams",
    "https://SMBA.TrafficManager.NET/teams/",  # hosts are case-insensitive
    "HTTPS://smba.trafficmanager.net/teams/",
    "https://smba.trafficmanager.net:443/teams/",  # explicit default port
    "https://smba.trafficmanager.net/teams/?x=1",
]

REFUSED_ALWAYS = [
    "https://smba.trafficmanager.net.evil.com/",
    "https://evil.com/smba.trafficmanager.net/",
    "https://evil.com/?https://smba.trafficmanager.net/",
    "https://user@smba.trafficmanager.net@evil.com/",
    "https://smba.trafficmanager.net@evil.com/",
    "https://user:pass@smba.trafficmanager.net/",
    "https://evil.com#@smba.trafficmanager.net/",
    "https://smba.trafficmanager.net\\@evil.com/",
    "https://evil.com\\smba.trafficmanager.net/",
    "https:\\\\smba.trafficmanager.net/",
    "https://smba.trafficmanager.net:8443/teams/",
    "https://smba.trafficmanager.net:80/teams/",
    "https://smba.trafficmanager.net:/teams/",
    "https://smba.trafficmanager.net:0/",
    "https://smba.trafficmanager.net:99999/",
    "http://smba.trafficmanager.net/teams/",
    "ftp://smba.trafficmanager.net/",
    "//smba.trafficmanager.net/teams/",
    "smba.trafficmanager.net/teams/",
    "https://smba.trafficmanager.net./teams/",  # trailing dot: not the exact name
    "https://.smba.trafficmanager.net/",
    "https://evil.trafficmanager.net/",
    "https://smba-trafficmanager.net/",
    "https://xsmba.trafficmanager.net/",
    "https://smba.trafficmanager.net%2eevil.com/",
    "https://smba%2Etrafficmanager.net/",
    "https://smba.trafficmаnager.net/",  # Cyrillic 'а'
    "https://smba.trafficmanager.net\u3002evil.com/",  # ideographic full stop
    "https://ｓmba.trafficmanager.net/",  # fullwidth s
    "https://xn--smba-trafficmanager-net.com/",
    "https://smba.trafficmanager.net /teams/",
    "https://smba.traffic\tmanager.net/",  # urllib would strip the tab
    "https://smba.traffic\nmanager.net/",
    " https://smba.trafficmanager.net/",
    "",
    "https://",
    "https:///teams/",
    "https://" + "a" * 3000 + ".smba.trafficmanager.net/",
]


@pytest.mark.parametrize("url", ALLOWED_PUBLIC)
def test_public_connector_hosts_are_allowed(url: str) -> None:
    check_service_url(url, PUBLIC, local_dev=False)
    check_service_url(url, GCC, local_dev=False)
    assert not is_loopback(url)


@pytest.mark.parametrize("url", REFUSED_ALWAYS)
def test_tricky_urls_are_refused(url: str) -> None:
    with pytest.raises(UntrustedServiceUrl):
        check_service_url(url, PUBLIC, local_dev=False)


@pytest.mark.parametrize("url", REFUSED_ALWAYS)
def test_tricky_urls_are_refused_in_local_dev_too(url: str) -> None:
    with pytest.raises(UntrustedServiceUrl):
        check_service_url(url, PUBLIC, local_dev=True)


def test_non_string_is_refused() -> None:
    with pytest.raises(UntrustedServiceUrl):
        check_service_url(None, PUBLIC, local_dev=True)  # type: ignore[arg-type]
    with pytest.raises(UntrustedServiceUrl):
        check_service_url(
            b"https://smba.trafficmanager.net/",  # type: ignore[arg-type]
            PUBLIC,
            local_dev=False,
        )


def test_each_cloud_only_allows_its_own_hosts() -> None:
    gov = "https://smba.infra.gov.teams.microsoft.us/teams"
    dod = "https://smba.infra.dod.teams.microsoft.us/teams"
    public = "https://smba.trafficmanager.net/teams/"
    check_service_url(gov, GCC_HIGH, local_dev=False)
    check_service_url(dod, DOD, local_dev=False)
    for url, cloud in [(gov, PUBLIC), (dod, GCC_HIGH), (public, DOD), (public, GCC_HIGH)]:
        with pytest.raises(UntrustedServiceUrl):
            check_service_url(url, cloud, local_dev=False)


def test_global_service_urls_pass_their_own_cloud() -> None:
    for cloud in (PUBLIC, GCC, GCC_HIGH, DOD):
        check_service_url(cloud.global_service_url, cloud, local_dev=False)


LOOPBACK = [
    "http://localhost:56150/_connector",
    "http://LOCALHOST:56150/_connector",
    "http://127.0.0.1:3978/",
    "https://127.0.0.1:8443/",
    "http://127.1.2.3/",
    "http://[::1]:56150/_connector",
    "http://localhost/",
    "https://localhost/",
    "https://[::1]/",
]

NOT_LOOPBACK = [
    "http://localhost.evil.com/",
    "http://127.0.0.1.evil.com/",
    "http://evil.com/127.0.0.1/",
    "http://user@127.0.0.1/",
    "http://evil.com@127.0.0.1/",
    "http://127.0.0.1@evil.com/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://127.1/",
    "http://[::ffff:7f00:1]/",
    "http://10.0.0.1/",
    "http://0.0.0.0/",
    "ws://127.0.0.1/",
    "http://localhost\\@evil.com/",
]


@pytest.mark.parametrize("url", LOOPBACK)
def test_loopback_is_allowed_only_in_local_dev(url: str) -> None:
    assert is_loopback(url)
    # The configured local Connector is this URL's scheme and port on loopback.
    connector = re.sub(r"//[^/]+", "//127.0.0.1" + (f":{urlsplit(url).port}"
                                                    if urlsplit(url).port else ""), url)
    assert check_service_url(url, PUBLIC, local_dev=True, local_connectors=[connector]) is False
    with pytest.raises(UntrustedServiceUrl):
        check_service_url(url, PUBLIC, local_dev=False, local_connectors=[connector])


@pytest.mark.parametrize("url", LOOPBACK)
def test_in_local_dev_only_the_configured_local_connector_is_called(url: str) -> None:
    # A serviceUrl planted in a reference can't reach another service on the machine.
    for connectors in ([], ["http://localhost:1"], ["https://localhost:56150"]
                       if url.startswith("http:") else ["http://localhost:8443"]):
        with pytest.raises(UntrustedServiceUrl, match="PROACTIVE_LOCAL_CONNECTOR"):
            check_service_url(url, PUBLIC, local_dev=True, local_connectors=connectors)


@pytest.mark.parametrize("url", NOT_LOOPBACK)
def test_not_loopback(url: str) -> None:
    assert not is_loopback(url)
    with pytest.raises(UntrustedServiceUrl):
        check_service_url(url, PUBLIC, local_dev=True)


def test_override_can_add_an_exact_host_with_port() -> None:
    cloud = apply_override(PUBLIC, '{"add_connector_hosts": ["127.0.0.1:8443"]}')
    check_service_url("https://127.0.0.1:8443/teams/", cloud, local_dev=False)
    check_service_url("https://smba.trafficmanager.net/teams/", cloud, local_dev=False)
    for url in ("http://127.0.0.1:8443/", "https://127.0.0.1:8444/", "https://127.0.0.1/"):
        with pytest.raises(UntrustedServiceUrl):
            check_service_url(url, cloud, local_dev=False)


def test_error_message_is_bounded() -> None:
    url = "https://evil.com/" + "x" * 5000
    with pytest.raises(UntrustedServiceUrl) as info:
        check_service_url(url, PUBLIC, local_dev=False)
    assert len(str(info.value)) < 300


HOSTS = sorted(PUBLIC.connector_hosts)


@given(
    prefix=st.text(max_size=12),
    suffix=st.text(max_size=12),
    host=st.sampled_from(HOSTS),
)
def test_anything_around_a_real_host_is_refused(prefix: str, suffix: str, host: str) -> None:
    """Whatever is glued around a connector host, the result is allowed only if
    the actual host (as the standard parser reads it) is that exact host."""
    from urllib.parse import urlsplit

    url = f"https://{prefix}{host}{suffix}/teams/"
    try:
        check_service_url(url, PUBLIC, local_dev=False)
    except UntrustedServiceUrl:
        return
    split = urlsplit(url)
    assert split.scheme == "https"
    assert split.hostname in PUBLIC.connector_hosts
    assert split.port in (None, 443)
    assert split.username is None and split.password is None
    assert url.isascii() and "\\" not in url


# -- cloud presets and the test-only override ------------------------------------


def test_resolve_cloud_by_name_case_insensitively() -> None:
    from proactive.config import Settings
    from proactive.teams.clouds import resolve_cloud

    assert resolve_cloud(Settings(cloud="public")) is PUBLIC
    assert resolve_cloud(Settings(cloud="GCC")) is GCC
    assert resolve_cloud(Settings(cloud="gcchigh")) is GCC_HIGH
    assert resolve_cloud(Settings(cloud="DOD")) is DOD
    assert resolve_cloud(Settings(cloud="")) is PUBLIC


@pytest.mark.parametrize("name", ["Azure", "China", "GCC-High", "publicx"])
def test_unknown_cloud_is_a_config_error(name: str) -> None:
    from proactive.config import Settings
    from proactive.errors import ConfigError
    from proactive.teams.clouds import resolve_cloud

    with pytest.raises(ConfigError):
        resolve_cloud(Settings(cloud=name))


def test_presets_follow_the_facts() -> None:
    assert PUBLIC.issuer == GCC.issuer == "https://api.botframework.com"
    assert GCC_HIGH.issuer == DOD.issuer == "https://api.botframework.us"
    assert PUBLIC.openid_metadata_url == (
        "https://login.botframework.com/v1/.well-known/openidconfiguration"
    )
    assert DOD.openid_metadata_url == (
        "https://login.botframework.azure.us/v1/.well-known/openidconfiguration"
    )
    assert GCC_HIGH.connector_hosts == {"smba.infra.gov.teams.microsoft.us"}
    assert DOD.connector_hosts == {"smba.infra.dod.teams.microsoft.us"}
    assert "smba.infra.gcc.teams.microsoft.com" in PUBLIC.connector_hosts
    assert GCC.global_service_url == "https://smba.infra.gcc.teams.microsoft.com/teams"
    assert DOD.msi_resource == "https://api.botframework.us"


def test_override_replaces_fields_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from proactive.config import Settings
    from proactive.teams.clouds import resolve_cloud

    override = (
        '{"openid_metadata_url": "http://127.0.0.1:9/meta", '
        '"connector_hosts": ["127.0.0.1:8443"]}'
    )
    with caplog.at_level(logging.WARNING, logger="proactive.teams.clouds"):
        cloud = resolve_cloud(Settings(cloud="GCCHigh", cloud_override=override))
    assert cloud.openid_metadata_url == "http://127.0.0.1:9/meta"
    assert cloud.connector_hosts == {"127.0.0.1:8443"}
    assert cloud.issuer == GCC_HIGH.issuer
    assert "TEST ONLY" in caplog.text
    assert resolve_cloud(Settings(cloud="GCCHigh")) is GCC_HIGH  # presets untouched


@pytest.mark.parametrize(
    "override",
    [
        "not json",
        "[]",
        '{"issuer": 1}',
        '{"issuer": ""}',
        '{"connector_hosts": "smba.trafficmanager.net"}',
        '{"add_connector_hosts": [1]}',
        '{"no_such_field": "x"}',
    ],
)
def test_bad_override_is_a_config_error(override: str) -> None:
    from proactive.errors import ConfigError
    from proactive.teams.clouds import apply_override

    with pytest.raises(ConfigError):
        apply_override(PUBLIC, override)
