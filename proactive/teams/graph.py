"""Microsoft Graph client: the few calls that reach users the bot never met.

Group members, a user by principal name, the app's catalog id, a user's
installation of the app, installing it, and the installation's chat. Before
any request the URL is checked against the cloud's Graph host (the `@odata.
nextLink` of a page too): the Graph token goes there and nowhere else; a
loopback stand-in allowed by local development mode gets no token. A call
that does not succeed raises a member of proactive.errors.
"""

from __future__ import annotations

import json
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


def to_error(status: int, body: bytes, retry_after: str | None) -> DeliveryFailed:
    code = error_code(body)
    detail = f"Graph answered {status} {code}".strip()
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

    async def _call(self, method: str, url: str,
                    body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        from proactive.teams.transport import request

        headers = {"Content-Type": "application/json"}
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

    async def group_members(self, group_id: str, next_link: str = "") -> tuple[list[str], str]:
        """One page of a group's transitive user members: (ids, next page's link).
        A `next_link` is followed only if it is a page of this group's members
        on this Graph (the app's signature already vouches it came from Graph)."""
        first = f"{self.base}/groups/{quote(group_id, safe='')}/transitiveMembers/"
        if next_link and not _same_listing(next_link, first):
            raise UntrustedServiceUrl("the next page's link is not a page of this group's "
                                      "members on the configured Graph host")
        url = next_link or f"{first}microsoft.graph.user?$select=id&$top={_PAGE}"
        _, data = await self._call("GET", url)
        ids = [str(u["id"]) for u in data.get("value") or [] if isinstance(u, dict) and
               u.get("id")]
        link = data.get("@odata.nextLink")
        return ids, link if isinstance(link, str) else ""

    async def user_id(self, upn: str) -> str | None:
        """A user's AAD object id by principal name; None if there is none."""
        try:
            _, data = await self._call("GET", f"{self.base}/users/{quote(upn, safe='@')}"
                                              f"?$select=id")
        except Permanent as exc:
            if exc.status == 404:
                return None
            raise
        return str(data["id"]) if data.get("id") else None

    async def catalog_id(self, manifest_id: str) -> str | None:
        """The org catalog's id of the app with this manifest id."""
        query = quote(f"externalId eq '{manifest_id}'", safe="")
        _, data = await self._call("GET", f"{self.base}/appCatalogs/teamsApps?$filter={query}")
        found = [a for a in data.get("value") or [] if isinstance(a, dict) and a.get("id")]
        return str(found[0]["id"]) if found else None

    async def installation(self, user: str, catalog_id: str) -> str | None:
        """The id of the user's installation of the app, None if not installed."""
        query = quote(f"teamsApp/id eq '{catalog_id}'", safe="")
        _, data = await self._call("GET", f"{self.base}/users/{quote(user, safe='')}/teamwork/"
                                          f"installedApps?$expand=teamsApp&$filter={query}")
        found = [a for a in data.get("value") or [] if isinstance(a, dict) and a.get("id")]
        return str(found[0]["id"]) if found else None

    async def install(self, user: str, catalog_id: str) -> bool:
        """Install the app for the user: True if this installed it, False if it
        was installed already (409)."""
        bind = f"{self.cloud.graph_url.rstrip('/')}/v1.0/appCatalogs/teamsApps/{catalog_id}"
        status, _ = await self._call(
            "POST", f"{self.base}/users/{quote(user, safe='')}/teamwork/installedApps",
            {"teamsApp@odata.bind": bind})
        return status != 409

    async def chat_id(self, user: str, installation_id: str) -> str:
        _, data = await self._call(
            "GET", f"{self.base}/users/{quote(user, safe='')}/teamwork/installedApps/"
                   f"{quote(installation_id, safe='')}/chat")
        return str(data.get("id") or "")
