"""A message as Teams gets it: the activity of a `Content` (its text, and the
card as sent: the notification rendered, the opt-out and ack buttons added),
and Teams' size limit checked on it. Pure, no I/O.

The contract (proactive/contract/) only reads and writes messages; what they
look like in Teams is made here, so `checked` runs after `parse_message`
wherever a message is taken in (the worker, the HTTP API, the CLI).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from proactive.contract import ADAPTIVE_CARD, Content, OutboxMessage
from proactive.delivering.ack import card_as_sent
from proactive.errors import InvalidMessage, Poison

# Teams' limit on an activity (README "Limits"); PROACTIVE_MAX_ACTIVITY_BYTES.
MAX_ACTIVITY_BYTES = 100 * 1024


def activity(content: Content, key: str = "") -> dict[str, Any]:
    """The message activity of `content` for the send `key` (the ack button's)."""
    out: dict[str, Any] = {"type": "message"}
    if content.text and not (content.ack and content.card is None
                             and content.notification is None):
        out["text"] = content.text
        out["textFormat"] = "markdown"
    card = card_as_sent(content, key)
    if card is not None:
        out["attachments"] = [{"contentType": ADAPTIVE_CARD, "content": card}]
    if content.summary:
        out["summary"] = content.summary
    elif content.notification is not None:  # the feed / toast line
        out["summary"] = content.notification["title"]
    return out


def activity_size(activity: Mapping[str, Any]) -> int:
    """Bytes of the activity's JSON as UTF-16, the measure of Teams' limit."""
    return len(json.dumps(activity, ensure_ascii=False).encode("utf-16-le"))


def checked(message: OutboxMessage, max_activity_bytes: int = MAX_ACTIVITY_BYTES
            ) -> OutboxMessage:
    """The message, if Teams would take its activity; InvalidMessage
    (too-large) otherwise."""
    if message.content is not None:
        size = activity_size(activity(message.content, message.key))
        if size > max_activity_bytes:
            raise InvalidMessage(Poison.TOO_LARGE, f"the activity is {size} bytes as UTF-16; "
                                                   f"Teams accepts at most {max_activity_bytes}")
    return message
