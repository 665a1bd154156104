"""Cloud presets: where tokens come from and where the bot's token may go.

Plain data only (no network, no heavy imports): `function_app` resolves the
cloud at cold start. Values from the Bot Framework authentication spec and the
Teams docs (see docs: Public/GCC share the public Bot Framework; GCC High and
DoD use the US Government one).

`PROACTIVE_CLOUD_OVERRIDE` (`Settings.cloud_override`) is a TEST-ONLY JSON object
whose keys replace fields of the preset, e.g. to point the OpenID metadata at a
loopback server::

    {"openid_metadata_url": "http://127.0.0.1:5555/v1/.well-known/openidconfiguration",
     "add_connector_hosts": ["127.0.0.1:8443"]}

`connector_hosts` replaces the host set; `add_connector_hosts` extends it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from proactive.errors import ConfigError


class Settings(Protocol):
    """The two settings that pick a cloud (proactive.config.Settings has them)."""

    @property
    def cloud(self) -> str: ...

    @property
    def cloud_override(self) -> str: ...

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cloud:
    name: str
    # Inbound: tokens the Bot Connector sends to the bot.
    openid_metadata_url: str
    issuer: str
    # Outbound: the bot's own token (client credentials / managed identity).
    token_authority: str
    multi_tenant_authority_tenant: str
    token_scope: str
    msi_resource: str
    # Hosts the bot's token may be sent to: exact, lowercase `host` or `host:port`.
    connector_hosts: frozenset[str]
    # For a tenant whose serviceUrl is not known yet.
    global_service_url: str
    # Where to retry, once, when Teams answers 403 InvalidBotApiHost (a tenant
    # of another environment of this cloud: GCC behind the public host).
    # "" when the cloud has none: then that answer is a permanent failure.
    fallback_service_url: str = ""
    # Microsoft Graph (installs, group members, UPN lookups): its own token,
    # scope `{graph_url}/.default`, sent to this host only.
    graph_url: str = "https://graph.microsoft.com"


_PUBLIC_HOSTS = frozenset(
    {
        "smba.trafficmanager.net",
        "smba.onyx.prod.teams.trafficmanager.net",
        "smba.infra.gcc.teams.microsoft.com",
    }
)

PUBLIC = Cloud(
    name="Public",
    openid_metadata_url="https://login.botframework.com/v1/.well-known/openidconfiguration",
    issuer="https://api.botframework.com",
    token_authority="https://login.microsoftonline.com",
    multi_tenant_authority_tenant="botframework.com",
    token_scope="https://api.botframework.com/.default",
    msi_resource="https://api.botframework.com",
    connector_hosts=_PUBLIC_HOSTS,
    global_service_url="https://smba.trafficmanager.net/teams/",
    fallback_service_url="https://smba.infra.gcc.teams.microsoft.com/teams",
)

GCC = dataclasses.replace(
    PUBLIC,
    name="GCC",
    global_service_url="https://smba.infra.gcc.teams.microsoft.com/teams",
)

GCC_HIGH = Cloud(
    name="GCCHigh",
    openid_metadata_url="https://login.botframework.azure.us/v1/.well-known/openidconfiguration",
    issuer="https://api.botframework.us",
    token_authority="https://login.microsoftonline.us",
    multi_tenant_authority_tenant="MicrosoftServices.onmicrosoft.us",
    token_scope="https://api.botframework.us/.default",
    msi_resource="https://api.botframework.us",
    connector_hosts=frozenset({"smba.infra.gov.teams.microsoft.us"}),
    global_service_url="https://smba.infra.gov.teams.microsoft.us/teams",
    fallback_service_url="",
    graph_url="https://graph.microsoft.us",
)

DOD = dataclasses.replace(
    GCC_HIGH,
    name="DoD",
    graph_url="https://dod-graph.microsoft.us",
    connector_hosts=frozenset({"smba.infra.dod.teams.microsoft.us"}),
    global_service_url="https://smba.infra.dod.teams.microsoft.us/teams",
)

CLOUDS: dict[str, Cloud] = {c.name.lower(): c for c in (PUBLIC, GCC, GCC_HIGH, DOD)}

_STRING_FIELDS = frozenset(
    f.name for f in dataclasses.fields(Cloud) if f.name not in {"connector_hosts"}
)


def _hosts(value: Any, key: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(h, str) and h for h in value):
        raise ConfigError(f"PROACTIVE_CLOUD_OVERRIDE: {key} must be a list of host names")
    return frozenset(h.strip().lower() for h in value)


def _override_changes(cloud: Cloud, override: str) -> dict[str, Any]:
    """The fields the JSON object `override` replaces; ConfigError if it can't be used."""
    try:
        data = json.loads(override)
    except ValueError as exc:
        raise ConfigError("PROACTIVE_CLOUD_OVERRIDE is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ConfigError("PROACTIVE_CLOUD_OVERRIDE must be a JSON object")
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key == "connector_hosts":
            changes["connector_hosts"] = _hosts(value, key)
        elif key == "add_connector_hosts":
            continue  # applied below, after a possible replacement
        elif key in _STRING_FIELDS:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"PROACTIVE_CLOUD_OVERRIDE: {key} must be a non-empty string")
            changes[key] = value
        else:
            raise ConfigError(f"PROACTIVE_CLOUD_OVERRIDE: unknown field {key!r}")
    if "add_connector_hosts" in data:
        base = changes.get("connector_hosts", cloud.connector_hosts)
        added = _hosts(data["add_connector_hosts"], "add_connector_hosts")
        changes["connector_hosts"] = base | added
    return changes


def apply_override(cloud: Cloud, override: str) -> Cloud:
    """Return `cloud` with the fields of the JSON object `override` replaced."""
    changes = _override_changes(cloud, override)
    result = dataclasses.replace(cloud, **changes)
    log.warning(
        "PROACTIVE_CLOUD_OVERRIDE is active (TEST ONLY, never in production): "
        "cloud %s fields overridden: %s",
        cloud.name,
        ", ".join(sorted(json.loads(override))) or "(none)",
    )
    return result


def _preset(settings: Settings) -> Cloud:
    name = (settings.cloud or "Public").strip().lower()
    try:
        return CLOUDS[name]
    except KeyError:
        raise ConfigError(
            f"PROACTIVE_CLOUD must be one of Public, GCC, GCCHigh, DoD; got {settings.cloud!r}"
        ) from None


def check_cloud(settings: Settings) -> list[str]:
    """What is wrong with the cloud settings (for `Settings.problems`), without logging."""
    try:
        cloud = _preset(settings)
        if settings.cloud_override.strip():
            _override_changes(cloud, settings.cloud_override)
    except ConfigError as exc:
        return list(exc.problems)
    return []


def resolve_cloud(settings: Settings) -> Cloud:
    """The cloud preset named by `settings.cloud`, with the test-only override applied."""
    cloud = _preset(settings)
    if settings.cloud_override.strip():
        cloud = apply_override(cloud, settings.cloud_override)
    return cloud
