"""The acknowledgement button: cards that ask "Got it?" and the card a user
sees once they pressed it. Pure functions, no I/O.

The button is an `Action.Execute` (Universal Actions for Adaptive Cards, card
1.4+): Teams posts an `invoke` named `adaptiveCard/action` with the action's
`verb` and `data` to /api/messages, and the bot's answer, HTTP 200 with
`{"statusCode": 200, "type": "application/vnd.microsoft.card.adaptive",
"value": <card>}`, replaces the card for that user (Microsoft Learn, "Universal
Actions for Adaptive Cards" -> "Work with Universal Actions": the
`adaptiveCard/action` invoke request and response formats; the wire model is
Bot Framework's `AdaptiveCardInvokeResponse` {statusCode, type, value} in
Microsoft.Bot.Schema / botframework-schema).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from proactive.contract.fields import DEFAULT_LABEL

if TYPE_CHECKING:
    from proactive.contract import Content

ACK_VERB = "proactive.ack"
ACK_ID = "proactive-ack"  # the action's id, so a refresh finds and removes it
# The button's data is {"sendKey": <key>}. Not "key": the Microsoft 365 Agents
# Playground's Adaptive Cards renderer writes a property of its own named `key`
# into an action's data when it is pressed, which throws on its frozen page
# state, so the press never leaves the page (README "Trying it locally"). Cards
# sent before carry {"key": <key>}; their presses are read too (`pressed_key`).
ACK_DATA = "sendKey"


def ack_action(key: str, label: str) -> dict[str, Any]:
    return {"type": "Action.Execute", "id": ACK_ID, "title": label or DEFAULT_LABEL,
            "verb": ACK_VERB, "data": {ACK_DATA: key}, "style": "positive"}


def pressed_key(data: Any) -> str | None:
    """The send key in a press's `data` (the button's), if it names one."""
    if not isinstance(data, Mapping):
        return None
    key = data.get(ACK_DATA, data.get("key"))
    return key if isinstance(key, str) else None


def text_card(text: str) -> dict[str, Any]:
    """A plain-text send asking for an acknowledgement becomes this card."""
    return {"type": "AdaptiveCard",
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "version": "1.4", "body": [{"type": "TextBlock", "text": text, "wrap": True}]}


def card_as_sent(content: Content, key: str) -> Mapping[str, Any] | None:
    """A Content's card as sent: the producer's or the notification's, with the
    opt-out action unless it is the bot's own message, and the ack button (for
    `key`) when asked; plain text with `ack` becomes a card carrying it."""
    from proactive.delivering.notification import render, with_opt_out

    card = render(content.notification) if content.notification is not None else content.card
    if card is None and content.ack:
        card = text_card(content.text)
    if card is None or content.service:
        return card
    card = with_opt_out(card, content.topic)
    return with_ack(card, key, content.ack) if content.ack else card


def _at_least_14(card: dict[str, Any]) -> None:
    try:
        major, minor = (int(x) for x in str(card.get("version", "1.0")).split(".")[:2])
    except ValueError:
        major, minor = 1, 0
    if (major, minor) < (1, 4):
        card["version"] = "1.4"


def with_ack(card: Mapping[str, Any], key: str, label: str) -> dict[str, Any]:
    """The card with the acknowledgement button first among its actions."""
    out = copy.deepcopy(dict(card))
    _at_least_14(out)
    actions = [a for a in out.get("actions") or [] if not _is_ack(a)]
    out["actions"] = [ack_action(key, label), *actions]
    return out


def _is_ack(action: Any) -> bool:
    return isinstance(action, Mapping) and (action.get("id") == ACK_ID
                                            or action.get("verb") == ACK_VERB)


def local_time(at: datetime, zone_name: str) -> str:
    """"14:02" in the user's zone (the activity's clientInfo / localTimezone);
    "14:02 UTC" when their zone is unknown."""
    from proactive.contract.schedule.zones import zone_or_none

    zone = zone_or_none(zone_name) if zone_name else None
    if zone is None:
        return at.astimezone(UTC).strftime("%H:%M UTC")
    return at.astimezone(zone).strftime("%H:%M")


def acknowledged(card: Mapping[str, Any], when: str) -> dict[str, Any]:
    """The card as its recipient sees it once acknowledged: the button gone,
    "Acknowledged at 14:02" below the content."""
    out = copy.deepcopy(dict(card))
    actions = [a for a in out.get("actions") or [] if not _is_ack(a)]
    if actions:
        out["actions"] = actions
    else:
        out.pop("actions", None)
    body = out.get("body")
    line = {"type": "TextBlock", "text": f"✅ Acknowledged at {when}", "wrap": True,
            "weight": "Bolder", "color": "Good"}
    out["body"] = [*(body if isinstance(body, list) else []), line]
    return out


def error_card(message: str) -> dict[str, Any]:
    return {"type": "AdaptiveCard",
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "version": "1.4",
            "body": [{"type": "TextBlock", "text": message, "wrap": True,
                      "color": "Attention"}]}
