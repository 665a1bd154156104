"""Id-shaped settings, checked at start (README "Settings").

An app id, a tenant id or an allow-list entry that isn't a GUID can never
match what Teams, Entra ID or storage say (they speak GUIDs), so the app
would start and then refuse every activity and send, or get 401 for every
token, with no line naming the setting. Each problem names the setting and
the entry it can't use; none of these settings is a secret, and the
entry is shortened all the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# 8-4-4-4-12 hex digits, as Entra ID writes app (client) ids and tenant ids.
GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
ALLOWED_TENANTS = "PROACTIVE_ALLOWED_TENANTS"


def _shown(value: str) -> str:
    return repr(value[:100] + ("..." if len(value) > 100 else ""))


def _guid(name: str, value: str, what: str) -> list[str]:
    value = value.strip()
    if not value or GUID.fullmatch(value):
        return []
    return [f"{name} must be {what} (a GUID like 00000000-0000-0000-0000-000000000000), "
            f"got {_shown(value)}"]


def allowed_tenant_problems(raw: str) -> list[str]:
    """PROACTIVE_ALLOWED_TENANTS: tenant ids separated by commas (spaces around
    them allowed). Every entry that isn't one is named, with a hint for the
    usual mistakes (';' as separator, braces, a domain name)."""
    found = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry or GUID.fullmatch(entry):
            continue
        hint = ""
        if ";" in entry or " " in entry:
            hint = ": separate tenant ids with commas"
        elif entry.startswith("{") or entry.endswith("}"):
            hint = ": write the GUID without braces"
        elif "." in entry:
            hint = ": a domain name can't be checked, give the tenant id (GUID)"
        found.append(f"{ALLOWED_TENANTS} entry {_shown(entry)} is not a tenant id (GUID)"
                     f"{hint}")
    return found


# What each GUID-shaped setting holds (README "Settings").
WHAT = {"MicrosoftAppId": "the bot's app (client) id", "MicrosoftAppTenantId": "a tenant id",
        "PROACTIVE_API_TENANT": "a tenant id",
        "AzureWebJobsStorage__clientId": "the managed identity's client id"}


def id_problems(values: Mapping[str, str], allowed_tenants: Iterable[str]) -> list[str]:
    """Every id-shaped setting that can't be used, by name: `values` maps a
    setting of WHAT to its value; `allowed_tenants` is the allow-list's entries."""
    found = [problem for name, value in values.items()
             for problem in _guid(name, value, WHAT[name])]
    return found + allowed_tenant_problems(",".join(allowed_tenants))
