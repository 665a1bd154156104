"""Bot Framework Connector REST API v3 client (the calls a proactive bot makes).

One `httpx.AsyncClient` per process, over aiohttp's transport (several times
less CPU per call than httpx's own). Before any request the serviceUrl is
checked against the cloud's Connector hosts; the bot's token is attached only
to those hosts, never to a loopback stand-in allowed by local development mode.
A call that does not succeed raises a member of proactive.errors (`to_error`
says which for each answer).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from proactive import telemetry
from proactive.errors import (
    UNREACHABLE,
    DeliveryFailed,
    NoCredentials,
    Permanent,
    Reason,
    ServiceUnavailable,
    Throttled,
    Unreachable,
)
from proactive.teams.service_urls import check_service_url

if TYPE_CHECKING:
    import aiohttp
    import httpx

    from proactive.teams.clouds import Cloud
    from proactive.teams.credentials import BotTokenProvider

log = logging.getLogger(__name__)

# Error codes that tell what became of the recipient.
_REASONS = {
    "ConversationBlockedByUser": Reason.BLOCKED,
    "MessageWritesBlocked": Reason.BLOCKED,
    "BotNotInConversationRoster": Reason.UNINSTALLED,
    "BotDisabledByAdmin": Reason.DISABLED,
    "ConversationNotFound": Reason.CONVERSATION_NOT_FOUND,
    "ActivityNotFoundInConversation": Reason.ACTIVITY_NOT_FOUND,
    "InvalidBotApiHost": Reason.INVALID_BOT_API_HOST,
    "MessageSizeTooBig": Reason.TOO_LARGE,
    "BadArgument": Reason.BAD_REQUEST,
    "BotNotRegistered": Reason.UNAUTHORIZED,
    "Throttled": Reason.THROTTLED,
    "PreconditionFailed": Reason.PRECONDITION_FAILED,
}
_STATUS_REASONS = {400: Reason.BAD_REQUEST, 401: Reason.UNAUTHORIZED, 403: Reason.FORBIDDEN,
                   404: Reason.NOT_FOUND, 405: Reason.NOT_SUPPORTED,
                   412: Reason.PRECONDITION_FAILED, 413: Reason.TOO_LARGE,
                   429: Reason.THROTTLED, 500: Reason.SERVICE_ERROR,
                   501: Reason.NOT_SUPPORTED, 502: Reason.BAD_GATEWAY,
                   503: Reason.UNAVAILABLE, 504: Reason.GATEWAY_TIMEOUT}
# Worth trying again later (README "What happens to each message").
_TRANSIENT_STATUSES = frozenset({412, 502, 503, 504})


def error_code(body: bytes) -> str:
    """The error code from either body shape Teams uses, '' if none.

    `{"error":{"code":"..."}}`, or `{"errorCode":209,"message":"{\\"subCode\\":...}"}`
    with JSON inside the message string."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(data, Mapping):
        return ""
    error = data.get("error")
    if isinstance(error, Mapping) and isinstance(error.get("code"), str):
        return str(error["code"])
    message = data.get("message")
    if isinstance(message, str):
        try:
            inner = json.loads(message)
        except ValueError:
            inner = None
        if isinstance(inner, Mapping) and isinstance(inner.get("subCode"), str):
            return str(inner["subCode"])
    code = data.get("code") or data.get("errorCode")
    return str(code) if code is not None else ""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def to_error(status: int, body: bytes, retry_after: str | None = None) -> DeliveryFailed:
    """What a Connector answer of `status` means, as a member of proactive.errors."""
    code = error_code(body)
    reason = _REASONS.get(code) or _STATUS_REASONS.get(status, Reason.HTTP_ERROR)
    detail = f"Teams answered {status} {code}".strip()
    if status == 429:
        return Throttled(reason, detail, status=status, code=code,
                         retry_after=_retry_after(retry_after))
    if status in _TRANSIENT_STATUSES:
        return ServiceUnavailable(reason, detail, status=status, code=code,
                                  retry_after=_retry_after(retry_after))
    kind = Unreachable if reason in UNREACHABLE else Permanent
    return kind(reason, detail, status=status, code=code)


def _join(service_url: str, path: str) -> str:
    return service_url.rstrip("/") + path


def _activities(conversation_id: str, activity_id: str = "") -> str:
    path = f"/v3/conversations/{quote(conversation_id, safe='')}/activities"
    return f"{path}/{quote(activity_id, safe='')}" if activity_id else path


class ConnectorClient:
    """`session`: an aiohttp session for the Connector calls themselves (what
    Runtime.create passes: about a third of the CPU per call of httpx over the
    same transport); without it they go through `http`. Either way redirects
    are not followed, so the token never leaves the checked host."""

    def __init__(self, http: httpx.AsyncClient, tokens: BotTokenProvider | None, cloud: Cloud,
                 *, local_dev: bool = False, local_connectors: Collection[str] = (),
                 timeout: float = 15.0, session: aiohttp.ClientSession | None = None) -> None:
        self.http = http
        self.tokens = tokens
        self.cloud = cloud
        self.local_dev = local_dev
        # Local development: the loopback Connectors (scheme and port) it may call.
        self.local_connectors = tuple(local_connectors)
        self.timeout = timeout
        self.session = session

    async def _call(self, method: str, service_url: str, path: str,
                    body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if check_service_url(service_url, self.cloud, local_dev=self.local_dev,
                             local_connectors=self.local_connectors):
            if self.tokens is None:
                raise NoCredentials
            # Raises TokenUnavailable (a Transient failure) when Azure AD can't give one.
            headers["Authorization"] = "Bearer " + await self.tokens.get_token()
        content = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        url = _join(service_url, path)
        host = urlsplit(service_url).hostname or ""
        started = time.perf_counter()
        # Method, host, status and latency only: never the path (conversation
        # ids), a body or the token.
        with telemetry.span(f"Connector {method}", kind="client", **{
                "http.request.method": method, "server.address": host}) as current:
            if self.session is not None:
                status, raw, retry_after = await self._aiohttp(method, url, content, headers)
            else:
                status, raw, retry_after = await self._httpx(method, url, content, headers)
            telemetry.set_attributes(current, **{"http.response.status_code": status})
        telemetry.record("proactive.connector.duration", time.perf_counter() - started,
                         method=method, status=status)
        if status >= 300:
            raise to_error(status, raw, retry_after)
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    async def _aiohttp(self, method: str, url: str, content: bytes | None,
                       headers: dict[str, str]) -> tuple[int, bytes, str | None]:

        import aiohttp

        assert self.session is not None
        try:
            async with self.session.request(
                    method, url, data=content, headers=headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                raw = await response.read()
                # The line httpx logs for each request (httpx itself logs at WARNING
                # only), without the conversation and activity ids of the URL.
                version = response.version
                log.info('HTTP Request: %s %s "HTTP/%s %s %s"', method, telemetry.log_url(url),
                         f"{version.major}.{version.minor}" if version else "1.1",
                         response.status, response.reason)
                return response.status, raw, response.headers.get("Retry-After")
        except TimeoutError as exc:
            raise ServiceUnavailable(Reason.TIMEOUT, "no answer from Teams in time",
                                     code="Timeout") from exc
        except aiohttp.ClientError as exc:
            raise ServiceUnavailable(Reason.CONNECTION_ERROR, f"could not reach Teams: "
                                     f"{type(exc).__name__}", code=type(exc).__name__) from exc

    async def _httpx(self, method: str, url: str, content: bytes | None,
                     headers: dict[str, str]) -> tuple[int, bytes, str | None]:
        from proactive.teams.transport import request

        response = await request(self.http, method, url, content=content, headers=headers,
                                 timeout=self.timeout, service="Teams")
        return response.status_code, response.content, response.headers.get("Retry-After")

    async def create_personal_conversation(self, service_url: str, *, bot_id: str,
                                           member_id: str, tenant_id: str) -> str:
        body = {
            "bot": {"id": bot_id},
            "members": [{"id": member_id}],
            "isGroup": False,
            "tenantId": tenant_id,
            "channelData": {"tenant": {"id": tenant_id}},
        }
        data = await self._call("POST", service_url, "/v3/conversations", body)
        conversation_id = data.get("id")
        if not isinstance(conversation_id, str) or not conversation_id:
            raise Permanent(Reason.BAD_RESPONSE, "Teams answered without a conversation id",
                            status=200, code="NoConversationId")
        return conversation_id

    async def create_channel_thread(self, service_url: str, *, bot_id: str, channel_id: str,
                                    tenant_id: str, activity: Mapping[str, Any]) -> tuple[str, str]:
        """A new thread in a channel. Returns (thread conversation id, activity id)."""
        body = {
            "bot": {"id": bot_id},
            "isGroup": True,
            "tenantId": tenant_id,
            "channelData": {"channel": {"id": channel_id}, "tenant": {"id": tenant_id}},
            "activity": activity,
        }
        data = await self._call("POST", service_url, "/v3/conversations", body)
        thread = str(data.get("id") or "")
        activity_id = str(data.get("activityId") or "")
        if not activity_id and ";messageid=" in thread:
            activity_id = thread.rsplit(";messageid=", 1)[1]
        if not thread:
            raise Permanent(Reason.BAD_RESPONSE, "Teams answered without a conversation id",
                            status=200, code="NoConversationId")
        return thread, activity_id

    async def send(self, service_url: str, conversation_id: str,
                   activity: Mapping[str, Any]) -> str:
        data = await self._call("POST", service_url, _activities(conversation_id), activity)
        return str(data.get("id") or "")

    async def update(self, service_url: str, conversation_id: str, activity_id: str,
                     activity: Mapping[str, Any]) -> None:
        await self._call("PUT", service_url, _activities(conversation_id, activity_id),
                         {**activity, "id": activity_id})

    async def delete(self, service_url: str, conversation_id: str, activity_id: str) -> None:
        await self._call("DELETE", service_url, _activities(conversation_id, activity_id))

    async def paged_members(self, service_url: str, conversation_id: str, *,
                            page_size: int = 500,
                            continuation: str = "") -> tuple[list[dict[str, Any]], str]:
        """One page of a team's (or chat's) roster and the token of the next
        page ('' on the last). Teams clamps pageSize to 50..500."""
        query = f"?pageSize={page_size}"
        if continuation:
            query += f"&continuationToken={quote(continuation, safe='')}"
        data = await self._call("GET", service_url, f"/v3/conversations/"
                                f"{quote(conversation_id, safe='')}/pagedmembers{query}")
        members = data.get("members")
        token = data.get("continuationToken")
        return ([m for m in members if isinstance(m, dict)] if isinstance(members, list) else [],
                token if isinstance(token, str) else "")
