"""A loopback stand-in for the Microsoft Graph calls the app makes. Dev and tests only.

It speaks Graph's request and answer shapes for:

- `GET /v1.0/appCatalogs/teamsApps?$filter=externalId eq '{manifest id}'`
- `GET /v1.0/users/{id}/teamwork/installedApps?$expand=teamsApp&$filter=teamsApp/id eq '{id}'`
- `POST /v1.0/users/{id}/teamwork/installedApps` `{"teamsApp@odata.bind": ".../teamsApps/{id}"}`:
  201 without a body; 409 `Conflict` when installed already; 404 when the app is not in the
  catalog or the user does not exist; injected transient 400s with Graph's
  `CreateOrUpdateUserAppEntitlementForTeamsAsync` message.
- `GET /v1.0/users/{id}/teamwork/installedApps/{installation id}/chat` -> `{"id": "19:..."}`;
  the request of Teams' "Send personal welcome message" page (after a proactive
  install through Graph: `GET /users/{user-id}/teamwork/installedApps/{id}/chat`,
  `id` of the answer is the chat id). 404 `NotFound` for `chat_delay` seconds
  after the install: Teams creates the personal chat as part of the install,
  asynchronously (the bot learns of it by an install activity, same page), so a
  read right after the POST can miss it. The delay is not a documented figure:
  it models what was measured against a real tenant (issue 17: the chat
  listed ~5 s after the install).
- `GET /v1.0/groups/{id}/transitiveMembers/microsoft.graph.user?$select=...&$count=true`
  with `ConsistencyLevel: eventual`, paged by `@odata.nextLink` (`$top`, default 100),
  users only (devices and groups in the group are left out by the cast). Without
  the advanced-query parameters the cast is refused 400 `Request_UnsupportedQuery`
  (Graph "Advanced query capabilities on directory objects": "Use of OData cast
  with transitive members list" needs them; the error body is that page's
  "Error handling for advanced queries" example). `page_throttle` > 0: each page
  after the first is refused once with 429 and that Retry-After (Graph
  "Throttling guidance": 429 `TooManyRequests` with `Retry-After` seconds).
- `GET /v1.0/users/{id or upn}?$select=...` and `/users('$x@y')` for a principal
  name starting with `$` (Graph "Get user"); `accountEnabled` and `userType`
  ("Member" or "Guest") as Graph's user resource names them, when selected.
- installedApps refused 403 `Forbidden` for every user when `forbid_app`: the app
  lacks a TeamsAppInstallation* application permission or its consent (Graph
  "Install app for user" and "List apps installed for user", Permissions); the
  message is Graph's for a missing permission, "Missing role permissions on the
  request. API requires one of '...'. Roles on the request '...'" (its delegated
  form, "Missing scope permissions", quoted in MicrosoftDocs/office-docs-powershell
  issue 8399). For the users in `forbidden_users` only: 403 `Forbidden` "Failed to
  get license information for the user. Ensure user has a valid Office365 license
  assigned to them." (Graph's answer for a user without a licence, quoted in
  OfficeDev/microsoft-teams-apps-requestateam issue 355).

Rate: at most `rate` requests per sliding second per tenant (the tenant of the
user or group, else `tenant`), then 429 `TooManyRequests` with `Retry-After`
(whole seconds, at least 1); a throttled request changes nothing. `throttle_next[user]
= seconds` answers that user's next call 429 with that Retry-After; `refused` keeps
each 429's time.
An install makes the Connector emulator (`emulator=`, same process) know the new
1:1 chat, so a send to it succeeds. `state()` / `GET /_admin/state` counts calls
and keeps each call's time (to measure calls/s).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict, deque
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web

if TYPE_CHECKING:
    from proactive_devtools.emulator import ConnectorEmulator


def _error(status: int, code: str, message: str,
           headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message,
                                        "innerError": {"request-id": str(uuid.uuid4())}}},
                             status=status, headers=headers)


def _selected(user: dict[str, Any], select: str) -> dict[str, Any]:
    """The user resource's properties asked for by `$select` (`id` always);
    Graph "user resource type": id, accountEnabled, userType, userPrincipalName."""
    wanted = {name.strip() for name in select.split(",") if name.strip()} | {"id"}
    return {name: user[name] for name in ("id", "accountEnabled", "userType",
                                          "userPrincipalName")
            if name in wanted and name in user}


class FakeGraph:
    def __init__(self, *, tenant: str = "", rate: float = 0.0,
                 emulator: ConnectorEmulator | None = None) -> None:
        self.tenant = tenant
        self.rate = rate  # requests per second per tenant; 0: unlimited
        self.emulator = emulator
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, list[str]] = {}
        self.catalog: dict[str, str] = {}  # catalog id -> manifest (external) id
        self.installed: dict[tuple[str, str], str] = {}  # (user, catalog id) -> installation
        self.chats: dict[str, str] = {}  # installation id -> chat id
        self.transient_400: Counter[str] = Counter()  # user -> 400s still to answer
        # user -> Retry-After seconds of one injected 429 on that user's next call
        self.throttle_next: dict[str, int] = {}
        self.refused: list[tuple[float, str, str]] = []  # (time, method, path) of each 429
        self.counters: Counter[str] = Counter()
        self.devices: set[str] = set()  # directory objects in groups that are not users
        self.chat_delay = 0.0  # seconds an installation's chat answers 404 after the install
        self._installed_at: dict[str, float] = {}  # installation id -> when
        self.forbid_app = False  # every installedApps call: 403 missing role permissions
        self.forbidden_users: set[str] = set()  # these users' installedApps calls: 403
        self.page_throttle = 0  # Retry-After of one 429 before each group page after the first
        self._pages_refused: set[str] = set()
        self.calls: list[tuple[float, str, str]] = []  # (time, method, path)
        self._windows: dict[str, deque[float]] = defaultdict(deque)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ---- setup ---------------------------------------------------------------------

    def add_user(self, user_id: str, upn: str = "", *, tenant: str = "",
                 user_type: str = "Member", enabled: bool = True) -> None:
        self.users[user_id] = {"id": user_id, "userPrincipalName": upn or f"{user_id}@example.com",
                               "userType": user_type, "accountEnabled": enabled,
                               "tenant": tenant or self.tenant}

    def add_device(self, device_id: str) -> None:
        """A device (a directory object a group can hold; not a user)."""
        self.devices.add(device_id)

    def add_group(self, group_id: str, members: list[str]) -> None:
        self.groups[group_id] = list(members)

    def add_app(self, catalog_id: str, manifest_id: str) -> None:
        self.catalog[catalog_id] = manifest_id

    def install_for(self, user: str, catalog_id: str) -> str:
        """Installed already (as if by the user or an admin): answers 409 to a POST."""
        installation = self.installed.get((user, catalog_id))
        if installation is None:
            installation = self.installed[(user, catalog_id)] = uuid.uuid4().hex
            self._installed_at[installation] = time.monotonic()
            chat = f"19:{user}_{catalog_id[:8]}@unq.gbl.spaces"
            self.chats[installation] = chat
            if self.emulator is not None:
                self.emulator.register_conversation(
                    chat, tenant_id=self.users.get(user, {}).get("tenant", self.tenant),
                    members=[{"id": f"29:{user}", "aadObjectId": user}], kind="personal")
        return installation

    def state(self) -> dict[str, Any]:
        return {"counters": dict(self.counters), "installed": len(self.installed),
                "calls": [[t, m, p] for t, m, p in self.calls]}

    def max_per_second(self, method: str = "", path_part: str = "") -> int:
        """The most calls (of a method, whose path holds path_part) in any sliding second."""
        times = sorted(t for t, m, p in self.calls
                       if (not method or m == method) and path_part in p)
        best, start = 0, 0
        for end, at in enumerate(times):
            while at - times[start] >= 1.0:
                start += 1
            best = max(best, end - start + 1)
        return best

    # ---- server --------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeGraph:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
        self.url = f"http://{host}:{bound[1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeGraph:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _find(self, key: str) -> dict[str, Any] | None:
        return self.users.get(key) or next(
            (u for u in self.users.values() if u["userPrincipalName"].lower() == key.lower()),
            None)

    def _tenant_of(self, parts: list[str]) -> str:
        if len(parts) > 1 and parts[0] == "users":
            found = self._find(parts[1])
            if found:
                return str(found["tenant"])
        return self.tenant

    def _throttled(self, tenant: str) -> web.Response | None:
        if not self.rate:
            return None
        now, window = time.monotonic(), self._windows[tenant]
        while window and now - window[0] >= 1.0:
            window.popleft()
        if len(window) >= self.rate:
            self.counters["throttled"] += 1
            wait = max(1, int(1.0 - (now - window[0])) + 1)
            return _error(429, "TooManyRequests", "Too many requests.",
                          {"Retry-After": str(wait)})
        window.append(now)
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path.split("?", 1)[0]
        path = unquote(raw)
        if path == "/_admin/state":
            return web.json_response(self.state())
        if not raw.startswith("/v1.0/"):
            return _error(404, "BadRequest", "Resource not found for the segment.")
        # Segments split before decoding: an encoded "/" stays inside its segment.
        parts = [unquote(part) for part in raw[len("/v1.0/"):].split("/")]
        if parts[0] == "users" and len(parts) > 1 and parts[1].startswith("$"):
            # Graph "Get user": a principal name starting with $ must be written
            # /users('$x@y'); as a plain segment Graph reads it as a system segment.
            return _error(400, "BadRequest", f"Resource not found for the segment "
                                             f"'{parts[1]}'.")
        if parts[0].startswith("users('") and parts[0].endswith("')"):
            # Graph "Get user": /users('$x@y') for a principal name starting with $
            # (a quote inside written twice, as in any OData string literal).
            parts = ["users", parts[0][len("users('"):-2].replace("''", "'"), *parts[1:]]
        refused = self._throttled(self._tenant_of(parts))
        token = request.query.get("$skiptoken", "")
        if refused is None and parts[0] == "groups" and token and self.page_throttle \
                and token not in self._pages_refused:
            self._pages_refused.add(token)
            self.counters["throttled"] += 1
            refused = _error(429, "TooManyRequests", "Too many requests.",
                             {"Retry-After": str(self.page_throttle)})
        if refused is None and parts[0] == "users" and len(parts) > 1 \
                and parts[1] in self.throttle_next:
            self.counters["throttled"] += 1
            refused = _error(429, "TooManyRequests", "Too many requests.",
                             {"Retry-After": str(self.throttle_next.pop(parts[1]))})
        if refused is not None:
            self.refused.append((time.monotonic(), request.method, path))
            return refused
        self.counters[request.method] += 1
        self.calls.append((time.monotonic(), request.method, path))
        body = await request.json() if request.can_read_body else {}
        return self._route(request, parts, body)

    def _route(self, request: web.Request, parts: list[str],
               body: dict[str, Any]) -> web.Response:
        query, method, n = request.query, request.method, len(parts)
        if parts[:2] == ["appCatalogs", "teamsApps"] and method == "GET":
            wanted = query.get("$filter", "").split("'")[1:2]
            return web.json_response({"value": [
                {"id": cid, "externalId": ext, "distributionMethod": "organization"}
                for cid, ext in self.catalog.items() if [ext] == wanted]})
        if parts[0] == "groups" and n == 4 and method == "GET":
            return self._group_page(request, parts[1])
        if parts[0] != "users" or n < 2:
            return _error(400, "BadRequest", "Unsupported request.")
        user = self._find(parts[1])
        if user is None:
            return _error(404, "Request_ResourceNotFound",
                          f"Resource '{parts[1]}' does not exist.")
        if n == 2 and method == "GET":
            return web.json_response(_selected(user, query.get("$select", "")))
        if self.forbid_app:  # Graph "Install app for user": TeamsAppInstallation* needed
            return _error(403, "Forbidden", "Missing role permissions on the request. API "
                                            "requires one of 'TeamsAppInstallation.ReadWrite"
                                            "ForUser.All'. Roles on the request "
                                            "'User.Read.All'.")
        if user["id"] in self.forbidden_users:
            return _error(403, "Forbidden", "Failed to get license information for the "
                                            "user. Ensure user has a valid Office365 license "
                                            "assigned to them.")
        return self._installed_apps(method, parts, user["id"], query, body)

    def _group_page(self, request: web.Request, group: str) -> web.Response:
        query = request.query
        members = self.groups.get(group)
        if members is None:
            return _error(404, "Request_ResourceNotFound", f"Resource '{group}' does "
                                                           "not exist.")
        # Graph "Advanced query capabilities on directory objects": an OData cast
        # on a transitive members list needs ConsistencyLevel: eventual and
        # $count=true; without them (that page's error example):
        if request.headers.get("ConsistencyLevel", "").lower() != "eventual" \
                or query.get("$count", "").lower() != "true":
            self.counters["unsupported_query"] += 1
            return _error(400, "Request_UnsupportedQuery",
                          "OData cast on 'transitiveMembers' is not supported because the "
                          "required parameters might be missing. Try adding $count=true "
                          "query parameter and ConsistencyLevel:eventual header. Refer to "
                          "https://aka.ms/graph-docs/advanced-queries for more information")
        top = int(query.get("$top", "100"))
        skip = int(query.get("$skiptoken", "0"))
        select = query.get("$select", "")
        # The cast keeps users only: devices (and nested groups, flattened) are left out.
        users = [m for m in members if m not in self.devices]
        page: dict[str, Any] = {"@odata.count": len(users), "value": [
            {"@odata.type": "#microsoft.graph.user",
             **_selected(self.users.get(m) or {"id": m}, select)}
            for m in users[skip:skip + top]]}
        if skip + top < len(users):
            page["@odata.nextLink"] = (f"{self.url}/v1.0/groups/{group}/transitiveMembers"
                                       f"/microsoft.graph.user?$select={select}&$top={top}"
                                       f"&$count=true&$skiptoken={skip + top}")
        return web.json_response(page)

    def _installed_apps(self, method: str, parts: list[str], user: str, query: Any,
                        body: dict[str, Any]) -> web.Response:
        n = len(parts)
        if parts[2:4] != ["teamwork", "installedApps"]:
            return _error(400, "BadRequest", "Unsupported request.")
        if n == 4 and method == "GET":
            wanted = query.get("$filter", "").split("'")[1:2]
            return web.json_response({"value": [
                {"id": inst, "teamsApp": {"id": cid}} for (u, cid), inst in self.installed.items()
                if u == user and [cid] == wanted]})
        if n == 4 and method == "POST":
            catalog_id = str(body.get("teamsApp@odata.bind", "")).rsplit("/", 1)[-1]
            if catalog_id not in self.catalog:
                return _error(404, "NotFound", "App not found in the catalog.")
            if self.transient_400[user] > 0:
                self.transient_400[user] -= 1
                self.counters["transient_400"] += 1
                return _error(400, "BadRequest", "Failed to execute Templates backend request "
                                                 "CreateOrUpdateUserAppEntitlementForTeamsAsync.")
            if (user, catalog_id) in self.installed:
                self.counters["conflict"] += 1
                return _error(409, "Conflict", "App is already installed.")
            self.install_for(user, catalog_id)
            self.counters["installs"] += 1
            return web.Response(status=201)
        if n == 6 and parts[5] == "chat" and method == "GET":
            chat = self.chats.get(parts[4])
            if chat is None:
                return _error(404, "NotFound", "Installation not found.")
            if time.monotonic() - self._installed_at.get(parts[4], 0.0) < self.chat_delay:
                self.counters["chat_not_yet"] += 1
                return _error(404, "NotFound", "Chat not found.")
            return web.json_response({"id": chat, "chatType": "oneOnOne"})
        return _error(400, "BadRequest", "Unsupported request.")
