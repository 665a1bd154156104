"""Reading contract v1: JSON (a queue message, a request body) or a producer's
fields into an `OutboxMessage`, or InvalidMessage with a reason and the field.

Published as JSON Schema in `proactive/schemas/outbox-message.v1.json` (the
tests check this validator and the schema agree). Validation here is plain
Python so that a cold start does not pay for a schema library. Teams' size
limit needs the rendered activity, so it is checked a layer up
(proactive/delivering/render.py `checked`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from proactive.app_only import SIGNATURE, app_only_fields
from proactive.contract.fields import encodable, parse_fields, valid_topic
from proactive.contract.shapes import (
    AUDIENCES,
    MAX_ID,
    MAX_KEY,
    MAX_USERS,
    VERSION,
    Content,
    OnUnknown,
    Op,
    OutboxMessage,
    Target,
    TargetKind,
)
from proactive.errors import InvalidMessage, Poison

if TYPE_CHECKING:
    from proactive.contract.schedule.spec import Spec

# Contract v1's top-level fields.
_TOP = {"version", "op", "key", "to", "text", "card", "summary", "attempt", "part", "schedule",
        "topic", "notification", "service", "traceparent", "signature",
        "onUnknown", "ack", "followUp", "unless"}
# W3C trace context of the producer (README "Telemetry"). A malformed one is
# kept but ignored (W3C: start a new trace), never a reason to park a message.
MAX_TRACEPARENT = 128
_TARGETS = {
    TargetKind.USER: {"user", "tenant"},
    TargetKind.CONVERSATION: {"conversation", "tenant"},
    TargetKind.CHANNEL: {"channel", "team", "tenant", "replyTo"},
    # `guests` is set by the splitter on a part of a group's guests (reported so).
    TargetKind.USERS: {"users", "tenant", "guests"},
    TargetKind.ALL_USERS: {"allUsers", "tenant"},
    # Audiences listed page by page; `continuation` is set by the splitter on
    # the message that lists the next page (README "Audiences").
    TargetKind.TEAM_MEMBERS: {"teamMembers", "tenant", "continuation"},
    TargetKind.GROUP: {"group", "tenant", "continuation"},
}


def _text(data: Mapping[str, Any], name: str, *, limit: int, required: bool = False) -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise InvalidMessage(Poison.SCHEMA, f"'{name}' is required")
        return ""
    if not isinstance(value, str) or not value.strip():
        raise InvalidMessage(Poison.SCHEMA, f"'{name}' must be a non-empty string")
    if len(value) > limit:
        raise InvalidMessage(Poison.SCHEMA, f"'{name}' is longer than {limit} characters")
    return value


def parse_target(data: Any) -> Target:
    if not isinstance(data, Mapping):
        raise InvalidMessage(Poison.SCHEMA, "'to' must be an object")
    kinds = [kind for kind in _TARGETS if kind in data]
    if len(kinds) != 1:
        raise InvalidMessage(Poison.SCHEMA, "'to' needs exactly one of "
                                            f"{', '.join(repr(str(k)) for k in _TARGETS)}")
    kind = kinds[0]
    extra = set(data) - _TARGETS[kind]
    if extra:
        raise InvalidMessage(Poison.SCHEMA,
                             f"'to' has unknown field(s): {', '.join(sorted(extra))}")
    tenant = _text(data, "tenant", limit=MAX_ID)
    if kind == TargetKind.ALL_USERS:
        if data["allUsers"] is not True:
            raise InvalidMessage(Poison.SCHEMA, "'allUsers' must be true")
        return Target(kind=kind, tenant=tenant)
    if kind == TargetKind.USERS:
        users = data["users"]
        if not isinstance(users, list) or not 1 <= len(users) <= MAX_USERS:
            raise InvalidMessage(Poison.SCHEMA, f"'users' must be a list of 1 to {MAX_USERS} ids")
        if not all(isinstance(u, str) and u.strip() and len(u) <= MAX_ID for u in users):
            raise InvalidMessage(Poison.SCHEMA, "'users' must hold non-empty id strings")
        if data.get("guests", True) is not True:
            raise InvalidMessage(Poison.SCHEMA, "'guests' must be true when present")
        # Order kept, duplicates dropped: one delivery per person.
        return Target(kind=kind, tenant=tenant, users=tuple(dict.fromkeys(users)),
                      guests=bool(data.get("guests")))
    if kind in (TargetKind.TEAM_MEMBERS, TargetKind.GROUP):
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
        raise InvalidMessage(Poison.SCHEMA, "'card' must be an Adaptive Card object "
                                            "(\"type\": \"AdaptiveCard\")")
    text = _text(data, "text", limit=1 << 20)
    notification = _notification(data)
    if (card is not None) + (notification is not None) > 1:
        raise InvalidMessage(Poison.SCHEMA, "give 'card' or 'notification', not both")
    if not text and card is None and notification is None:
        raise InvalidMessage(Poison.SCHEMA, "'text', 'card' or 'notification' is required")
    topic = _text(data, "topic", limit=64)
    if topic and not valid_topic(topic):
        raise InvalidMessage(Poison.SCHEMA, "'topic' must be 1 to 64 of a-z 0-9 . _ -")
    if data.get("service", True) is not True:
        raise InvalidMessage(Poison.SCHEMA, "'service' must be true when present")
    on_unknown = data.get("onUnknown", OnUnknown.RESEND)
    if on_unknown not in set(OnUnknown):
        raise InvalidMessage(Poison.SCHEMA, f"'onUnknown' must be one of {', '.join(OnUnknown)}")
    return Content(text=text, card=card, summary=_text(data, "summary", limit=1000),
                   topic=topic, notification=notification, service="service" in data,
                   on_unknown=OnUnknown(on_unknown), **parse_fields(data, check=_content))


def _notification(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if "notification" not in data:
        return None
    from proactive.contract.notification import check_notification

    try:
        return check_notification(data["notification"])
    except ValueError as exc:
        raise InvalidMessage(Poison.SCHEMA, str(exc)) from exc


def parse_message(body: str | bytes, *, default_key: str = "") -> OutboxMessage:
    """Decode and validate one queue message; raise InvalidMessage."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidMessage(Poison.NOT_JSON, "the message is not JSON") from exc
    return parse_data(data, default_key=default_key)


def build(op: Op, **fields: Any) -> OutboxMessage:
    """A message from its contract fields, checked as a producer's would be:
    for what a person or another system chose (CLI flags, a reminder's
    content). `to` and the content fields as the contract spells them."""
    return parse_data({**fields, "version": VERSION, "op": str(op)})


def parse_data(data: Any, *, default_key: str = "") -> OutboxMessage:
    """Validate one decoded message; raise InvalidMessage."""
    if not isinstance(data, Mapping):
        raise InvalidMessage(Poison.SCHEMA, "the message must be a JSON object")
    if not encodable(data):
        raise InvalidMessage(Poison.SCHEMA, "the message holds invalid unicode (lone surrogates)")
    if data.get("version") != VERSION or isinstance(data.get("version"), bool):
        raise InvalidMessage(Poison.UNSUPPORTED_VERSION, f"'version' must be {VERSION}")
    if data.get("part", True) is not True:
        raise InvalidMessage(Poison.SCHEMA, "'part' must be true when present")
    attempt = data.get("attempt", 1)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise InvalidMessage(Poison.SCHEMA, "'attempt' must be a whole number from 1")
    op = data.get("op")
    if op not in set(Op):
        raise InvalidMessage(Poison.UNKNOWN_OP, f"'op' must be one of {', '.join(Op)}")
    unknown = set(data) - _TOP
    if unknown:
        raise InvalidMessage(Poison.SCHEMA, f"unknown field(s): {', '.join(sorted(unknown))}")
    traceparent = _text(data, "traceparent", limit=MAX_TRACEPARENT)
    _text(data, SIGNATURE, limit=200)
    message = _message(data, Op(op), attempt, default_key)
    needs_seal = bool(app_only_fields(data))
    if traceparent or needs_seal:
        message = replace(message, traceparent=traceparent, needs_seal=needs_seal)
    return message


def _message(data: Mapping[str, Any], op: Op, attempt: int, default_key: str) -> OutboxMessage:
    key = _text(data, "key", limit=MAX_KEY, required=op != Op.SEND) or default_key
    if not key:
        raise InvalidMessage(Poison.SCHEMA, "'key' is required")
    if op in (Op.DELETE, Op.CANCEL):
        for name in ("to", "text", "card", "summary", "schedule", "topic", "notification",
                     "onUnknown", "ack", "followUp", "unless"):
            if name in data:
                raise InvalidMessage(Poison.SCHEMA, f"'{name}' is not allowed with op '{op}'")
        return OutboxMessage(op=op, key=key, attempt=attempt)
    if op == Op.INSTALL:
        return _install(data, key, attempt)
    if op == Op.UPDATE and "to" in data:
        raise InvalidMessage(Poison.SCHEMA, "'to' is not allowed with op 'update': "
                                            "the key names the message")
    if op == Op.UPDATE and "onUnknown" in data:
        raise InvalidMessage(Poison.SCHEMA, "'onUnknown' is not allowed with op 'update': it "
                                            "belongs to the send")
    target = parse_target(data.get("to")) if op == Op.SEND else None
    schedule = _schedule(data["schedule"], key) if "schedule" in data else None
    if op == Op.UPDATE and schedule is not None \
            and not {"text", "card", "notification"} & set(data):
        return OutboxMessage(op=op, key=key, schedule=schedule,  # a new time only
                             attempt=attempt)
    return OutboxMessage(op=op, key=key, target=target, content=_content(data),
                         schedule=schedule, attempt=attempt, part=bool(data.get("part")))


def _schedule(data: Any, key: str) -> Spec:
    # Imported here: only scheduled messages pay for the time zone machinery.
    from proactive.contract.schedule.spec import message_spec

    return message_spec(data, key)


def _install(data: Mapping[str, Any], key: str, attempt: int) -> OutboxMessage:
    """op install (README "Pre-installing for an audience"): the app installed
    for each user of an audience through Graph; no content, nothing sent."""
    for name in ("text", "card", "summary", "schedule", "topic", "notification", "service",
                 "onUnknown"):
        if name in data:
            raise InvalidMessage(Poison.SCHEMA, f"'{name}' is not allowed with op 'install': "
                                                f"it installs the app and sends nothing")
    target = parse_target(data.get("to"))
    if not target.is_broadcast:
        raise InvalidMessage(Poison.SCHEMA, "op 'install' needs an audience in 'to': "
                                            f"{', '.join(repr(str(k)) for k in AUDIENCES)}")
    return OutboxMessage(op=Op.INSTALL, key=key, target=target, attempt=attempt,
                         part=bool(data.get("part")))
