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

OPT_OUT_VERB = "proactive.optout"
MAX_ACTIONS = 4  # plus the opt-out: Teams shows at most 6 buttons; fewer read better
MAX_FACTS = 10
SEVERITIES = {"info": "Default", "success": "Good", "warning": "Warning", "error": "Attention"}
_FIELDS = {"title", "what", "item", "by", "facts", "actions", "severity"}


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


def _text(data: Mapping[str, Any], name: str, limit: int, *, required: bool = False) -> str:
    value = data.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ValueError(f"'notification.{name}' must be a non-empty string of at most "
                         f"{limit} characters")
    return value


def _url(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("https://") or len(value) > 2048:
        raise ValueError(f"'{where}' must be an https:// URL")
    return value


def check_notification(data: Any) -> dict[str, Any]:
    """Validate the contract's `notification`; raise ValueError with the reason."""
    if not isinstance(data, Mapping):
        raise ValueError("'notification' must be an object")
    extra = set(data) - _FIELDS
    if extra:
        raise ValueError(f"'notification' has unknown field(s): {', '.join(sorted(extra))}")
    _text(data, "title", 200, required=True)
    _text(data, "what", 2000, required=True)
    _text(data, "by", 200)
    if "item" in data:
        item = data["item"]
        if not isinstance(item, Mapping) or set(item) - {"name", "url"}:
            raise ValueError("'notification.item' must be {\"name\", \"url\"}")
        _text(item, "name", 200, required=True)
        if "url" in item:
            _url(item["url"], "notification.item.url")
    facts = data.get("facts", [])
    if not isinstance(facts, list) or len(facts) > MAX_FACTS or not all(
            isinstance(f, Mapping) and set(f) == {"title", "value"}
            and all(isinstance(f[k], str) and 0 < len(f[k]) <= 500 for k in f) for f in facts):
        raise ValueError(f"'notification.facts' must be at most {MAX_FACTS} "
                         "{\"title\", \"value\"} strings")
    actions = data.get("actions", [])
    if not isinstance(actions, list) or len(actions) > MAX_ACTIONS:
        raise ValueError(f"'notification.actions' must be a list of at most {MAX_ACTIONS}")
    for i, action in enumerate(actions):
        if not isinstance(action, Mapping) or set(action) != {"title", "url"}:
            raise ValueError("each of 'notification.actions' must be {\"title\", \"url\"}")
        _text(action, "title", 60, required=True)
        _url(action["url"], f"notification.actions[{i}].url")
    if data.get("severity", "info") not in SEVERITIES:
        raise ValueError(f"'notification.severity' must be one of {', '.join(SEVERITIES)}")
    return dict(data)


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
