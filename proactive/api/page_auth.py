"""Who may read the operations page's data in Azure: App Service built-in
authentication ("Easy Auth") with Entra ID, and an app role.

The page's data routes (`/api/ui/data/...`) are anonymous to the Functions
host (a browser holds no Functions key) and are served only when the platform
says authentication is on (WEBSITE_AUTH_ENABLED, set by App Service itself):
then App Service has signed the user in and passes who it is in the
`X-MS-CLIENT-PRINCIPAL` header (base64 JSON: `auth_typ`, `claims` [{typ, val}],
`role_typ`), after removing any such header a client sent. Without it the
header could be forged, so the routes answer 404 and the page falls back to
the keyed API. Documents: learn.microsoft.com/azure/app-service/
configure-authentication-user-identities ("Access user claims in app code").
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from proactive.api.problems import Problem
from proactive.config import Settings

HEADER = "X-MS-CLIENT-PRINCIPAL"
ROLE_TYPES = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
MAX_HEADER = 16 * 1024


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]


def principal(raw: str) -> Principal | None:
    """The signed-in user App Service describes, or None (absent or unreadable)."""
    if not raw or len(raw) > MAX_HEADER:
        return None
    try:
        data = json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        return None
    claims = [c for c in data["claims"] if isinstance(c, dict)]
    role_types = {*ROLE_TYPES, str(data.get("role_typ") or "")}
    name_type = str(data.get("name_typ") or "name")
    roles = frozenset(str(c.get("val")) for c in claims if c.get("typ") in role_types)
    name = next((str(c.get("val")) for c in claims if c.get("typ") in (name_type, "name")), "")
    return Principal(name, roles)


def authentication_on(env: Mapping[str, str] = os.environ) -> bool:
    """What App Service says (it sets WEBSITE_AUTH_ENABLED itself; no app setting)."""
    return (env.get("WEBSITE_AUTH_ENABLED") or "").strip().lower() == "true"


def check(settings: Settings, headers: Mapping[str, str]) -> Principal:
    """The user, if the page may show them data; else the problem to answer."""
    if not authentication_on():
        raise Problem(404, "sign-in-off", "App Service authentication is not on for this app: "
                      "the page reads the keyed API (README \"Operations page\")")
    user = principal(headers.get(HEADER, ""))
    if user is None:
        raise Problem(401, "sign-in", "sign in first: /.auth/login/aad")
    if settings.page_role not in user.roles:
        raise Problem(403, "forbidden", f"the app role {settings.page_role!r} is needed")
    return user
