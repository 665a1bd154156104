"""Settings, read once per process from the environment (app settings in Azure,
`local.settings.json` Values locally).

Every setting has one name, documented in README.md. Nothing here imports a
heavy library: `function_app` imports this module at cold start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEV_STORAGE = "UseDevelopmentStorage=true"
# Azurite's well-known development account (public, documented by Microsoft).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
    "K1SZFPTOtr/KBHBeksoGMGw=="
)

_TRUE = {"1", "true", "yes", "on"}


class ConfigError(ValueError):
    """A setting is missing or has a value that can't be used."""


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in _TRUE


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from exc


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    value = env.get(name) or ""
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    storage_connection: str = field(default=DEV_STORAGE, repr=False)  # may hold a key
    outbox_queue: str = "outbox"
    # Lets several deployments (or test runs) share one storage account.
    table_prefix: str = ""

    # The bot's identity (names as in Bot Framework / Azure Bot Service).
    app_id: str = ""
    app_password: str = field(default="", repr=False)
    app_tenant_id: str = ""
    app_type: str = "SingleTenant"  # SingleTenant | MultiTenant | UserAssignedMSI
    certificate_path: str = ""
    certificate_thumbprint: str = ""

    cloud: str = "Public"  # Public | GCC | GCCHigh | DoD
    # Test-only override of the cloud preset (JSON); see README "Testing".
    cloud_override: str = ""
    allowed_tenants: tuple[str, ...] = ()

    # Accept activities without a token from loopback serviceUrls only.
    local_dev: bool = False

    default_timezone: str = "UTC"
    # Teams' limit is 100 KB of the activity measured as UTF-16.
    max_activity_bytes: int = 100 * 1024
    welcome_enabled: bool = True
    # Teams allows 50 requests/s per app per tenant (older docs said 30).
    tenant_rps: float = 50.0
    max_attempts: int = 8
    # How long a worker's claim on a delivery holds before another may retry it.
    # Its holder keeps trying to write Teams' answer for 90 % of it (through a
    # storage outage); as long as host.json's functionTimeout (5 min), so no
    # live invocation's claim is ever taken over. A crashed worker's message
    # comes back after the queue's lease anyway (minutes in Azure).
    claim_lease_seconds: int = 300

    @property
    def has_credentials(self) -> bool:
        return bool(self.app_password or self.certificate_path) or (
            self.app_type == "UserAssignedMSI" and bool(self.app_id)
        )

    def table_name(self, base: str) -> str:
        return f"{self.table_prefix}{base}"

    @property
    def poison_queue(self) -> str:
        return f"{self.outbox_queue}-poison"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            storage_connection=env.get("AzureWebJobsStorage") or DEV_STORAGE,
            outbox_queue=env.get("OUTBOX_QUEUE") or "outbox",
            table_prefix=env.get("PROACTIVE_TABLE_PREFIX", ""),
            app_id=env.get("MicrosoftAppId", ""),
            app_password=env.get("MicrosoftAppPassword", ""),
            app_tenant_id=env.get("MicrosoftAppTenantId", ""),
            app_type=env.get("MicrosoftAppType") or "SingleTenant",
            certificate_path=env.get("MicrosoftAppCertificatePath", ""),
            certificate_thumbprint=env.get("MicrosoftAppCertificateThumbprint", ""),
            cloud=env.get("PROACTIVE_CLOUD") or "Public",
            cloud_override=env.get("PROACTIVE_CLOUD_OVERRIDE", ""),
            allowed_tenants=_list(env, "PROACTIVE_ALLOWED_TENANTS"),
            local_dev=_flag(env, "PROACTIVE_LOCAL_DEV"),
            default_timezone=env.get("PROACTIVE_DEFAULT_TIMEZONE") or "UTC",
            max_activity_bytes=_int(env, "PROACTIVE_MAX_ACTIVITY_BYTES", 100 * 1024),
            welcome_enabled=_flag(env, "PROACTIVE_WELCOME", default=True),
            tenant_rps=float(_int(env, "PROACTIVE_TENANT_RPS", 50)),
            max_attempts=_int(env, "PROACTIVE_MAX_ATTEMPTS", 8),
            claim_lease_seconds=_int(env, "PROACTIVE_CLAIM_LEASE_SECONDS", 300),
        )
