"""Microsoft Graph client: the few calls that reach users the bot never met.

Group members, a user by principal name, the app's catalog id, a user's
installation of the app, installing it, and the installation's chat. Before
any request the URL is checked against the cloud's Graph host (the `@odata.
nextLink` of a page too): the Graph token goes there and nowhere else; a
loopback stand-in allowed by local development mode gets no token. A call
that does not succeed raises a member of proactive.errors.

Every id or principal name put into a path is checked first (an object id is
a GUID, a principal name is `local@domain`; anything else is refused before
any call, `invalid-id`) and escaped: a principal name starting with `$` is
addressed `/users('$x@y')` as Graph's "Get user" page says, its quotes
doubled; any other is percent-encoded (`#`, `/`, `?`, `%` never reach the
path raw). The group listing is an OData cast on a transitive list, which
Graph's "Advanced query capabilities on directory objects" page lists among
the queries that need `ConsistencyLevel: eventual` and `$count=true`: both
are sent. Users are read with `accountEnabled` and `userType` (Graph's user
resource), which decide whether and how they are reached.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from proactive import telemetry
from proactive.errors import (
    DeliveryFailed,
    NoCredentials,
    Permanent,
    Reason,
    ServiceUnavailable,
    Throttled,
    UntrustedServiceUrl,
)
from proactive.teams.connector import error_code
from proactive.teams.service_urls import check_graph_url

if TYPE_CHECKING:
    import httpx

    from proactive.teams.clouds import Cloud
    from proactive.teams.credentials import BotTokenProvider

# Graph's answer while an install is still settling; it succeeds when retried.
TRANSIENT_400 = "CreateOrUpdateUserAppEntitlementForTeamsAsync"
_PAGE = 999  # Graph's largest page of directory objects
# What decides whether a user is reached (Graph's user resource): a disabled
# account is not sent to, a guest is (and reported as one).
_USER_FIELDS = "id,accountEnabled,userType"
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# A user principal name: an alias, "@", a domain; no spaces or control characters.
_UPN = re.compile(r"[^\s@]{1,113}@[A-Za-z0-9.-]{1,255}")


@dataclass(frozen=True)
class DirectoryUser:
    id: str
    enabled: bool = True  # accountEnabled (absent: as enabled)
    guest: bool = False  # userType "Guest"

    @classmethod
    def of(cls, data: dict[str, Any]) -> DirectoryUser:
        return cls(str(data["id"]), data.get("accountEnabled") is not False,
                   str(data.get("userType") or "").lower() == "guest")


def is_guid(value: str) -> bool:
    return bool(_GUID.fullmatch(value))


def is_upn(value: str) -> bool:
    return bool(_UPN.fullmatch(value))


def user_path(user: str) -> str:
    """`users/...` for an object id or a principal name, escaped; raises
    Permanent(invalid-id) for anything else (before any call)."""
    if is_guid(user):
        return f"users/{user}"
    if not is_upn(user):
        raise Permanent(Reason.INVALID_ID, "not an Azure AD object id (GUID) nor a user "
                                           "principal name: nothing was asked of Graph")
    if user.startswith("$"):  # Graph "Get user": /users('$AdeleVance@contoso.com')
        return "users('" + quote(user.replace("'", "''"), safe="@$") + "')"
    return "users/" + quote(user, safe="@")


def _literal(value: str) -> str:
    """An OData string literal's content: a quote is written twice."""
    return value.replace("'", "''")


def group_path(group: str) -> str:
    if not is_guid(group):
        raise Permanent(Reason.INVALID_ID, "a group is named by its object id (a GUID): "
                                           "nothing was asked of Graph")
    return f"groups/{group}"


# How Graph words a 403 for the app's missing permission (application "role" or
# delegated "scope"), as against one user's 403 (no licence, say).
_NO_PERMISSION = ("Missing role permissions", "Missing scope permissions")


def _message(body: bytes) -> str:
    try:
        error = json.loads(body).get("error") or {}
        return str(error.get("message") or "")[:300] if isinstance(error, dict) else ""
    except (ValueError, AttributeError):
        return ""


def to_error(status: int, body: bytes, retry_after: str | None) -> DeliveryFailed:
    code = error_code(body)
    message = _message(body)
    detail = f"Graph answered {status} {code}".strip() + (f": {message}" if message else "")
    seconds = None
    if retry_after:
        try:
            seconds = max(0.0, float(retry_after))
        except ValueError:
            seconds = None
    if status == 429:
        return Throttled(Reason.THROTTLED, detail, status=status, code=code,
                         retry_after=seconds)
    if status >= 500 or status == 408 or (status == 400 and TRANSIENT_400 in body.decode(
            errors="replace")):
        return ServiceUnavailable(Reason.UNAVAILABLE, detail, status=status, code=code,
                                  retry_after=seconds)
    if status == 403 and (message.startswith(_NO_PERMISSION)
                          or code == "Authorization_RequestDenied"):
        return Permanent(Reason.GRAPH_PERMISSION, detail + " (grant the permission and its "
                                                           "admin consent, then send again)",
                         status=status, code=code)
    reason = {400: Reason.BAD_REQUEST, 401: Reason.UNAUTHORIZED, 403: Reason.FORBIDDEN,
              404: Reason.NOT_FOUND}.get(status, Reason.HTTP_ERROR)
    return Permanent(reason, detail, status=status, code=code)


def _same_listing(link: str, prefix: str) -> bool:
    """`link` is on the host of `prefix` (scheme and port too) and its path
    starts with `prefix`'s path (Graph keeps the request's path in nextLink),
    with no dot segment that could climb out of it."""
    a, b = urlsplit(link), urlsplit(prefix)
    path = a.path.lower()
    return (a.scheme, a.netloc.lower()) == (b.scheme, b.netloc.lower()) \
        and path.startswith(b.path.lower()) and "%2e" not in path \
        and not {".", ".."} & set(path.split("/"))


class GraphClient:
    def __init__(self, http: httpx.AsyncClient, tokens: BotTokenProvider | None, cloud: Cloud,
                 *, base_url: str = "", local_dev: bool = False, timeout: float = 15.0) -> None:
        self.http = http
        self.tokens = tokens
        self.cloud = cloud
        self.base = (base_url or cloud.graph_url).rstrip("/") + "/v1.0"
        self.local_dev = local_dev
        self.timeout = timeout

    async def _call(self, method: str, url: str, body: dict[str, Any] | None = None, *,
                    advanced: bool = False) -> tuple[int, dict[str, Any]]:
        from proactive.teams.transport import request

        headers = {"Content-Type": "application/json"}
        if advanced:  # an advanced query (with $count=true in the URL)
            headers["ConsistencyLevel"] = "eventual"
        if check_graph_url(url, self.cloud, local_dev=self.local_dev):
            if self.tokens is None:
                raise NoCredentials
            headers["Authorization"] = "Bearer " + await self.tokens.get_token()
        content = json.dumps(body).encode() if body is not None else None
        # Method, host and status only: never the path (user and group ids),
        # a body or the token.
        with telemetry.span(f"Graph {method}", kind="client", **{
                "http.request.method": method,
                "server.address": urlsplit(url).hostname or ""}) as current:
            response = await request(self.http, method, url, content=content,
                                     headers=headers, timeout=self.timeout, service="Graph")
            telemetry.set_attributes(
                current, **{"http.response.status_code": response.status_code})
        if response.status_code == 409:
            return 409, {}
        if response.status_code >= 300:
            raise to_error(response.status_code, response.content,
                           response.headers.get("Retry-After"))
        try:
            data = json.loads(response.content) if response.content else {}
        except ValueError:
            data = {}
        return response.status_code, data if isinstance(data, dict) else {}

    async def group_members(self, group_id: str, next_link: str = ""
                            ) -> tuple[list[DirectoryUser], str]:
        """One page of a group's transitive user members (devices, contacts and
        groups are not users: the cast leaves them out), and the next page's link.
        A `next_link` is followed only if it is a page of this group's members
        on this Graph (the app's signature already vouches it came from Graph)."""
        first = f"{self.base}/{group_path(group_id)}/transitiveMembers/"
        if next_link and not _same_listing(next_link, first):
            raise UntrustedServiceUrl("the next page's link is not a page of this group's "
                                      "members on the configured Graph host")
        url = next_link or (f"{first}microsoft.graph.user?$select={_USER_FIELDS}"
                            f"&$top={_PAGE}&$count=true")
        _, data = await self._call("GET", url, advanced=True)
        users = [DirectoryUser.of(u) for u in data.get("value") or []
                 if isinstance(u, dict) and u.get("id")]
        link = data.get("@odata.nextLink")
        return users, link if isinstance(link, str) else ""

    async def user(self, user: str) -> DirectoryUser | None:
        """A user by object id or principal name; None if there is none."""
        try:
            _, data = await self._call("GET", f"{self.base}/{user_path(user)}"
                                              f"?$select={_USER_FIELDS}")
        except Permanent as exc:
            if exc.status == 404:
                return None
            raise
        return DirectoryUser.of(data) if data.get("id") else None

    async def catalog_id(self, manifest_id: str) -> str | None:
        """The org catalog's id of the app with this manifest id."""
        query = quote(f"externalId eq '{_literal(manifest_id)}'", safe="")
        _, data = await self._call("GET", f"{self.base}/appCatalogs/teamsApps?$filter={query}")
        found = [a for a in data.get("value") or [] if isinstance(a, dict) and a.get("id")]
        return str(found[0]["id"]) if found else None

    async def installation(self, user: str, catalog_id: str) -> str | None:
        """The id of the user's installation of the app, None if not installed."""
        query = quote(f"teamsApp/id eq '{_literal(catalog_id)}'", safe="")
        _, data = await self._call("GET", f"{self.base}/{user_path(user)}/teamwork/"
                                          f"installedApps?$expand=teamsApp&$filter={query}")
        found = [a for a in data.get("value") or [] if isinstance(a, dict) and a.get("id")]
        return str(found[0]["id"]) if found else None

    async def install(self, user: str, catalog_id: str) -> bool:
        """Install the app for the user: True if this installed it, False if it
        was installed already (409)."""
        bind = f"{self.cloud.graph_url.rstrip('/')}/v1.0/appCatalogs/teamsApps/{catalog_id}"
        status, _ = await self._call(
            "POST", f"{self.base}/{user_path(user)}/teamwork/installedApps",
            {"teamsApp@odata.bind": bind})
        return status != 409

    async def chat_id(self, user: str, installation_id: str) -> str:
        _, data = await self._call(
            "GET", f"{self.base}/{user_path(user)}/teamwork/installedApps/"
                   f"{quote(installation_id, safe='')}/chat")
        return str(data.get("id") or "")
