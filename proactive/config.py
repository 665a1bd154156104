"""Settings, read once per process from the environment (app settings in Azure,
`local.settings.json` Values locally).

Every setting has one name, documented in README.md. Nothing here imports a
heavy library: `function_app` imports this module at cold start.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from proactive.errors import ConfigError
from proactive.hosting import (  # noqa: F401 - part of config's API
    AZURE_IF_WEBSITE,
    AZURE_VARIABLES,
    azure_marker,
    running_in_azure,
)
from proactive.setting_ids import id_problems

DEV_STORAGE = "UseDevelopmentStorage=true"
# Azurite's well-known development account (public, documented by Microsoft).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
    "K1SZFPTOtr/KBHBeksoGMGw=="
)

_TRUE = {"1", "true", "yes", "on"}

# Identity-based storage, named as the Functions host names it for its own
# bindings (`<connection>__<property>`), so the app and the host read one set.
STORAGE = "AzureWebJobsStorage"
STORAGE_CREDENTIAL = f"{STORAGE}__credential"
STORAGE_CLIENT_ID = f"{STORAGE}__clientId"
STORAGE_ACCOUNT = f"{STORAGE}__accountName"
STORAGE_QUEUE_URI = f"{STORAGE}__queueServiceUri"
STORAGE_TABLE_URI = f"{STORAGE}__tableServiceUri"
STORAGE_IDENTITY = (STORAGE_CREDENTIAL, STORAGE_CLIENT_ID, STORAGE_ACCOUNT, STORAGE_QUEUE_URI,
                    STORAGE_TABLE_URI)
# Storage endpoints' DNS suffix per PROACTIVE_CLOUD, for `__accountName` alone
# (GCC tenants use Azure commercial; GCC High and DoD, Azure Government).
STORAGE_SUFFIXES = {"Public": "core.windows.net", "GCC": "core.windows.net",
                    "GCCHigh": "core.usgovcloudapi.net", "DoD": "core.usgovcloudapi.net"}

# Every setting the app reads, by name (tests/test_config.py keeps this true by
# recording what `Settings.from_env` reads; tests/test_infra.py holds the Bicep's
# app settings against it, both ways).
SETTINGS = (
    STORAGE, *STORAGE_IDENTITY, "OUTBOX_QUEUE", "PROACTIVE_TABLE_PREFIX",
    "MicrosoftAppId", "MicrosoftAppPassword", "MicrosoftAppTenantId", "MicrosoftAppType",
    "MicrosoftAppCertificatePath", "MicrosoftAppCertificateThumbprint",
    "PROACTIVE_CLOUD", "PROACTIVE_CLOUD_OVERRIDE", "PROACTIVE_ALLOWED_TENANTS",
    "PROACTIVE_LOCAL_DEV", "PROACTIVE_LOCAL_CONNECTOR", "PROACTIVE_DEFAULT_TIMEZONE",
    "PROACTIVE_MAX_ACTIVITY_BYTES",
    "PROACTIVE_WELCOME", "PROACTIVE_BOT_NAME", "PROACTIVE_TENANT_RPS", "PROACTIVE_MAX_ATTEMPTS",
    "PROACTIVE_CLAIM_LEASE_SECONDS", "PROACTIVE_MAX_CALLS_IN_FLIGHT",
    "PROACTIVE_API_AUDIENCE", "PROACTIVE_API_ROLE", "PROACTIVE_API_TENANT", "PROACTIVE_PAGE_ROLE",
    "PROACTIVE_GRAPH_APP_CATALOG_ID", "PROACTIVE_GRAPH_APP_MANIFEST_ID", "PROACTIVE_GRAPH_RPS",
)
# Read everywhere but refused in Azure (Settings.problems): never set in production.
LOCAL_ONLY = ("PROACTIVE_LOCAL_DEV", "PROACTIVE_LOCAL_CONNECTOR", "PROACTIVE_CLOUD_OVERRIDE")
# The local Connectors a local-development worker may send to: the Agents
# Playground as `python -m proactive dev` starts it, and the Connector emulator
# as `python -m proactive emulator` does. Any other loopback port is refused.
DEFAULT_LOCAL_CONNECTORS = ("http://localhost:56150", "http://localhost:3979")
PRODUCTION_SETTINGS = tuple(name for name in SETTINGS if name not in LOCAL_ONLY)


def _local_connector_problems(settings: Settings) -> list[str]:
    from proactive.teams.service_urls import local_connector_key

    if not settings.local_dev:
        return []
    return [f"PROACTIVE_LOCAL_CONNECTOR entry {url[:80]!r} is not an http(s) URL on "
            f"a loopback address (like http://localhost:56150)"
            for url in settings.local_connectors if local_connector_key(url) is None]


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in _TRUE


def _int(env: Mapping[str, str], name: str, default: int, problems: list[str]) -> int:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        problems.append(f"{name} must be a whole number, got {value[:40]!r}")
        return default


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    value = env.get(name) or ""
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    storage_connection: str = field(default=DEV_STORAGE, repr=False)  # may hold a key
    # Identity-based storage (AzureWebJobsStorage__*), used when storage_connection
    # is empty: no key anywhere, a token from azure-identity instead.
    storage_credential: str = ""  # "managedidentity", or "" for DefaultAzureCredential
    storage_client_id: str = ""  # the user-assigned identity's client id
    storage_account: str = ""  # the endpoints' fallback: https://<name>.<service>.<suffix>
    queue_service_uri: str = ""
    table_service_uri: str = ""
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
    # Local development: the loopback Connector URLs the worker may call (their
    # scheme and port; any loopback address): PROACTIVE_LOCAL_CONNECTOR.
    local_connectors: tuple[str, ...] = DEFAULT_LOCAL_CONNECTORS
    allowed_tenants: tuple[str, ...] = ()

    # Accept activities without a token from loopback serviceUrls only.
    local_dev: bool = False
    # Why the environment is an Azure instance ("" locally); see azure_marker.
    azure: str = ""

    default_timezone: str = "UTC"
    # Teams' limit is 100 KB of the activity measured as UTF-16.
    max_activity_bytes: int = 100 * 1024
    welcome_enabled: bool = True
    # The bot's name in what it writes (the welcome card).
    bot_name: str = "Proactive"
    # Teams allows 50 requests/s per app per tenant (older docs said 30).
    tenant_rps: float = 50.0
    max_attempts: int = 8
    # How long a worker's claim on a delivery holds before another may look at
    # taking it over (storage/deliveries.py): its holder starts no Connector
    # call after a quarter of it, so a live holder has Teams' answer before it
    # ends; a dead holder's user is taken over 20 s after the lease ends (a
    # live holder held up by a storage outage writes its answer first).
    claim_lease_seconds: int = 45
    # A tenant's deliveries between claim and record at once per process: the
    # most a crash of the process can leave unknown (and, resent, duplicate).
    # At Teams' ~250 ms answers 16 keep 50/s; benchmarks/in_flight.py measures it.
    max_calls_in_flight: int = 16
    # The HTTP API's optional Entra ID bearer check (README "HTTP API"): tokens
    # for this audience, from this tenant (default: the bot's), holding this app role.
    api_audience: str = ""
    api_role: str = ""
    api_tenant: str = ""
    page_role: str = "Proactive.Operations"  # the operations page's users' app role
    # Proactive install through Graph (README "Proactive install"): off unless
    # the app's catalog id, or its manifest id to look it up, is set.
    graph_app_catalog_id: str = ""
    graph_app_manifest_id: str = ""
    # Graph's Teams limit: installedApps 30 requests/s per app per tenant.
    graph_rps: float = 30.0

    @property
    def graph_install(self) -> bool:
        return bool(self.graph_app_catalog_id or self.graph_app_manifest_id)

    @property
    def has_credentials(self) -> bool:
        return bool(self.app_password or self.certificate_path) or (
            self.app_type == "UserAssignedMSI" and bool(self.app_id)
        )

    @property
    def storage_by_identity(self) -> bool:
        """Storage is reached with a token (AzureWebJobsStorage__*), not a connection string."""
        return not self.storage_connection

    def storage_url(self, service: str) -> str:
        """The endpoint of `service` ("queue" or "table") for identity-based storage:
        its __<service>ServiceUri, else made from __accountName; "" when neither."""
        explicit = {"queue": self.queue_service_uri, "table": self.table_service_uri}[service]
        if explicit:
            return explicit.rstrip("/")
        if self.storage_account:
            suffix = STORAGE_SUFFIXES.get(self.cloud, STORAGE_SUFFIXES["Public"])
            return f"https://{self.storage_account}.{service}.{suffix}"
        return ""

    def table_name(self, base: str) -> str:
        return f"{self.table_prefix}{base}"

    @property
    def poison_queue(self) -> str:
        return f"{self.outbox_queue}-poison"

    def problems(self) -> list[str]:
        """Every combination that would weaken security or can't work."""
        found: list[str] = []
        if self.azure and self.local_dev:
            found.append(f"PROACTIVE_LOCAL_DEV is on while running in Azure ({self.azure} is "
                         "set): local development mode accepts unauthenticated activities "
                         "and is refused in Azure")
        if self.azure and self.cloud_override.strip():
            found.append(f"PROACTIVE_CLOUD_OVERRIDE is for tests only and is refused when "
                         f"running in Azure ({self.azure} is set)")
        if self.local_dev and self.has_credentials:
            found.append("PROACTIVE_LOCAL_DEV is on while bot credentials are configured: "
                         "local development mode accepts unauthenticated activities and is "
                         "refused with real credentials; turn one of them off")
        if not self.local_dev and not self.app_id:
            found.append("MicrosoftAppId is not set (or set PROACTIVE_LOCAL_DEV=true for "
                         "local development without credentials)")
        if self.api_audience and not (self.api_role and (self.api_tenant or self.app_tenant_id)):
            found.append("PROACTIVE_API_AUDIENCE needs PROACTIVE_API_ROLE and a tenant "
                         "(PROACTIVE_API_TENANT or MicrosoftAppTenantId)")
        found += id_problems({"MicrosoftAppId": self.app_id,
                              "MicrosoftAppTenantId": self.app_tenant_id,
                              "PROACTIVE_API_TENANT": self.api_tenant,
                              STORAGE_CLIENT_ID: self.storage_client_id}, self.allowed_tenants)
        found += storage_problems(self)
        found += _local_connector_problems(self)
        found += _cloud_problems(self)
        found += _graph_problems(self)
        return found

    def validate(self) -> Settings:
        """These settings, or ConfigError listing every problem."""
        if found := self.problems():
            raise ConfigError(*found)
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings in `env` (default os.environ), not yet validated; ConfigError
        if a value can't be read (e.g. a number that isn't one)."""
        settings, problems = cls._read(os.environ if env is None else env)
        if problems:
            raise ConfigError(*problems)
        return settings

    @classmethod
    def _read(cls, env: Mapping[str, str]) -> tuple[Settings, list[str]]:
        problems: list[str] = []
        identity = {name: (env.get(name) or "").strip() for name in STORAGE_IDENTITY}
        connection = (env.get(STORAGE) or "").strip()
        if not connection and not any(identity.values()):
            connection = DEV_STORAGE  # nothing set: Azurite's defaults (refused in Azure)
        settings = cls(
            storage_connection=connection,
            storage_credential=identity[STORAGE_CREDENTIAL],
            storage_client_id=identity[STORAGE_CLIENT_ID],
            storage_account=identity[STORAGE_ACCOUNT],
            queue_service_uri=identity[STORAGE_QUEUE_URI],
            table_service_uri=identity[STORAGE_TABLE_URI],
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
            local_connectors=_list(env, "PROACTIVE_LOCAL_CONNECTOR") or DEFAULT_LOCAL_CONNECTORS,
            allowed_tenants=_list(env, "PROACTIVE_ALLOWED_TENANTS"),
            local_dev=_flag(env, "PROACTIVE_LOCAL_DEV"),
            default_timezone=env.get("PROACTIVE_DEFAULT_TIMEZONE") or "UTC",
            azure=azure_marker(env),
            max_activity_bytes=_int(env, "PROACTIVE_MAX_ACTIVITY_BYTES", 100 * 1024, problems),
            welcome_enabled=_flag(env, "PROACTIVE_WELCOME", default=True),
            bot_name=(env.get("PROACTIVE_BOT_NAME") or "").strip() or "Proactive",
            tenant_rps=float(_int(env, "PROACTIVE_TENANT_RPS", 50, problems)),
            max_attempts=_int(env, "PROACTIVE_MAX_ATTEMPTS", 8, problems),
            claim_lease_seconds=_int(env, "PROACTIVE_CLAIM_LEASE_SECONDS", 45, problems),
            max_calls_in_flight=_int(env, "PROACTIVE_MAX_CALLS_IN_FLIGHT", 16, problems),
            api_audience=env.get("PROACTIVE_API_AUDIENCE", "").strip(),
            api_role=env.get("PROACTIVE_API_ROLE", "").strip(),
            api_tenant=env.get("PROACTIVE_API_TENANT", "").strip(),
            page_role=env.get("PROACTIVE_PAGE_ROLE", "").strip() or "Proactive.Operations",
            graph_app_catalog_id=(env.get("PROACTIVE_GRAPH_APP_CATALOG_ID") or "").strip(),
            graph_app_manifest_id=(env.get("PROACTIVE_GRAPH_APP_MANIFEST_ID") or "").strip(),
            graph_rps=float(_int(env, "PROACTIVE_GRAPH_RPS", 30, problems)),
        )
        return settings, problems


def named_settings(problems: tuple[str, ...] | list[str]) -> list[str]:
    """The setting names `problems` mention, in order, once each. Every item is
    one of SETTINGS, so this never carries a value (a problem's text can quote
    one): what the health route may tell anyone (README "Configuration errors")."""
    found: dict[str, None] = {}
    for text in problems:
        for match in _SETTING_NAME.finditer(text):
            found.setdefault(match.group(0))
    return list(found)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The app's settings from `env` (default os.environ), validated: the one
    place settings are checked. Raises ConfigError listing every problem."""
    settings, problems = Settings._read(os.environ if env is None else env)
    problems += settings.problems()
    if problems:
        raise ConfigError(*problems)
    return settings


# A setting's name as a whole word: `AzureWebJobsStorage` does not match inside
# `AzureWebJobsStorage__accountName`. Longest first, so the longer name wins.
_NAMES = "|".join(re.escape(name) for name in sorted(SETTINGS, key=len, reverse=True))
_SETTING_NAME = re.compile(rf"(?<![\w.])(?:{_NAMES})(?!\w)")
_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")
# Loopback storage endpoints: the local emulator, never storage in Azure.
_LOOPBACK = re.compile(r"(?i)(?:^|[=/@])(?:127\.\d+\.\d+\.\d+|localhost|\[::1\])(?:[:/;]|$)")


def storage_problems(settings: Settings) -> list[str]:
    """How the app reaches storage: a connection string or the identity settings,
    one style, complete, the token only over https, no emulator in Azure."""
    found: list[str] = []
    identity = [name for name, value in zip(STORAGE_IDENTITY, (
        settings.storage_credential, settings.storage_client_id, settings.storage_account,
        settings.queue_service_uri, settings.table_service_uri), strict=True) if value]
    if settings.storage_connection and identity:
        found.append(f"{STORAGE} (a connection string) and {', '.join(identity)} (identity-based "
                     f"storage) are both set: set one of them")
        return found
    if settings.storage_connection:
        conn = settings.storage_connection
        emulator = conn.replace(" ", "").lower().rstrip(";") == DEV_STORAGE.lower() \
            or DEV_ACCOUNT in conn or bool(_LOOPBACK.search(conn))
        if settings.azure and emulator:
            found.append(f"{STORAGE} is not set (or is the local emulator), which is refused "
                         f"in Azure ({settings.azure} is set): set the identity-based "
                         f"{STORAGE}__* settings (or a connection string)")
        return found
    if settings.storage_credential and settings.storage_credential.lower() != "managedidentity":
        found.append(f"{STORAGE_CREDENTIAL} must be 'managedidentity' (or unset: "
                     f"DefaultAzureCredential), got {settings.storage_credential[:40]!r}")
    if settings.storage_account and not _ACCOUNT_NAME.fullmatch(settings.storage_account):
        found.append(f"{STORAGE_ACCOUNT} must be a storage account name (3-24 lowercase "
                     f"letters and digits), got {settings.storage_account[:40]!r}")
    for service, name in (("queue", STORAGE_QUEUE_URI), ("table", STORAGE_TABLE_URI)):
        url = settings.storage_url(service)
        if not url:
            found.append(f"{name} is not set (nor {STORAGE_ACCOUNT}): the app needs the "
                         f"{service} endpoint of its storage account")
        elif not url.lower().startswith("https://"):
            found.append(f"{name} must be an https URL (a token is never sent in clear), "
                         f"got {url[:80]!r}")
        elif settings.azure and _LOOPBACK.search(url):
            found.append(f"{name} is a loopback address, which is refused in Azure "
                         f"({settings.azure} is set)")
    return found


def _cloud_problems(settings: Settings) -> list[str]:
    from proactive.teams.clouds import check_cloud

    return check_cloud(settings)


_GRAPH_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")


def _graph_problems(settings: Settings) -> list[str]:
    """Proactive install's settings: an id Graph can take, one of the two, a sane rate."""
    found = [f"{name} must be an app id (letters, digits, '-', '.', '_'), got {value!r}"
             for name, value in (("PROACTIVE_GRAPH_APP_CATALOG_ID", settings.graph_app_catalog_id),
                                 ("PROACTIVE_GRAPH_APP_MANIFEST_ID",
                                  settings.graph_app_manifest_id))
             if value and not _GRAPH_ID.fullmatch(value)]
    if settings.graph_app_catalog_id and settings.graph_app_manifest_id:
        found.append("set PROACTIVE_GRAPH_APP_CATALOG_ID or PROACTIVE_GRAPH_APP_MANIFEST_ID, "
                     "not both")
    if not 1 <= settings.graph_rps <= 30:
        found.append("PROACTIVE_GRAPH_RPS must be 1 to 30 (Graph's Teams limit per tenant)")
    if settings.max_calls_in_flight < 1:
        found.append("PROACTIVE_MAX_CALLS_IN_FLIGHT must be at least 1")
    return found
