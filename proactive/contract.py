"""The outbox queue message contract, version 1.

Published as JSON Schema in `proactive/schemas/outbox-message.v1.json` (the
tests check this validator and the schema agree). Validation here is plain
Python so that a cold start does not pay for a schema library.

    {"version": 1, "op": "send", "key": "deploy-4711",
     "to": {"user": "<AAD object id>"},
     "text": "Deployed **4711**", "summary": "Deploy finished"}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from proactive.app_only import (  # noqa: F401 - part of the contract
    APP_ONLY,
    SIGNATURE,
    app_only_fields,
    refuse_app_only,
)
from proactive.delivering.followup import Condition, FollowUp, parse_fields
from proactive.errors import InvalidMessage
from proactive.receiving.activities import encodable

if TYPE_CHECKING:
    from proactive.scheduling.spec import Spec

VERSION = 1
OPS = ("send", "update", "delete", "cancel", "install")
MAX_KEY = 200
MAX_ID = 512
# A storage queue message holds at most 64 KB, about 1,600 AAD ids; larger
# audiences are sent as several messages with the same key, or as allUsers.
MAX_USERS = 10_000
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"

_TOP = {"version", "op", "key", "to", "text", "card", "summary", "attempt", "part", "schedule",
        "topic", "notification", "service", "traceparent", "signature",
        "onUnknown", "ack", "followUp", "unless"}
# What a send does with a recipient whose earlier attempt's outcome is unknown
# (a worker died mid-call, an answer was lost): README "Exactly once, as far
# as Teams allows". resend: at least once (the default); skip: at most once.
ON_UNKNOWN = ("resend", "skip")
# W3C trace context of the producer (README "Telemetry"). A malformed one is
# kept but ignored (W3C: start a new trace), never a reason to park a message.
MAX_TRACEPARENT = 128
_TARGETS = {
    "user": {"user", "tenant"},
    "conversation": {"conversation", "tenant"},
    "channel": {"channel", "team", "tenant", "replyTo"},
    # `guests` is set by the splitter on a part of a group's guests (reported so).
    "users": {"users", "tenant", "guests"},
    "allUsers": {"allUsers", "tenant"},
    # Audiences listed page by page; `continuation` is set by the splitter on
    # the message that lists the next page (README "Audiences").
    "teamMembers": {"teamMembers", "tenant", "continuation"},
    "group": {"group", "tenant", "continuation"},
}
_AUDIENCES = ("users", "allUsers", "teamMembers", "group")


@dataclass(frozen=True)
class Target:
    kind: str  # user | conversation | channel | users | allUsers | teamMembers | group
    id: str = ""
    tenant: str = ""
    team: str = ""
    reply_to: str = ""
    users: tuple[str, ...] = ()
    continuation: str = ""  # teamMembers / group: where the next page starts
    guests: bool = False  # users: a part of an audience's guests (Graph userType Guest)

    @property
    def is_broadcast(self) -> bool:
        return self.kind in _AUDIENCES

    def to_json(self) -> dict[str, Any]:
        """The contract's `to` (what `parse_target` reads)."""
        to: dict[str, Any]
        if self.kind == "users":
            to = {"users": list(self.users)}
            if self.guests:
                to["guests"] = True
        elif self.kind == "allUsers":
            to = {"allUsers": True}
        else:
            to = {self.kind: self.id}
        for name, value in (("tenant", self.tenant), ("team", self.team),
                            ("replyTo", self.reply_to), ("continuation", self.continuation)):
            if value:
                to[name] = value
        return to

    @property
    def recipient(self) -> str:
        """The stable name of this recipient in delivery records."""
        if self.kind == "user":
            return f"user:{self.id.lower()}"
        if self.kind == "channel":
            return f"thread:{self.id};{self.reply_to}" if self.reply_to else f"channel:{self.id}"
        return f"conv:{self.id}"


@dataclass(frozen=True)
class Content:
    text: str = ""
    card: Mapping[str, Any] | None = None
    summary: str = ""
    # Opt-outs (README "Opt-out, opt-in, help"): the producer's name for this
    # kind of message; `service` marks the bot's own messages (welcome, answers
    # to help/stop/start), never skipped and without the opt-out action.
    topic: str = ""
    notification: Mapping[str, Any] | None = None  # facts, rendered to a card
    service: bool = False
    on_unknown: str = "resend"  # ON_UNKNOWN: kept with the content, so schedules keep it
    # README "Read, acknowledged, reminded" (proactive/delivering/followup.py).
    ack: str = ""
    follow_up: FollowUp | None = None
    unless: Condition | None = None

    def to_json(self) -> dict[str, Any]:
        """The contract's content fields (what `parse_message` reads)."""
        out: dict[str, Any] = {}
        if self.text:
            out["text"] = self.text
        if self.card is not None:
            out["card"] = dict(self.card)
        if self.summary:
            out["summary"] = self.summary
        if self.topic:
            out["topic"] = self.topic
        if self.notification is not None:
            out["notification"] = dict(self.notification)
        if self.service:
            out["service"] = True
        if self.on_unknown != "resend":
            out["onUnknown"] = self.on_unknown
        from proactive.delivering.followup import fields_json

        return {**out, **fields_json(self.ack, self.follow_up, self.unless)}

    def card_to_send(self, key: str = "") -> Mapping[str, Any] | None:
        from proactive.delivering.ack import card_as_sent  # opt-out and ack buttons added
        return card_as_sent(self, key)

    def activity(self, key: str = "") -> dict[str, Any]:
        activity: dict[str, Any] = {"type": "message"}
        if self.text and not (self.ack and self.card is None and self.notification is None):
            activity["text"] = self.text
            activity["textFormat"] = "markdown"
        card = self.card_to_send(key)
        if card is not None:
            activity["attachments"] = [{"contentType": ADAPTIVE_CARD, "content": card}]
        if self.summary:
            activity["summary"] = self.summary
        elif self.notification is not None:  # the feed / toast line
            activity["summary"] = self.notification["title"]
        return activity


@dataclass(frozen=True)
class OutboxMessage:
    op: str
    key: str
    target: Target | None = None
    content: Content | None = None
    # send: when (README "Scheduling"); update: a new time for a scheduled key.
    schedule: Spec | None = None
    attempt: int = 1  # this is the attempt-th try (retries count up)
    part: bool = False  # one part of a many-user send, already split
    traceparent: str = ""  # the producer's trace; copies (retries, parts) carry it on
    needs_seal: bool = False  # it came with app-only fields: the worker checks the signature

    def to_json(self) -> dict[str, Any]:
        """The message as contract v1 JSON (what `parse_message` reads back).
        The key is always written: a copy must stay the same delivery."""
        out: dict[str, Any] = {"version": VERSION, "op": self.op, "key": self.key}
        if self.target is not None:
            out["to"] = self.target.to_json()
        if self.content is not None:
            out.update(self.content.to_json())
        if self.schedule is not None:
            out["schedule"] = self.schedule.to_json()
        if self.attempt > 1:
            out["attempt"] = self.attempt
        if self.part:
            out["part"] = True
        if self.traceparent:
            out["traceparent"] = self.traceparent
        return out

    def retry(self, *, attempt: int) -> OutboxMessage:
        """The copy that goes back on the queue for another try."""
        return replace(self, attempt=attempt)

    def for_users(self, users: list[str] | tuple[str, ...], tenant: str = "", *,
                  guests: bool | None = None) -> OutboxMessage:
        """A part of a many-user send for these users (same key, content and
        attempt; an audience's tenant when it is known only once listed;
        `guests`: they are guests of the tenant, None: as this part says)."""
        assert self.target is not None
        return replace(self, target=replace(
            self.target, kind="users", users=tuple(users), id="", continuation="",
            tenant=tenant or self.target.tenant,
            guests=self.target.guests if guests is None else guests), part=True)

    def next_page(self, continuation: str) -> OutboxMessage:
        """The message that lists the next page of a paged audience."""
        assert self.target is not None
        return replace(self, target=replace(self.target, continuation=continuation),
                       part=True, attempt=1)


def _text(data: Mapping[str, Any], name: str, *, limit: int, required: bool = False) -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise InvalidMessage("schema", f"'{name}' is required")
        return ""
    if not isinstance(value, str) or not value.strip():
        raise InvalidMessage("schema", f"'{name}' must be a non-empty string")
    if len(value) > limit:
        raise InvalidMessage("schema", f"'{name}' is longer than {limit} characters")
    return value


def parse_target(data: Any) -> Target:
    if not isinstance(data, Mapping):
        raise InvalidMessage("schema", "'to' must be an object")
    kinds = [kind for kind in _TARGETS if kind in data]
    if len(kinds) != 1:
        raise InvalidMessage("schema", "'to' needs exactly one of "
                                       f"{', '.join(repr(k) for k in _TARGETS)}")
    kind = kinds[0]
    extra = set(data) - _TARGETS[kind]
    if extra:
        raise InvalidMessage("schema", f"'to' has unknown field(s): {', '.join(sorted(extra))}")
    tenant = _text(data, "tenant", limit=MAX_ID)
    if kind == "allUsers":
        if data["allUsers"] is not True:
            raise InvalidMessage("schema", "'allUsers' must be true")
        return Target(kind=kind, tenant=tenant)
    if kind == "users":
        users = data["users"]
        if not isinstance(users, list) or not 1 <= len(users) <= MAX_USERS:
            raise InvalidMessage("schema", f"'users' must be a list of 1 to {MAX_USERS} ids")
        if not all(isinstance(u, str) and u.strip() and len(u) <= MAX_ID for u in users):
            raise InvalidMessage("schema", "'users' must hold non-empty id strings")
        if data.get("guests", True) is not True:
            raise InvalidMessage("schema", "'guests' must be true when present")
        # Order kept, duplicates dropped: one delivery per person.
        return Target(kind=kind, tenant=tenant, users=tuple(dict.fromkeys(users)),
                      guests=bool(data.get("guests")))
    if kind in ("teamMembers", "group"):
        return Target(kind=kind, id=_text(data, kind, limit=MAX_ID, required=True),
                      tenant=tenant, continuation=_text(data, "continuation", limit=4096))
    return Target(
        kind=kind,
        id=_text(data, kind, limit=MAX_ID, required=True),
        tenant=_text(data, "tenant", limit=MAX_ID),
        team=_text(data, "team", limit=MAX_ID),
        reply_to=_text(data, "replyTo", limit=MAX_ID),
    )


def _content(data: Mapping[str, Any]) -> Content:
    card = data.get("card")
    if card is not None and (not isinstance(card, Mapping) or card.get("type") != "AdaptiveCard"):
        raise InvalidMessage("schema", "'card' must be an Adaptive Card object "
                                       "(\"type\": \"AdaptiveCard\")")
    text = _text(data, "text", limit=1 << 20)
    notification = _notification(data)
    if (card is not None) + (notification is not None) > 1:
        raise InvalidMessage("schema", "give 'card' or 'notification', not both")
    if not text and card is None and notification is None:
        raise InvalidMessage("schema", "'text', 'card' or 'notification' is required")
    topic = _text(data, "topic", limit=64)
    from proactive.storage.preferences import valid_topic

    if topic and not valid_topic(topic):
        raise InvalidMessage("schema", "'topic' must be 1 to 64 of a-z 0-9 . _ -")
    if data.get("service", True) is not True:
        raise InvalidMessage("schema", "'service' must be true when present")
    on_unknown = data.get("onUnknown", "resend")
    if on_unknown not in ON_UNKNOWN:
        raise InvalidMessage("schema", f"'onUnknown' must be one of {', '.join(ON_UNKNOWN)}")
    return Content(text=text, card=card, summary=_text(data, "summary", limit=1000),
                   topic=topic, notification=notification, service="service" in data,
                   on_unknown=on_unknown, **parse_fields(data, check=_content))


def _notification(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if "notification" not in data:
        return None
    from proactive.delivering.notification import check_notification

    try:
        return check_notification(data["notification"])
    except ValueError as exc:
        raise InvalidMessage("schema", str(exc)) from exc


def parse_message(body: str | bytes, *, default_key: str = "",
                  max_activity_bytes: int = 100 * 1024) -> OutboxMessage:
    """Decode and validate one queue message; raise InvalidMessage."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidMessage("not-json", "the message is not JSON") from exc
    if not isinstance(data, Mapping):
        raise InvalidMessage("schema", "the message must be a JSON object")
    if not encodable(data):
        raise InvalidMessage("schema", "the message holds invalid unicode (lone surrogates)")
    if data.get("version") != VERSION or isinstance(data.get("version"), bool):
        raise InvalidMessage("unsupported-version", f"'version' must be {VERSION}")
    if data.get("part", True) is not True:
        raise InvalidMessage("schema", "'part' must be true when present")
    attempt = data.get("attempt", 1)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise InvalidMessage("schema", "'attempt' must be a whole number from 1")
    op = data.get("op")
    if op not in OPS:
        raise InvalidMessage("unknown-op", f"'op' must be one of {', '.join(OPS)}")
    unknown = set(data) - _TOP
    if unknown:
        raise InvalidMessage("schema", f"unknown field(s): {', '.join(sorted(unknown))}")
    traceparent = _text(data, "traceparent", limit=MAX_TRACEPARENT)
    _text(data, SIGNATURE, limit=200)
    message = _message(data, op, attempt, default_key, max_activity_bytes)
    needs_seal = bool(app_only_fields(data))
    if traceparent or needs_seal:
        message = replace(message, traceparent=traceparent, needs_seal=needs_seal)
    return message


def _message(data: Mapping[str, Any], op: str, attempt: int, default_key: str,
             max_activity_bytes: int) -> OutboxMessage:
    key = _text(data, "key", limit=MAX_KEY, required=op != "send") or default_key
    if not key:
        raise InvalidMessage("schema", "'key' is required")
    if op in ("delete", "cancel"):
        for name in ("to", "text", "card", "summary", "schedule", "topic", "notification",
                     "onUnknown", "ack", "followUp", "unless"):
            if name in data:
                raise InvalidMessage("schema", f"'{name}' is not allowed with op '{op}'")
        return OutboxMessage(op=op, key=key, attempt=attempt)
    if op == "install":
        return _install(data, key, attempt)
    if op == "update" and "to" in data:
        raise InvalidMessage("schema", "'to' is not allowed with op 'update': "
                                       "the key names the message")
    if op == "update" and "onUnknown" in data:
        raise InvalidMessage("schema", "'onUnknown' is not allowed with op 'update': it "
                                       "belongs to the send")
    target = parse_target(data.get("to")) if op == "send" else None
    # Imported here: only scheduled messages pay for the time zone machinery.
    from proactive.scheduling.spec import message_spec

    schedule = message_spec(data["schedule"], key) if "schedule" in data else None
    if op == "update" and schedule is not None and not {"text", "card", "notification"} & set(data):
        return OutboxMessage(op=op, key=key, schedule=schedule,  # a new time only
                             attempt=attempt)
    content = _content(data)
    size = activity_size(content.activity(key))
    if size > max_activity_bytes:
        raise InvalidMessage("too-large", f"the activity is {size} bytes as UTF-16; "
                                          f"Teams accepts at most {max_activity_bytes}")
    return OutboxMessage(op=op, key=key, target=target, content=content, schedule=schedule,
                         attempt=attempt, part=bool(data.get("part")))


def _install(data: Mapping[str, Any], key: str, attempt: int) -> OutboxMessage:
    """op install (README "Pre-installing for an audience"): the app installed
    for each user of an audience through Graph; no content, nothing sent."""
    for name in ("text", "card", "summary", "schedule", "topic", "notification", "service",
                 "onUnknown"):
        if name in data:
            raise InvalidMessage("schema", f"'{name}' is not allowed with op 'install': "
                                           f"it installs the app and sends nothing")
    target = parse_target(data.get("to"))
    if not target.is_broadcast:
        raise InvalidMessage("schema", "op 'install' needs an audience in 'to': "
                                       f"{', '.join(repr(k) for k in _AUDIENCES)}")
    return OutboxMessage(op="install", key=key, target=target, attempt=attempt,
                         part=bool(data.get("part")))


def activity_size(activity: Mapping[str, Any]) -> int:
    """Bytes of the activity's JSON as UTF-16, the measure of Teams' limit."""
    return len(json.dumps(activity, ensure_ascii=False).encode("utf-16-le"))
