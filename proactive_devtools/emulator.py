"""Connector emulator: an HTTP server that answers like Teams' Bot Framework Connector.

For tests, benchmarks and local runs. It speaks the real REST API v3 (paths,
bodies, status codes and error bodies as Teams sends them), so the real
`ConnectorClient` runs against it unchanged: point a serviceUrl at it.

    python -m proactive emulator --port 3979 --rate-limits --seed 7

or from Python::

    async with ConnectorEmulator(rate_limits=True) as emulator:
        service_url = emulator.url          # "http://127.0.0.1:PORT/"
        ...
        assert emulator.counters["delivered"] == 3

Connector endpoints
-------------------
Any path prefix before `/v3/` is accepted, so `http://127.0.0.1:PORT/` and
`http://127.0.0.1:PORT/teams/` both work as serviceUrls. Ids in the path are
percent-decoded (`19:x@thread.tacv2;messageid=1` may be sent encoded or not).

- `POST /v3/conversations`: a 1:1 conversation (`isGroup` false, `members[0].id`,
  `tenantId`/`tenantID`/`channelData.tenant.id`) answers `{"id":"a:..."}`, 201 when
  new, 200 when that (tenant, member) already has one (the id is stable, as in
  Teams). A channel thread (`isGroup` true, `channelData.channel.id`, `activity`)
  answers 201 `{"id":"<channel>;messageid=<n>","activityId":"<n>"}` and records
  the activity as delivered.
- `POST /v3/conversations/{id}/activities` and `.../activities/{replyToId}`:
  201 `{"id":"<n>"}`. Posting to `<channel>;messageid=<root>` is a thread reply.
- `PUT /v3/conversations/{id}/activities/{activityId}`: 200 `{"id"}`;
  `DELETE` the same path: 200. Unknown activity: 404 `ActivityNotFoundInConversation`.
- `GET /v3/conversations/{id}/members`, `.../members/{memberId}`,
  `.../pagedmembers?pageSize=&continuationToken=` (page size clamped to 50..500,
  default 200; `continuationToken` absent on the last page). A member's Entra
  object id is shown as `objectId` (`rosterIds`, the default), as in the roster
  example of Teams' "Get context for your bot" page
  (learn.microsoft.com/microsoftteams/platform/bots/how-to/get-teams-context,
  `GET /v3/conversations/{teamId}/pagedmembers`) and the official Java SDK's
  wire model (botbuilder-java, bot-schema `teams/TeamsChannelAccount.java`:
  `@JsonProperty(value = "objectId") aadObjectId`); `aadObjectId` (the Bot
  Framework ChannelAccount's name, botbuilder-dotnet `ChannelAccount.cs`) or
  `both` on request. `rosterPage429` > 0: each page after the first is
  refused once with 429 and that Retry-After, as Teams throttles a roster read
  ("Optimize your bot: rate limiting and best practices", 429 with Retry-After).
- `GET /v3/teams/{teamId}/conversations`: `{"conversations":[{"id","name"}]}`.

Errors use Teams' body `{"error":{"code":"...","message":"..."}}`: 400 `BadArgument`
(body not a JSON object, missing member/tenant/channel), 401 (expected token
missing or wrong: `{"message":"Authorization has been denied for this request."}`),
403 `ConversationBlockedByUser` / `BotNotInConversationRoster` / `BotDisabledByAdmin`
or the other blocked shape
`{"errorCode":209,"message":"{\\"subCode\\":\\"MessageWritesBlocked\\",...}"}`,
404 `ConversationNotFound` (strict mode only), 413 `MessageSizeTooBig` (activity
JSON over 100 KB counted as UTF-16), 429 `Throttled` with `Retry-After`, and
injected 412 `PreconditionFailed`, 500 `ServiceError`, 502/503/504.

Rate limits (off unless `rate_limits`): sliding windows per conversation (a thread
counts against its channel) of 7/1 s, 8/2 s, 60/30 s, 1800/h for sends, replies
and create-conversation, 14/16/120/3600 for member and channel reads; and per
tenant `tenant_rps` requests per second over all operations. A request's tenant
is the tenant of its conversation (as created or registered), else the body's
tenant (create), else a path prefix ending in `/tenants/{tenantId}/` (serviceUrl
`http://127.0.0.1:PORT/tenants/T1/`), else the `X-Emulator-Tenant` header, else
"". `Retry-After` is the whole seconds until the window frees (at least 1), or
the configured `retry_after`. Throttled and failed requests are never delivered.
Order of checks: token (401), path, body (400, 413), injected answers, random
faults, rate limits, unknown conversation (404), recipient status (403). A
request that reaches the limiter uses up the window even if then answered
403/404; throttled, injected and faulted requests do not.

Python API
----------
`ConnectorEmulator(**options)`, `await start(host, port, ssl_context=None) -> url`, `.url`,
`await stop()` (or `async with`); `configure(**options)`, `config()`,
`register_conversation(id, tenant_id=, members=, kind=, team_id=, name=)`,
`register_team(id, tenant_id=, name=, channels=, members=)`,
`set_status(target, status)`, `inject(status, count=, conversation_id=,
operation=, retry_after=, code=, body=, hang=)`, `advance(seconds)`, `now()`,
`reset(everything=False)`; what happened: `deliveries` (`Delivery`:
conversation_id, activity_id, text, summary, attachments, body, time,
reply_to_id, tenant_id, updates, deleted), `delivered_to(id)`, `counters`,
`status_counts`, `authorization_headers`, `conversations`, `duplicates()`,
`duplicate_keys()`, `state()`. Options: accept_unknown_conversations (True),
rate_limits (False), tenant_rps (50), retry_after (None), fault_rate (0),
fault_statuses, hang_seconds (30), answer_seconds (0: every request is
carried out at once and its answer held this long, as Teams' round trip is:
what a crash of the caller mid-call leaves unknown), seed, expected_token,
max_activity_bytes (102400), duplicate_key, clock (`time.monotonic`; inject one to drive windows).

Admin API (JSON, never requires the bot token, not counted as requests)
-------------------------------------------------------------------------
- `GET  /_admin/health` -> `{"ok": true, "url": serviceUrl}`
- `GET  /_admin/state[?deliveries=0][&since=N]` -> `{"now", "config", "counters":
  {"requests","delivered","updated","deleted","throttled","faults","injected",
  "created"}, "statuses": {"201": n, "429": n, ...}, "deliveryCount",
  "deliveries": [{"index","conversationId","activityId","replyToId","tenantId",
  "text","summary","attachments","time","updates","deleted","body"}],
  "duplicates": [{"conversationId","text","count"}], "duplicateKeys":
  [{"conversationId","key","count"}], "authorization": [every Authorization
  header value seen, null when absent], "conversations": [{"id","tenantId",
  "kind","userId","teamId","name","memberCount"}], "recipientStatuses":
  {target: status}, "pendingInjections": n}`. `duplicates` counts deliveries per
  (conversation, text); `duplicateKeys` per (conversation, value of the activity
  field named by `duplicateKey`, e.g. "channelData.key").
- `POST /_admin/reset` `{"everything": false}`: forget deliveries, counters,
  headers, rate-limit windows and pending injections, and reseed the fault RNG;
  with `everything` also conversations, teams, statuses, sent activities and the
  clock offset. Configuration stays.
- `GET|POST /_admin/config` `{"acceptUnknownConversations", "rateLimits",
  "tenantRps", "retryAfter", "faultRate", "faultStatuses", "hangSeconds",
  "seed", "expectedToken", "maxActivityBytes", "duplicateKey"}` (any subset;
  snake_case names work too) -> the whole config.
- `POST /_admin/conversations` `{"id", "tenantId", "members": [{"id",
  "aadObjectId", "name", ...}], "kind": "personal"|"channel"|"groupChat",
  "teamId", "name"}`: make a conversation known (needed in strict mode).
- `POST /_admin/teams` `{"id", "tenantId", "name", "channels": [{"id","name"}],
  "members": [...]}`: a team; its General channel (id = team id) and channels
  become known conversations sharing the team's members.
- `POST /_admin/status` `{"target": id, "status": "blocked"|"blocked-209"|
  "uninstalled"|"disabled"|"ok"}`: target is a conversation id, a user id
  (their 1:1 conversation) or a tenant id. `blocked*` fails writes (create
  still succeeds); `uninstalled`/`disabled` fail everything there.
- `POST /_admin/inject` `{"status": 429, "count": 2, "conversationId": X,
  "operation": "send", "retryAfter": 3, "code", "body", "hang": seconds}`: the
  next `count` matching requests get that answer (not delivered). Operations:
  create, send, update, delete, members, channels. `"status": null` with `hang`
  delivers normally but answers `hang` seconds late (a client timeout after a
  real delivery: the duplicate-on-retry case).
- `POST /_admin/clock` `{"advance": seconds}` -> `{"now"}`: move the clock the
  rate-limit windows use.

Faults: with `fault_rate` p, each Connector request fails with probability p
(seeded RNG, `seed`) with a status drawn from `fault_statuses` (default 500, 502,
503, 504, 412); the token `hang` holds the request `hang_seconds` and answers 504
undelivered, `late` delivers and answers `hang_seconds` late.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import logging
import math
import random
import signal
import ssl
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

log = logging.getLogger(__name__)

MAX_ACTIVITY_BYTES = 100 * 1024
# (window seconds, requests) as Teams documents them, per bot per conversation.
SEND_LIMITS: tuple[tuple[float, int], ...] = ((1.0, 7), (2.0, 8), (30.0, 60), (3600.0, 1800))
READ_LIMITS: tuple[tuple[float, int], ...] = ((1.0, 14), (2.0, 16), (30.0, 120), (3600.0, 3600))
DEFAULT_TENANT_RPS = 50.0
DEFAULT_FAULT_STATUSES: tuple[int | str, ...] = (500, 502, 503, 504, 412)
FAULT_TOKENS = frozenset({"hang", "late"})
STATUSES = frozenset({"ok", "blocked", "blocked-209", "uninstalled", "disabled"})
OPERATIONS = frozenset({"create", "send", "update", "delete", "members", "channels"})
_SEND_OPS = frozenset({"create", "send"})
_WRITE_OPS = frozenset({"send", "update", "delete"})
_READ_OPS = frozenset({"members", "channels"})
_THREAD = ";messageid="
_JSON = "application/json"
_DENIED = {"message": "Authorization has been denied for this request."}
# The second shape Teams uses for a blocked or uninstalled bot: JSON inside a string.
_BLOCKED_209 = {
    "errorCode": 209,
    "message": json.dumps({"subCode": "MessageWritesBlocked",
                           "details": "Thread is blocked from message writes.",
                           "errorCode": None, "errorSubCode": None}, indent=2),
}
_CODES = {400: "BadArgument", 401: "BotNotRegistered", 403: "Forbidden",
          404: "ConversationNotFound", 405: "MethodNotAllowed", 412: "PreconditionFailed",
          413: "MessageSizeTooBig", 429: "Throttled", 500: "ServiceError",
          502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
_MESSAGES = {
    "BadArgument": "Invalid request.",
    "ConversationNotFound": "Conversation not found.",
    "ActivityNotFoundInConversation": "Activity not found in conversation.",
    "MemberNotFoundInConversation": "Member not found in conversation.",
    "ConversationBlockedByUser": "User blocked the conversation with the bot.",
    "BotNotInConversationRoster": "The bot is not part of the conversation roster.",
    "BotDisabledByAdmin": "The bot is disabled by the tenant admin.",
    "MessageSizeTooBig": "Activity body too large for processing.",
    "Throttled": "Too many requests. Retry after the time in the Retry-After header.",
    "PreconditionFailed": "Precondition failed, please try again.",
    "ServiceError": "An internal service error occurred.",
}
_CONFIG_KEYS = {  # admin JSON name -> attribute
    "acceptUnknownConversations": "accept_unknown_conversations",
    "rateLimits": "rate_limits", "tenantRps": "tenant_rps", "retryAfter": "retry_after",
    "faultRate": "fault_rate", "faultStatuses": "fault_statuses",
    "hangSeconds": "hang_seconds", "answerSeconds": "answer_seconds", "seed": "seed",
    "expectedToken": "expected_token",
    "maxActivityBytes": "max_activity_bytes", "duplicateKey": "duplicate_key",
    "rosterIds": "roster_ids", "rosterPage429": "roster_page_429",
}
ROSTER_IDS = frozenset({"objectId", "aadObjectId", "both"})

_COERCE: dict[str, Callable[[Any], Any]] = {
    "accept_unknown_conversations": bool, "rate_limits": bool, "tenant_rps": float,
    "retry_after": float, "fault_rate": float, "hang_seconds": float,
    "answer_seconds": float, "seed": int,
    "max_activity_bytes": int, "roster_page_429": float,
}


class EmulatorError(ValueError):
    """A bad argument to the emulator's Python or admin API."""


@dataclass
class Delivery:
    """One activity Teams would have shown."""

    index: int
    conversation_id: str
    activity_id: str
    body: dict[str, Any]
    time: float  # emulator clock
    tenant_id: str = ""
    reply_to_id: str | None = None
    updates: int = 0
    deleted: bool = False

    @property
    def text(self) -> str | None:
        text = self.body.get("text")
        return text if isinstance(text, str) else None

    @property
    def summary(self) -> str | None:
        summary = self.body.get("summary")
        return summary if isinstance(summary, str) else None

    @property
    def attachments(self) -> list[Any]:
        attachments = self.body.get("attachments")
        return attachments if isinstance(attachments, list) else []

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "conversationId": self.conversation_id,
                "activityId": self.activity_id, "replyToId": self.reply_to_id,
                "tenantId": self.tenant_id, "text": self.text, "summary": self.summary,
                "attachments": self.attachments, "time": self.time,
                "updates": self.updates, "deleted": self.deleted, "body": self.body}


@dataclass
class Conversation:
    id: str
    tenant_id: str = ""
    kind: str = "personal"  # personal | channel | groupChat
    members: list[dict[str, Any]] = field(default_factory=list)
    user_id: str = ""  # the user of a 1:1 conversation
    team_id: str = ""
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "tenantId": self.tenant_id, "kind": self.kind,
                "userId": self.user_id, "teamId": self.team_id, "name": self.name,
                "memberCount": len(self.members)}


@dataclass
class Team:
    id: str
    tenant_id: str = ""
    name: str | None = None
    channels: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Injection:
    """The answer for the next `count` requests that match."""

    status: int | None  # None: process normally, answer `hang` seconds late
    count: int = 1
    conversation_id: str | None = None
    operation: str | None = None
    retry_after: float | None = None
    code: str | None = None
    body: Any = None
    hang: float = 0.0

    def matches(self, operation: str, conversation_id: str, base_id: str) -> bool:
        if self.operation is not None and self.operation != operation:
            return False
        return self.conversation_id is None or self.conversation_id in (conversation_id, base_id)


class _Windows:
    """Sliding-window limits per key: one deque of admission times per window.

    Each request pops only what expired, so the work is amortised O(1)."""

    def __init__(self, limits: Sequence[tuple[float, int]]) -> None:
        self.limits = tuple(limits)
        self.keys: dict[str, tuple[deque[float], ...]] = {}

    def acquire(self, key: str, now: float) -> float:
        """0 and the request is counted, or the seconds until it would be admitted."""
        queues = self.keys.get(key)
        if queues is None:
            queues = self.keys[key] = tuple(deque() for _ in self.limits)
        wait = 0.0
        for (span, limit), times in zip(self.limits, queues, strict=True):
            cutoff = now - span
            while times and times[0] <= cutoff:
                times.popleft()
            if len(times) >= limit:
                wait = max(wait, times[-limit] + span - now)
        if wait > 0:
            return wait  # a throttled request does not use up the window
        for times in queues:
            times.append(now)
        return 0.0


def _utf16_size(raw: bytes) -> int:
    """Teams measures a message in UTF-16, where ASCII takes two bytes."""
    return len(raw.decode("utf-8", "replace").encode("utf-16-le"))


def _tenant_of(body: Mapping[str, Any]) -> str:
    for key, value in body.items():  # tenantId, tenantID, TenantId...
        if key.lower() == "tenantid" and isinstance(value, str) and value:
            return value
    channel_data = body.get("channelData")
    if isinstance(channel_data, Mapping):
        tenant = channel_data.get("tenant")
        if isinstance(tenant, Mapping) and isinstance(tenant.get("id"), str):
            return str(tenant["id"])
    return ""


def _dig(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


def _personal_id(tenant_id: str, user_id: str) -> str:
    # Derived, not random: the same member gets the same id, even after a restart.
    digest = hashlib.sha256(f"{tenant_id}\n{user_id}".encode()).digest()
    return "a:1" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _kind_of(conversation_id: str) -> str:
    if conversation_id.startswith("a:"):
        return "personal"
    if conversation_id.startswith("19:") and "@thread.tacv2" in conversation_id:
        return "channel"
    return "groupChat"


def _error(code: str, message: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message or _MESSAGES.get(code, code)}}


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _fault_statuses(values: Iterable[int | str]) -> tuple[int | str, ...]:
    out: list[int | str] = []
    for value in values:
        token = str(value).strip().lower()
        if token in FAULT_TOKENS:
            out.append(token)
        elif token.isdigit() and 400 <= int(token) <= 599:
            out.append(int(token))
        else:
            raise EmulatorError(f"fault status must be 400..599, 'hang' or 'late', got {value!r}")
    if not out:
        raise EmulatorError("fault statuses must not be empty")
    return tuple(out)


class _Answer(Exception):
    """Ends a request early with this answer."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers


class ConnectorEmulator:
    """The Connector's REST API v3 on a local port, with the state tests need.

    All options are keyword-only and can be changed later with `configure()` or
    `POST /_admin/config`."""

    def __init__(self, *, accept_unknown_conversations: bool = True, rate_limits: bool = False,
                 tenant_rps: float | None = DEFAULT_TENANT_RPS, retry_after: float | None = None,
                 fault_rate: float = 0.0,
                 fault_statuses: Iterable[int | str] = DEFAULT_FAULT_STATUSES,
                 hang_seconds: float = 30.0, answer_seconds: float = 0.0,
                 seed: int | None = None, expected_token: str | None = None,
                 max_activity_bytes: int = MAX_ACTIVITY_BYTES,
                 duplicate_key: str | None = None, roster_ids: str = "objectId",
                 roster_page_429: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.accept_unknown_conversations = accept_unknown_conversations
        self.rate_limits = rate_limits
        self.tenant_rps = tenant_rps
        self.retry_after = retry_after
        self.fault_rate = fault_rate
        self.fault_statuses = _fault_statuses(fault_statuses)
        self.hang_seconds = hang_seconds
        self.answer_seconds = answer_seconds
        self.seed = seed
        self.expected_token = expected_token
        self.max_activity_bytes = max_activity_bytes
        # Dotted path into an activity (e.g. "channelData.outboxKey") whose value
        # counts deliveries per (conversation, value): a duplicate detector.
        self.duplicate_key = duplicate_key
        if roster_ids not in ROSTER_IDS:
            raise EmulatorError(f"roster ids must be one of {sorted(ROSTER_IDS)}")
        self.roster_ids = roster_ids
        self.roster_page_429 = roster_page_429
        self._pages_refused: set[str] = set()  # continuation tokens refused once
        self._clock = clock
        self._offset = 0.0
        self._rng = random.Random(seed)
        # Activity ids look like Teams' (epoch milliseconds) and never repeat.
        self._ids = itertools.count(int(time.time() * 1000))
        self._conversations: dict[str, Conversation] = {}
        self._personal: dict[tuple[str, str], str] = {}
        self._aliases: dict[str, str] = {}  # aadObjectId -> member id
        self._teams: dict[str, Team] = {}
        self._statuses: dict[str, str] = {}
        self._activities: dict[tuple[str, str], Delivery] = {}
        self._clear_recordings()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0, *,
                    ssl_context: ssl.SSLContext | None = None) -> str:
        """Listen; port 0 picks a free one. Returns the serviceUrl (also `.url`).

        With `ssl_context` (a server context holding a certificate) it serves
        https, so tests can put `host:port` on a cloud's Connector hosts (test
        override) and see the bot's token arrive on an allow-listed host."""
        # Big enough that our own 413 answers oversize activities, not aiohttp's.
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._closing = asyncio.Event()
        # No access log: the benchmark pushes thousands of requests through here.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        self._runner = runner
        sockname = runner.addresses[0]
        shown = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://{shown}:{sockname[1]}/"
        log.info("Connector emulator listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        self._closing.set()  # release hanging requests now rather than after hang_seconds
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ConnectorEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- Python API: configuration and scenario --------------------------------------

    def now(self) -> float:
        return self._clock() + self._offset

    def advance(self, seconds: float) -> float:
        """Move the emulator's clock forward (rate-limit windows); returns now()."""
        if seconds < 0:
            raise EmulatorError("the clock only moves forward")
        self._offset += seconds
        return self.now()

    def config(self) -> dict[str, Any]:
        return {name: getattr(self, attr) if attr != "fault_statuses"
                else list(self.fault_statuses) for name, attr in _CONFIG_KEYS.items()}

    def configure(self, **options: Any) -> dict[str, Any]:
        """Change options (constructor names, or the admin API's camelCase names)."""
        attrs = set(_CONFIG_KEYS.values())
        for name, value in options.items():
            attr = _CONFIG_KEYS.get(name, name)
            if attr not in attrs:
                raise EmulatorError(f"unknown option {name!r}")
            if attr == "fault_statuses":
                value = _fault_statuses(value)
            elif value is not None and attr in _COERCE:
                value = _COERCE[attr](value)  # admin JSON may send "0.1" or 1 for true
            if attr == "fault_rate" and not 0.0 <= value <= 1.0:
                raise EmulatorError("fault rate must be between 0 and 1")
            if attr == "roster_ids" and value not in ROSTER_IDS:
                raise EmulatorError(f"roster ids must be one of {sorted(ROSTER_IDS)}")
            if attr == "seed":
                self._rng = random.Random(value)
            setattr(self, attr, value)
        return self.config()

    def register_conversation(self, conversation_id: str, *, tenant_id: str = "",
                              members: Iterable[Mapping[str, Any]] = (),
                              kind: str | None = None, team_id: str = "",
                              name: str | None = None) -> Conversation:
        """Make a conversation known (strict mode answers 404 for the others)."""
        if not conversation_id:
            raise EmulatorError("a conversation needs an id")
        records = [self._member(m) for m in members]
        kind = kind or _kind_of(conversation_id)
        conversation = Conversation(conversation_id, tenant_id, kind, records,
                                    team_id=team_id, name=name)
        if kind == "personal" and records:
            conversation.user_id = str(records[0]["id"])
            self._personal[(tenant_id, conversation.user_id)] = conversation_id
        self._conversations[conversation_id] = conversation
        return conversation

    def register_team(self, team_id: str, *, tenant_id: str = "", name: str | None = None,
                      channels: Iterable[Mapping[str, Any]] = (),
                      members: Iterable[Mapping[str, Any]] = ()) -> Team:
        """A team with its General channel (id = team id) and other channels."""
        if not team_id:
            raise EmulatorError("a team needs an id")
        roster = [self._member(m) for m in members]
        # The General channel's id is the team id; Teams lists it without a name.
        listed: list[dict[str, Any]] = [{"id": team_id, "name": None}]
        listed += [{"id": str(c["id"]), "name": c.get("name")} for c in channels
                   if c.get("id") and c["id"] != team_id]
        team = self._teams[team_id] = Team(team_id, tenant_id, name, listed)
        for channel in listed:
            # Channels share the team roster, as they do in Teams.
            self._conversations[channel["id"]] = Conversation(
                channel["id"], tenant_id, "channel", roster, team_id=team_id,
                name=channel["name"])
        return team

    def set_status(self, target: str, status: str) -> None:
        """blocked | blocked-209 | uninstalled | disabled | ok, for a conversation,
        user or tenant id."""
        if status not in STATUSES:
            raise EmulatorError(f"status must be one of {sorted(STATUSES)}, got {status!r}")
        if status == "ok":
            self._statuses.pop(target, None)
        else:
            self._statuses[target] = status

    def inject(self, status: int | None, *, count: int = 1, conversation_id: str | None = None,
               operation: str | None = None, retry_after: float | None = None,
               code: str | None = None, body: Any = None, hang: float = 0.0) -> Injection:
        """Answer the next `count` matching Connector requests with `status`."""
        if status is not None and not 400 <= status <= 599:
            raise EmulatorError("an injected status must be 400..599")
        if status is None and hang <= 0:
            raise EmulatorError("status null needs a hang: it delivers, then answers late")
        if operation is not None and operation not in OPERATIONS:
            raise EmulatorError(f"operation must be one of {sorted(OPERATIONS)}")
        if count < 1:
            raise EmulatorError("count must be at least 1")
        rule = Injection(status, count, conversation_id, operation, retry_after, code, body, hang)
        self._injections.append(rule)
        return rule

    def reset(self, *, everything: bool = False) -> None:
        """Forget what was recorded (and with `everything`, what was registered)."""
        self._clear_recordings()
        self._rng = random.Random(self.seed)
        if everything:
            self._conversations.clear()
            self._personal.clear()
            self._aliases.clear()
            self._teams.clear()
            self._statuses.clear()
            self._activities.clear()
            self._offset = 0.0

    def _clear_recordings(self) -> None:
        self._deliveries: list[Delivery] = []
        self._counters: Counter[str] = Counter()
        self._status_counts: Counter[int] = Counter()
        self._authorization: list[str | None] = []
        self._per_text: Counter[tuple[str, str]] = Counter()
        self._per_key: Counter[tuple[str, str]] = Counter()
        self._injections: list[Injection] = []
        self._send_windows = _Windows(SEND_LIMITS)
        self._read_windows = _Windows(READ_LIMITS)
        self._tenant_windows: _Windows | None = None
        self._tenant_rps_used: float | None = None

    # ---- Python API: what happened ---------------------------------------------------

    @property
    def deliveries(self) -> list[Delivery]:
        return list(self._deliveries)

    def delivered_to(self, conversation_id: str) -> list[Delivery]:
        return [d for d in self._deliveries if d.conversation_id == conversation_id]

    @property
    def counters(self) -> dict[str, int]:
        names = ("requests", "delivered", "updated", "deleted", "throttled", "faults",
                 "injected", "created", "roster_throttled")
        return {name: self._counters[name] for name in names}

    @property
    def status_counts(self) -> dict[int, int]:
        return dict(self._status_counts)

    @property
    def authorization_headers(self) -> list[str | None]:
        """Every Authorization header value seen on Connector requests, in order."""
        return list(self._authorization)

    @property
    def conversations(self) -> dict[str, Conversation]:
        return dict(self._conversations)

    def duplicates(self) -> list[dict[str, Any]]:
        """(conversation, text) pairs delivered more than once."""
        return [{"conversationId": conv, "text": text, "count": n}
                for (conv, text), n in self._per_text.items() if n > 1]

    def duplicate_keys(self) -> list[dict[str, Any]]:
        """(conversation, `duplicate_key` value) pairs delivered more than once."""
        return [{"conversationId": conv, "key": key, "count": n}
                for (conv, key), n in self._per_key.items() if n > 1]

    def state(self, *, include_deliveries: bool = True, since: int = 0) -> dict[str, Any]:
        """Everything `GET /_admin/state` answers."""
        state: dict[str, Any] = {
            "now": self.now(), "config": self.config(), "counters": self.counters,
            "statuses": {str(k): v for k, v in sorted(self._status_counts.items())},
            "deliveryCount": len(self._deliveries),
            "duplicates": self.duplicates(), "duplicateKeys": self.duplicate_keys(),
            "authorization": list(self._authorization),
            "conversations": [c.to_json() for c in self._conversations.values()],
            "recipientStatuses": dict(self._statuses),
            "pendingInjections": sum(rule.count for rule in self._injections),
        }
        if include_deliveries:
            state["deliveries"] = [d.to_json() for d in self._deliveries[since:]]
        return state

    # ---- HTTP ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        segments = request.rel_url.raw_path.split("/")
        for i, segment in enumerate(segments):
            if segment == "_admin":
                return await self._admin(request, "/".join(segments[i + 1:]))
            if segment == "v3":
                return await self._connector(request, segments[1:i],
                                             [unquote(s) for s in segments[i + 1:] if s])
        return self._json(404, _error("NotFound", "No Connector API at this path."))

    def _json(self, status: int, body: Any, headers: Mapping[str, str] | None = None,
              ) -> web.Response:
        data = b"" if body is None else json.dumps(body).encode()
        return web.Response(status=status, body=data, headers=headers,
                            content_type=_JSON if body is not None else None)

    async def _connector(self, request: web.Request, prefix: list[str],
                         parts: list[str]) -> web.Response:
        self._counters["requests"] += 1
        try:
            status, body, headers = await self._serve(request, prefix, parts)
        except _Answer as answer:
            status, body, headers = answer.status, answer.body, answer.headers
        self._status_counts[status] += 1
        return self._json(status, body, headers)

    async def _serve(self, request: web.Request, prefix: list[str], parts: list[str],
                     ) -> tuple[int, Any, Mapping[str, str] | None]:
        auth = request.headers.get("Authorization")
        self._authorization.append(auth)
        if self.expected_token is not None and auth != f"Bearer {self.expected_token}":
            raise _Answer(401, _DENIED)

        operation, conversation_id, item_id = self._route(request.method, parts)
        body: dict[str, Any] = {}
        if request.method in ("POST", "PUT"):
            body = self._parse(await request.read(), operation)

        # Which conversation and tenant this request is about.
        tenant = ""
        user = ""
        if operation == "create":
            conversation_id, user, tenant = self._create_target(body)
        base_id = conversation_id.split(_THREAD, 1)[0]
        conversation = self._conversations.get(base_id)
        if conversation is not None:
            tenant = conversation.tenant_id or tenant
            user = conversation.user_id or user
        if not tenant:
            tenant = self._route_tenant(request, prefix)

        late = 0.0
        if self._injections:
            rule = self._take_injection(operation, conversation_id, base_id)
            if rule is not None:
                self._counters["injected"] += 1
                if rule.status is None:
                    late = rule.hang
                else:
                    await self._hang(rule.hang)
                    raise self._injected(rule)
        if self.fault_rate and self._rng.random() < self.fault_rate:
            fault = self._rng.choice(self.fault_statuses)
            self._counters["faults"] += 1
            if fault == "late":
                late = self.hang_seconds
            elif fault == "hang":
                await self._hang(self.hang_seconds)
                raise _Answer(504, _error("GatewayTimeout", "The request timed out."))
            else:
                raise self._injected(Injection(int(fault)))
        if self.rate_limits:
            self._throttle(operation, base_id, tenant)

        if conversation is None and operation != "create":
            if not self.accept_unknown_conversations:
                raise _Answer(404, _error("ConversationNotFound"))
            if operation != "channels":  # remember it, so state shows where things went
                conversation = self.register_conversation(base_id, tenant_id=tenant)
        if self._statuses:
            self._check_status(operation, base_id, user, tenant)

        if operation == "create":
            answer = self._create(body, conversation_id, user, tenant)
        elif operation == "send":
            answer = self._send(conversation_id, base_id, item_id, body, tenant)
        elif operation == "update":
            answer = self._update(base_id, item_id, body)
        elif operation == "delete":
            answer = self._delete(base_id, item_id)
        elif operation == "members":
            answer = self._members(request, conversation, item_id, parts[2] == "pagedmembers")
        else:
            answer = self._channels(conversation_id)
        late = max(late, self.answer_seconds)
        if late:
            await self._hang(late)
        return answer[0], answer[1], None

    @staticmethod
    def _route(method: str, parts: list[str]) -> tuple[str, str, str]:
        """(operation, conversation or team id, activity or member id) for a path."""
        n = len(parts)
        found: dict[str, str] = {}
        if n >= 1 and parts[0] == "conversations":
            if n == 1:
                found = {"POST": "create"}
            elif n == 3 and parts[2] == "activities":
                found = {"POST": "send"}
            elif n == 4 and parts[2] == "activities":
                found = {"POST": "send", "PUT": "update", "DELETE": "delete"}
            elif (n == 3 and parts[2] in ("members", "pagedmembers")) or (
                    n == 4 and parts[2] == "members"):
                found = {"GET": "members"}
        elif n == 3 and parts[0] == "teams" and parts[2] == "conversations":
            found = {"GET": "channels"}
        if not found:
            raise _Answer(404, _error("NotFound", "No Connector API at this path."))
        if method not in found:
            raise _Answer(405, _error("MethodNotAllowed", f"{method} is not supported here."))
        return found[method], parts[1] if n > 1 else "", parts[3] if n > 3 else ""

    def _parse(self, raw: bytes, operation: str) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            raise _Answer(400, _error("BadArgument", "The body is not valid JSON.")) from None
        if not isinstance(body, dict):
            raise _Answer(400, _error("BadArgument", "The body must be a JSON object."))
        activity: Any = body
        if operation == "create":
            activity = body.get("activity")
            if activity is None:
                return body
            raw = json.dumps(activity, ensure_ascii=False).encode()
        # UTF-16 never takes more than twice the UTF-8 bytes: skip the encode for small bodies.
        if len(raw) * 2 > self.max_activity_bytes and _utf16_size(raw) > self.max_activity_bytes:
            raise _Answer(413, _error("MessageSizeTooBig"))
        return body

    def _route_tenant(self, request: web.Request, prefix: list[str]) -> str:
        if len(prefix) >= 2 and prefix[-2] == "tenants":
            return unquote(prefix[-1])
        return request.headers.get("X-Emulator-Tenant", "")

    def _create_target(self, body: Mapping[str, Any]) -> tuple[str, str, str]:
        """(conversation id, user id, tenant id) a create-conversation is about."""
        tenant = _tenant_of(body)
        if body.get("isGroup") is True:
            channel_data = body.get("channelData")
            channel = channel_data.get("channel") if isinstance(channel_data, Mapping) else None
            channel_id = channel.get("id") if isinstance(channel, Mapping) else None
            if not isinstance(channel_id, str) or not channel_id:
                raise _Answer(400, _error("BadArgument", "channelData.channel.id is required."))
            if not isinstance(body.get("activity"), Mapping):
                raise _Answer(400, _error("BadArgument", "A new thread needs an activity."))
            return channel_id, "", tenant
        members = body.get("members")
        first = members[0] if isinstance(members, list) and members else None
        member_id = first.get("id") if isinstance(first, Mapping) else None
        if not isinstance(member_id, str) or not member_id:
            raise _Answer(400, _error("BadArgument", "members[0].id is required."))
        if not tenant:
            raise _Answer(400, _error("BadArgument", "The tenant id is required."))
        user = self._aliases.get(member_id, member_id)
        existing = self._personal.get((tenant, user))
        return existing or _personal_id(tenant, user), user, tenant

    def _take_injection(self, operation: str, conversation_id: str,
                        base_id: str) -> Injection | None:
        for i, rule in enumerate(self._injections):
            if rule.matches(operation, conversation_id, base_id):
                rule.count -= 1
                if rule.count <= 0:
                    del self._injections[i]
                return rule
        return None

    def _injected(self, rule: Injection) -> _Answer:
        status = rule.status or 500
        headers = None
        if status == 429:
            self._counters["throttled"] += 1
            headers = {"Retry-After": _seconds(rule.retry_after or self.retry_after or 1)}
        elif rule.retry_after is not None:
            headers = {"Retry-After": _seconds(rule.retry_after)}
        if rule.body is not None:
            return _Answer(status, rule.body, headers)
        return _Answer(status, _error(rule.code or _CODES.get(status, f"Http{status}")), headers)

    def _throttle(self, operation: str, base_id: str, tenant: str) -> None:
        now = self.now()
        wait = 0.0
        if self.tenant_rps:
            if self._tenant_windows is None or self._tenant_rps_used != self.tenant_rps:
                # Whole requests per second: a fractional rps is a limit over a longer span.
                span, limit = (1.0, int(self.tenant_rps)) if self.tenant_rps >= 1 else (
                    1.0 / self.tenant_rps, 1)
                self._tenant_windows = _Windows(((span, limit),))
                self._tenant_rps_used = self.tenant_rps
            wait = self._tenant_windows.acquire(tenant, now)
        if not wait and operation in _SEND_OPS:
            wait = self._send_windows.acquire(base_id, now)
        elif not wait and operation in _READ_OPS:
            wait = self._read_windows.acquire(base_id, now)
        if wait:
            self._counters["throttled"] += 1
            retry = self.retry_after if self.retry_after is not None else max(1, math.ceil(wait))
            raise _Answer(429, _error("Throttled"), {"Retry-After": _seconds(retry)})

    def _check_status(self, operation: str, base_id: str, user: str, tenant: str) -> None:
        statuses = self._statuses
        status = (statuses.get(base_id) or (user and statuses.get(user))
                  or (tenant and statuses.get(tenant)))
        if not status:
            return
        if status == "disabled":
            raise _Answer(403, _error("BotDisabledByAdmin"))
        if status == "uninstalled":
            raise _Answer(403, _error("BotNotInConversationRoster"))
        if operation in _WRITE_OPS:  # a block stops writes; the conversation still exists
            if status == "blocked-209":
                raise _Answer(403, dict(_BLOCKED_209))
            raise _Answer(403, _error("ConversationBlockedByUser"))

    def _member(self, member: Mapping[str, Any]) -> dict[str, Any]:
        record = dict(member)
        if not isinstance(record.get("id"), str) or not record["id"]:
            raise EmulatorError("a member needs an id")
        aad = record.get("aadObjectId")
        if isinstance(aad, str) and aad:
            # Teams accepts either id for the same user: so does create-conversation here.
            self._aliases[aad] = record["id"]
        return record

    # ---- operations ------------------------------------------------------------------

    def _create(self, body: dict[str, Any], conversation_id: str, user: str,
                tenant: str) -> tuple[int, Any]:
        if body.get("isGroup") is True:
            if conversation_id not in self._conversations:
                if not self.accept_unknown_conversations:
                    raise _Answer(404, _error("ConversationNotFound"))
                self.register_conversation(conversation_id, tenant_id=tenant, kind="channel")
            activity_id = str(next(self._ids))
            thread_id = f"{conversation_id}{_THREAD}{activity_id}"
            self._record(thread_id, conversation_id, activity_id, body["activity"], tenant, None)
            self._counters["created"] += 1
            return 201, {"id": thread_id, "activityId": activity_id}
        if conversation_id in self._conversations:
            return 200, {"id": conversation_id}
        member = dict(body["members"][0])  # checked by _create_target
        if member["id"] != user:  # sent by AAD object id: keep the roster's id
            member = {**member, "id": user, "aadObjectId": member["id"]}
        self.register_conversation(conversation_id, tenant_id=tenant, members=[member],
                                   kind="personal")
        self._counters["created"] += 1
        return 201, {"id": conversation_id}

    def _send(self, conversation_id: str, base_id: str, reply_to: str,
              activity: dict[str, Any], tenant: str) -> tuple[int, Any]:
        if not reply_to and _THREAD in conversation_id:
            reply_to = conversation_id.rsplit(_THREAD, 1)[1]
        activity_id = str(next(self._ids))
        self._record(conversation_id, base_id, activity_id, activity, tenant, reply_to or None)
        return 201, {"id": activity_id}

    def _update(self, base_id: str, activity_id: str, activity: dict[str, Any],
                ) -> tuple[int, Any]:
        delivery = self._activities.get((base_id, activity_id))
        if delivery is None or delivery.deleted:
            raise _Answer(404, _error("ActivityNotFoundInConversation"))
        delivery.body = activity
        delivery.updates += 1
        self._counters["updated"] += 1
        return 200, {"id": activity_id}

    def _delete(self, base_id: str, activity_id: str) -> tuple[int, Any]:
        delivery = self._activities.get((base_id, activity_id))
        if delivery is None or delivery.deleted:
            raise _Answer(404, _error("ActivityNotFoundInConversation"))
        delivery.deleted = True
        self._counters["deleted"] += 1
        return 200, None

    def _members(self, request: web.Request, conversation: Conversation | None,
                 member_id: str, paged: bool) -> tuple[int, Any]:
        members = conversation.members if conversation is not None else []
        if member_id:
            for member in members:
                if member_id in (member.get("id"), member.get("aadObjectId")):
                    return 200, self._shown(member)
            raise _Answer(404, _error("MemberNotFoundInConversation"))
        if not paged:
            return 200, [self._shown(m) for m in members]
        try:
            size = min(500, max(50, int(request.query.get("pageSize") or 200)))
            token = request.query.get("continuationToken")
            start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
        except ValueError:
            raise _Answer(400, _error("BadArgument", "Bad pageSize or continuationToken.")
                          ) from None
        if token and self.roster_page_429 > 0 and token not in self._pages_refused:
            self._pages_refused.add(token)  # throttled between pages, once per page
            self._counters["roster_throttled"] += 1
            raise _Answer(429, _error("Throttled"),
                          {"Retry-After": f"{self.roster_page_429:g}"})
        page: dict[str, Any] = {"members": [self._shown(m)
                                            for m in members[start:start + size]]}
        if start + size < len(members):
            page["continuationToken"] = base64.urlsafe_b64encode(
                str(start + size).encode()).decode()
        return 200, page

    def _shown(self, member: dict[str, Any]) -> dict[str, Any]:
        """A roster member as the roster shows it (`rosterIds`)."""
        aad = member.get("aadObjectId")
        if not aad or self.roster_ids == "aadObjectId":
            return member
        shown = {k: v for k, v in member.items() if k != "aadObjectId"}
        shown["objectId"] = aad
        if self.roster_ids == "both":
            shown["aadObjectId"] = aad
        return shown

    def _channels(self, team_id: str) -> tuple[int, Any]:
        team = self._teams.get(team_id)
        if team is None:
            if not self.accept_unknown_conversations:
                raise _Answer(404, _error("ConversationNotFound", "Team not found."))
            return 200, {"conversations": [{"id": team_id, "name": None}]}
        return 200, {"conversations": [dict(c) for c in team.channels]}

    def _record(self, conversation_id: str, base_id: str, activity_id: str,
                activity: dict[str, Any], tenant: str, reply_to: str | None) -> None:
        delivery = Delivery(len(self._deliveries), conversation_id, activity_id, activity,
                            self.now(), tenant, reply_to)
        self._deliveries.append(delivery)
        self._activities[(base_id, activity_id)] = delivery
        self._counters["delivered"] += 1
        self._per_text[(conversation_id, delivery.text or "")] += 1
        if self.duplicate_key:
            key = _dig(activity, self.duplicate_key)
            if key is not None:
                self._per_key[(conversation_id, str(key))] += 1

    async def _hang(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    # ---- admin API -------------------------------------------------------------------

    async def _admin(self, request: web.Request, name: str) -> web.Response:
        try:
            body: Any = {}
            if request.method == "POST" and request.can_read_body:
                raw = await request.read()
                body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise EmulatorError("the body must be a JSON object")
            return self._admin_call(request, name.strip("/"), body)
        except (EmulatorError, ValueError, TypeError, KeyError) as exc:
            return self._json(400, _error("BadArgument", str(exc)))

    def _admin_call(self, request: web.Request, name: str, body: dict[str, Any],
                    ) -> web.Response:
        method = request.method
        if name == "health" and method == "GET":
            return self._json(200, {"ok": True, "url": self.url})
        if name == "state" and method == "GET":
            deliveries = request.query.get("deliveries", "1").lower() not in ("0", "false", "no")
            since = int(request.query.get("since") or 0)
            return self._json(200, self.state(include_deliveries=deliveries, since=since))
        if name == "config" and method in ("GET", "POST"):
            return self._json(200, self.configure(**body) if body else self.config())
        if method != "POST":
            return self._json(405 if name in _ADMIN_POSTS else 404,
                              _error("NotFound", f"no admin call {method} {name}"))
        if name == "reset":
            self.reset(everything=bool(body.get("everything")))
            return self._json(200, {"ok": True})
        if name == "conversations":
            conversation = self.register_conversation(
                str(body["id"]), tenant_id=_tenant_of(body), members=body.get("members") or (),
                kind=body.get("kind"), team_id=str(body.get("teamId") or ""),
                name=body.get("name"))
            return self._json(200, conversation.to_json())
        if name == "teams":
            team = self.register_team(str(body["id"]), tenant_id=_tenant_of(body),
                                      name=body.get("name"), channels=body.get("channels") or (),
                                      members=body.get("members") or ())
            return self._json(200, {"id": team.id, "conversations": team.channels})
        if name == "status":
            targets = body.get("targets") or [body["target"]]
            for target in targets:
                self.set_status(str(target), str(body["status"]))
            return self._json(200, {"statuses": dict(self._statuses)})
        if name == "inject":
            rule = self.inject(
                body["status"], count=int(body.get("count", 1)),
                conversation_id=body.get("conversationId"), operation=body.get("operation"),
                retry_after=body.get("retryAfter"), code=body.get("code"),
                body=body.get("body"), hang=float(body.get("hang") or 0.0))
            return self._json(200, {"status": rule.status, "count": rule.count})
        if name == "clock":
            return self._json(200, {"now": self.advance(float(body.get("advance", 0)))})
        return self._json(404, _error("NotFound", f"no admin call POST {name}"))


_ADMIN_POSTS = frozenset({"reset", "conversations", "teams", "status", "inject", "clock"})


# ---- command line ----------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m proactive emulator",
        description="Run the Teams Connector emulator in the foreground.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3979, help="0 picks a free port")
    parser.add_argument("--base-path", default="",
                        help="path prefix to print in the serviceUrl (any prefix works)")
    parser.add_argument("--rate-limits", action="store_true",
                        help="enforce Teams' per-conversation and per-tenant limits")
    parser.add_argument("--tenant-rps", type=float, default=DEFAULT_TENANT_RPS,
                        help="requests per second per tenant with --rate-limits (0: no limit)")
    parser.add_argument("--retry-after", type=float, default=None,
                        help="fixed Retry-After seconds for 429s (default: until the window frees)")
    parser.add_argument("--fault-rate", type=float, default=0.0,
                        help="share of requests that fail (0..1)")
    parser.add_argument("--fault-statuses", default=",".join(map(str, DEFAULT_FAULT_STATUSES)),
                        help="comma-separated statuses, 'hang' and 'late', drawn for faults")
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--answer-seconds", type=float, default=0.0,
                        help="hold every answer this long after carrying the request out "
                             "(Teams' round trip, e.g. 0.25)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--expected-token", default=None,
                        help="answer 401 unless 'Authorization: Bearer <token>'")
    parser.add_argument("--strict-conversations", action="store_true",
                        help="404 ConversationNotFound for conversations not created/registered")
    parser.add_argument("--max-activity-bytes", type=int, default=MAX_ACTIVITY_BYTES)
    parser.add_argument("--duplicate-key", default=None,
                        help="dotted activity field counted for duplicates, e.g. channelData.key")
    parser.add_argument("--log-level", default="WARNING")
    return parser


def emulator_from_args(args: argparse.Namespace) -> ConnectorEmulator:
    return ConnectorEmulator(
        accept_unknown_conversations=not args.strict_conversations,
        rate_limits=args.rate_limits, tenant_rps=args.tenant_rps or None,
        retry_after=args.retry_after, fault_rate=args.fault_rate,
        fault_statuses=[s for s in args.fault_statuses.split(",") if s.strip()],
        hang_seconds=args.hang_seconds, answer_seconds=args.answer_seconds, seed=args.seed,
        expected_token=args.expected_token,
        max_activity_bytes=args.max_activity_bytes, duplicate_key=args.duplicate_key)


async def _serve_forever(emulator: ConnectorEmulator, host: str, port: int,
                         base_path: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not every platform (or thread) has signal handlers: Ctrl-C still works there.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await emulator.start(host, port)
    base = base_path.strip("/")
    service_url = emulator.url + (base + "/" if base else "")
    print(f"Connector emulator serviceUrl: {service_url}", flush=True)
    print(f"admin API: {emulator.url}_admin/state", flush=True)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        emulator = emulator_from_args(args)
    except EmulatorError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(emulator, args.host, args.port, args.base_path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
