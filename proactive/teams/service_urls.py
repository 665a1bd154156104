"""Which serviceUrls the bot may call, and so send its token to.

The bot's token goes to whatever serviceUrl it calls, and serviceUrls come from
activities and stored references. Only https URLs whose host is, exactly, one of
the cloud's connector hosts are allowed (a suffix match such as
`*.trafficmanager.net` is unsafe: anyone can register a name there).

In local-dev mode, the configured local Connectors (the Agents Playground's,
the Connector emulator's: PROACTIVE_LOCAL_CONNECTOR) are allowed too, on any
loopback address (127.0.0.0/8, localhost, ::1) with their scheme and port, and
no other loopback port: a serviceUrl planted in a reference must not make the
worker a blind client of any service on the developer's machine. Callers must
NOT attach a token to those (see `is_loopback`).

The URL is parsed strictly here and cross-checked against `urllib.parse`, so a
URL that two parsers could read differently (userinfo, backslashes, whitespace,
percent-encoded or non-ASCII hosts) is refused rather than interpreted.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from proactive.errors import UntrustedServiceUrl

if TYPE_CHECKING:
    from proactive.teams.clouds import Cloud

MAX_URL_LENGTH = 2048

_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_HOST_PORT = re.compile(r"([A-Za-z0-9.-]+)(?::([0-9]{1,5}))?")
_IPV6_PORT = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::([0-9]{1,5}))?")
_DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class _Parsed:
    scheme: str
    host: str  # lowercase; IPv6 without brackets
    port: int | None  # None when absent or the scheme's default

    @property
    def host_key(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def _parse(url: object) -> _Parsed | None:
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
        return None
    # Printable ASCII only: no whitespace/control characters (which urllib
    # silently strips), no IDN or look-alike characters.
    if not _PRINTABLE_ASCII.fullmatch(url) or "\\" in url:
        return None
    m = _SCHEME.match(url)
    if m is None:
        return None
    scheme = m.group(1).lower()
    rest = url[m.end() :]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority or "%" in authority:
        return None
    hm = _IPV6_PORT.fullmatch(authority) or _HOST_PORT.fullmatch(authority)
    if hm is None:
        return None
    host = hm.group(1).lower()
    if not host or host.startswith(".") or host.endswith(".") or ".." in host:
        return None
    port: int | None = None
    if hm.group(2) is not None:
        port = int(hm.group(2))
        if not 0 < port < 65536:
            return None
        if port == _DEFAULT_PORTS.get(scheme):
            port = None
    # Defence in depth: the standard parser must read the same host and port.
    try:
        split = urlsplit(url)
        std_port = split.port
    except ValueError:
        return None
    if (split.hostname or "") != host or (std_port or None) not in (
        port,
        _DEFAULT_PORTS.get(scheme),
    ):
        return None
    return _Parsed(scheme, host, port)


def _host_is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback(url: str) -> bool:
    """True for a well-formed http(s) URL on 127.0.0.0/8, localhost or ::1."""
    parsed = _parse(url)
    return (
        parsed is not None
        and parsed.scheme in ("http", "https")
        and _host_is_loopback(parsed.host)
    )


def local_connector_key(url: str) -> str | None:
    """`scheme:port` of an http(s) URL on a loopback host, else None: what a
    serviceUrl must share with a configured local Connector."""
    parsed = _parse(url)
    if parsed is None or parsed.scheme not in ("http", "https") \
            or not _host_is_loopback(parsed.host):
        return None
    return f"{parsed.scheme}:{parsed.port or _DEFAULT_PORTS[parsed.scheme]}"


def _describe(url: object) -> str:
    text = repr(url)
    return text if len(text) <= 120 else text[:117] + "..."


def check_service_url(url: str, cloud: Cloud, *, local_dev: bool,
                      local_connectors: Collection[str] = ()) -> bool:
    """Raise UntrustedServiceUrl unless the bot may call `url`; return whether
    the bot's token may go there.

    Allowed with the token: https on one of `cloud.connector_hosts` (exact
    host, or `host:port` entries from a test override), default port only
    otherwise. Allowed without it, with `local_dev` only: a loopback URL with
    the scheme and port of one of `local_connectors`.
    """
    parsed = _parse(url)
    if parsed is None:
        raise UntrustedServiceUrl(f"malformed or ambiguous serviceUrl {_describe(url)}")
    if parsed.scheme == "https" and parsed.host_key in cloud.connector_hosts:
        return True
    if local_dev and parsed.scheme in ("http", "https") and _host_is_loopback(parsed.host):
        key = local_connector_key(url)
        if key is not None and key in {local_connector_key(c) for c in local_connectors}:
            return False
        raise UntrustedServiceUrl(f"serviceUrl {_describe(url)} is on loopback but not the "
                                  f"configured local Connector (PROACTIVE_LOCAL_CONNECTOR)")
    if parsed.scheme != "https":
        raise UntrustedServiceUrl(f"serviceUrl must use https: {_describe(url)}")
    raise UntrustedServiceUrl(
        f"serviceUrl host is not a {cloud.name} connector host: {_describe(url)}"
    )


def check_graph_url(url: str, cloud: Cloud, *, local_dev: bool) -> bool:
    """Raise UntrustedServiceUrl unless `url` is on the cloud's Graph host;
    return whether the Graph token may go there (https on exactly that host).
    With `local_dev` only, loopback is allowed too, without the token."""
    parsed, graph = _parse(url), _parse(cloud.graph_url)
    if parsed is None:
        raise UntrustedServiceUrl(f"malformed or ambiguous Graph URL {_describe(url)}")
    if graph is not None and parsed.scheme == "https" == graph.scheme \
            and parsed.host_key == graph.host_key:
        return True
    if local_dev and parsed.scheme in ("http", "https") and _host_is_loopback(parsed.host):
        return False
    raise UntrustedServiceUrl(f"not the {cloud.name} Graph host: {_describe(url)}")
