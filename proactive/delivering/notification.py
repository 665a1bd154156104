"""Notification cards: the structured `notification` content rendered as an
Adaptive Card, and the "Stop notifications like this" action every
notification card carries.

Microsoft's guidance for notification cards: say what happened, which item it
is about (with a link), who or what did it, what the user can do next (a few
buttons), and how to stop getting them. Producers send those facts; the card
JSON is made here, so every notification looks the same and keeps the way out.

The opt-out is an `Action.Execute` (Universal Actions, card 1.4+): Teams sends
an `invoke` named `adaptiveCard/action` with the verb and data to
/api/messages, and the answer replaces the card in place
(proactive/receiving/commands.py). Pure functions, no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from proactive.contract.notification import SEVERITIES

OPT_OUT_VERB = "proactive.optout"


def opt_out_action(topic: str) -> dict[str, Any]:
    title = "Stop notifications like this" if topic else "Stop all notifications"
    return {"type": "Action.Execute", "title": title, "verb": OPT_OUT_VERB,
            "data": {"topic": topic or "*"}}


def _version_at_least_14(card: Mapping[str, Any]) -> bool:
    try:
        major, minor = (int(x) for x in str(card.get("version", "1.0")).split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (1, 4)


def with_opt_out(card: Mapping[str, Any], topic: str) -> dict[str, Any]:
    """The producer's card with the opt-out action appended (the card is
    raised to version 1.4, where Action.Execute begins, if it is older)."""
    out = copy.deepcopy(dict(card))
    if not _version_at_least_14(out):
        out["version"] = "1.4"
    actions = out.get("actions")
    out["actions"] = [*(actions if isinstance(actions, list) else []), opt_out_action(topic)]
    return out


def render(notification: Mapping[str, Any]) -> dict[str, Any]:
    """The Adaptive Card (1.5) of a checked notification, without the opt-out
    (`with_opt_out` adds it, like to any card)."""
    colour = SEVERITIES[notification.get("severity", "info")]
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": notification["title"], "weight": "Bolder",
         "size": "Medium", "wrap": True, "color": colour, "style": "heading"},
        {"type": "TextBlock", "text": notification["what"], "wrap": True},
    ]
    item = notification.get("item")
    if item:
        name = item["name"]
        text = f"[{name}]({item['url']})" if item.get("url") else name
        body.append({"type": "TextBlock", "text": text, "wrap": True, "weight": "Bolder"})
    facts = [dict(f) for f in notification.get("facts", [])]
    if notification.get("by"):
        facts.insert(0, {"title": "By", "value": notification["by"]})
    if facts:
        body.append({"type": "FactSet", "facts": facts})
    actions = [{"type": "Action.OpenUrl", "title": a["title"], "url": a["url"]}
               for a in notification.get("actions", [])]
    card: dict[str, Any] = {"type": "AdaptiveCard",
                            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                            "version": "1.5", "body": body}
    if actions:
        card["actions"] = actions
    return card
