"""The contract's `notification`: the facts a producer sends, checked here;
proactive/delivering/notification.py renders them as a card. Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_ACTIONS = 4  # plus the opt-out: Teams shows at most 6 buttons; fewer read better
MAX_FACTS = 10
SEVERITIES = {"info": "Default", "success": "Good", "warning": "Warning", "error": "Attention"}
_FIELDS = {"title", "what", "item", "by", "facts", "actions", "severity"}


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
