"""A loopback stand-in for the Microsoft Graph calls the app makes. Dev and tests only.

It speaks Graph's request and answer shapes for:

- `GET /v1.0/appCatalogs/teamsApps?$filter=externalId eq '{manifest id}'`
- `GET /v1.0/users/{id}/teamwork/installedApps?$expand=teamsApp&$filter=teamsApp/id eq '{id}'`
- `POST /v1.0/users/{id}/teamwork/installedApps` `{"teamsApp@odata.bind": ".../teamsApps/{id}"}`:
  201 without a body; 409 `Conflict` when installed already; 404 when the app is not in the
  catalog or the user does not exist; injected transient 400s with Graph's
  `CreateOrUpdateUserAppEntitlementForTeamsAsync` message.
- `GET /v1.0/users/{id}/teamwork/installedApps/{installation id}/chat` -> `{"id": "19:..."}`
- `GET /v1.0/groups/{id}/transitiveMembers/microsoft.graph.user?$select=id` paged by
  `@odata.nextLink` (`$top`, default 100).
- `GET /v1.0/users/{id or upn}?$select=id`

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
        self.calls: list[tuple[float, str, str]] = []  # (time, method, path)
        self._windows: dict[str, deque[float]] = defaultdict(deque)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ---- setup ---------------------------------------------------------------------

    def add_user(self, user_id: str, upn: str = "", *, tenant: str = "",
                 user_type: str = "Member") -> None:
        self.users[user_id] = {"id": user_id, "userPrincipalName": upn or f"{user_id}@example.com",
                               "userType": user_type, "tenant": tenant or self.tenant}

    def add_group(self, group_id: str, members: list[str]) -> None:
        self.groups[group_id] = list(members)

    def add_app(self, catalog_id: str, manifest_id: str) -> None:
        self.catalog[catalog_id] = manifest_id

    def install_for(self, user: str, catalog_id: str) -> str:
        """Installed already (as if by the user or an admin): answers 409 to a POST."""
        installation = self.installed.get((user, catalog_id))
        if installation is None:
            installation = self.installed[(user, catalog_id)] = uuid.uuid4().hex
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

    def _tenant_of(self, parts: list[str]) -> str:
        if len(parts) > 1 and parts[0] == "users":
            found = self.users.get(parts[1]) or next(
                (u for u in self.users.values()
                 if u["userPrincipalName"].lower() == parts[1].lower()), None)
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
        path = unquote(request.path)
        if path == "/_admin/state":
            return web.json_response(self.state())
        if not path.startswith("/v1.0/"):
            return _error(404, "BadRequest", "Resource not found for the segment.")
        parts = path[len("/v1.0/"):].split("/")
        refused = self._throttled(self._tenant_of(parts))
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
            members = self.groups.get(parts[1])
            if members is None:
                return _error(404, "Request_ResourceNotFound", f"Resource '{parts[1]}' does "
                                                               "not exist.")
            top = int(query.get("$top", "100"))
            skip = int(query.get("$skiptoken", "0"))
            page: dict[str, Any] = {"value": [{"@odata.type": "#microsoft.graph.user",
                                               "id": m} for m in members[skip:skip + top]]}
            if skip + top < len(members):
                page["@odata.nextLink"] = (f"{self.url}/v1.0/groups/{parts[1]}/transitiveMembers"
                                           f"/microsoft.graph.user?$select=id&$top={top}"
                                           f"&$skiptoken={skip + top}")
            return web.json_response(page)
        if parts[0] != "users" or n < 2:
            return _error(400, "BadRequest", "Unsupported request.")
        user = self.users.get(parts[1]) or next(
            (u for u in self.users.values()
             if u["userPrincipalName"].lower() == parts[1].lower()), None)
        if user is None:
            return _error(404, "Request_ResourceNotFound",
                          f"Resource '{parts[1]}' does not exist.")
        if n == 2 and method == "GET":
            return web.json_response({"id": user["id"]})
        return self._installed_apps(method, parts, user["id"], query, body)

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
            return web.json_response({"id": chat, "chatType": "oneOnOne"})
        return _error(400, "BadRequest", "Unsupported request.")
