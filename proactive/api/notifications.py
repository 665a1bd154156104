"""POST /api/notifications: outbox messages over HTTP.

The body is one contract-v1 message or a JSON array of up to MAX_BATCH. Each is
validated by `proactive.contract.parse_message` with the worker's own settings,
so the API refuses exactly what the queue worker would park in the poison queue,
with the same reason and detail (README "HTTP API"). A batch is all or nothing:
one invalid message refuses the whole batch and nothing is enqueued, so a
producer fixes and resends it without working out which half went through.
A send without a key gets one (`api-<uuid>`), returned with its status URL.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from proactive.api.problems import Problem, Reply
from proactive.contract import OutboxMessage, parse_message, refuse_app_only
from proactive.delivering.render import checked
from proactive.errors import InvalidMessage, Poison
from proactive.storage.queues import MAX_QUEUE_MESSAGE, dumps, encode

if TYPE_CHECKING:
    from proactive.runtime import Runtime

MAX_BATCH = 25
# 25 messages of a few KB each fit easily; one message can't be larger than a
# queue message (64 KB), so a larger body can only be a mistake or an attack.
MAX_BODY = 256 * 1024


def status_path(key: str) -> str:
    """The status route of `key`, relative to the route prefix (`/api/`)."""
    return "sends/" + quote(key, safe="")


def check_size(body: bytes) -> None:
    if len(body) > MAX_BODY:
        raise Problem(413, "too-large", f"the body is {len(body)} bytes; at most {MAX_BODY}")


def check_json_type(content_type: str) -> None:
    """JSON or nothing said: a form post or text/plain is a producer's mistake."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind and kind != "application/json" and not kind.endswith("+json"):
        raise Problem(415, "unsupported-media-type",
                      f"the body must be application/json, not {kind}")


def validate(body: bytes, *, max_activity_bytes: int) -> tuple[list[OutboxMessage], bool]:
    """The messages to enqueue, each with its key, and whether the body was a
    batch; Problem when any is refused."""
    check_size(body)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Problem(400, "not-json", "the message is not JSON") from None
    batch = isinstance(data, list)
    items = data if batch else [data]
    if batch and not 1 <= len(items) <= MAX_BATCH:
        raise Problem(400, "schema", f"a batch holds 1 to {MAX_BATCH} messages")
    out: list[OutboxMessage] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            out.append(_one(item, max_activity_bytes))
        except InvalidMessage as exc:
            errors.append({"index": index, "reason": exc.reason, "detail": exc.detail})
    if errors and not batch:
        raise Problem(400, errors[0]["reason"], errors[0]["detail"])
    if errors:
        raise Problem(400, errors[0]["reason"],
                      f"{len(errors)} of {len(items)} messages are invalid; nothing was "
                      f"enqueued (the first: message {errors[0]['index']}: "
                      f"{errors[0]['detail']})", errors=errors)
    return out, batch


def _one(item: Any, max_activity_bytes: int) -> OutboxMessage:
    # Re-encoded as ASCII JSON: parse_message sees what the queue will carry,
    # and a lone surrogate reaches its own check instead of failing to encode.
    key = f"api-{uuid.uuid4().hex}"
    refuse_app_only(item)  # a producer never sets what only the app may
    message = checked(parse_message(json.dumps(item), default_key=key), max_activity_bytes)
    size = len(encode(dumps(message.to_json())).encode())
    if size > MAX_QUEUE_MESSAGE:
        raise InvalidMessage(Poison.TOO_LARGE, f"the message is {size} bytes as queued; a "
                                               f"queue message holds at most {MAX_QUEUE_MESSAGE}")
    return message


async def accept(rt: Runtime, body: bytes, *, content_type: str, base_url: str,
                 traceparent: str = "") -> Reply:
    """Validate and enqueue; 202 with each message's key and status URL. With
    telemetry on, each message carries this request's trace context, so one
    trace runs from the caller through the queue to Teams."""
    from proactive import telemetry

    check_json_type(content_type)
    messages, batch = validate(body, max_activity_bytes=rt.settings.max_activity_bytes)
    accepted = []
    with telemetry.span("POST /api/notifications", kind="server", traceparent=traceparent):
        for message in messages:
            # A failure here leaves the earlier ones queued: resending the batch
            # is safe, the keys make each delivery happen once.
            parent = message.traceparent or telemetry.traceparent()
            await rt.outbox.put(replace(message, traceparent=parent))
            accepted.append({"key": message.key, "status": base_url + status_path(message.key)})
    answer = {"accepted": accepted} if batch else accepted[0]
    return Reply.json(202, answer, Location=accepted[0]["status"])
