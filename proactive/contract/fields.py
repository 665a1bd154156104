"""The contract's field-level shapes and checks that more than one layer
uses: the follow-up (`followUp`, `unless`), the acknowledgement button
(`ack`), a `topic`, and whether text can be stored at all. Pure, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from proactive.errors import InvalidMessage, Poison

DEFAULT_LABEL = "Got it"
MAX_LABEL = 40
MIN_AFTER = timedelta(minutes=5)
MAX_AFTER = timedelta(days=30)
_DURATION = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")


class Unless(StrEnum):
    READ = "read"
    ACKED = "acked"


def parse_duration(text: Any) -> timedelta:
    """An ISO 8601 duration of weeks, days, hours, minutes, seconds (PT4H, P1D,
    P1DT12H). Raises ValueError."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None or text in ("P", "PT") or text.endswith("T"):
        raise ValueError("'followUp.after' must be an ISO 8601 duration like PT4H or P1D")
    weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)


@dataclass(frozen=True)
class Condition:
    """The app-only `unless` of a reminder: skip who did `what` on `key`."""

    key: str
    what: Unless

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "what": str(self.what)}

    @classmethod
    def parse(cls, value: Any) -> Condition:
        if not isinstance(value, Mapping) or set(value) != {"key", "what"} \
                or not isinstance(value["key"], str) or value["what"] not in set(Unless):
            raise ValueError("'unless' must be {\"key\": ..., \"what\": \"read\"|\"acked\"}")
        return cls(value["key"], Unless(value["what"]))


@dataclass(frozen=True)
class FollowUp:
    after: timedelta
    unless: Unless
    content: Mapping[str, Any]  # contract content fields: text / card / notification / summary

    def to_json(self) -> dict[str, Any]:
        seconds = int(self.after.total_seconds())
        return {"after": f"PT{seconds}S", "unless": str(self.unless), **self.content}

    @classmethod
    def parse(cls, value: Any) -> FollowUp:
        """Raises ValueError with what is wrong."""
        if not isinstance(value, Mapping):
            raise ValueError("'followUp' must be an object")
        unknown = set(value) - {"after", "unless", "text", "card", "notification", "summary"}
        if unknown:
            raise ValueError(f"'followUp' has unknown field(s): {', '.join(sorted(unknown))}")
        after = parse_duration(value.get("after"))
        if not MIN_AFTER <= after <= MAX_AFTER:
            raise ValueError("'followUp.after' must be at least 5 minutes and at most 30 days")
        if value.get("unless") not in set(Unless):
            raise ValueError("'followUp.unless' must be \"read\" or \"acked\"")
        content = {k: v for k, v in value.items() if k not in ("after", "unless")}
        return cls(after, Unless(value["unless"]), content)


# A topic is a short producer-chosen name (contract v1, `topic`).
TOPIC = re.compile(r"^[a-z0-9._-]{1,64}$")


def valid_topic(value: str) -> bool:
    return bool(TOPIC.match(value))


def encodable(data: Any) -> bool:
    """JSON may escape lone surrogates (\\ud800) that no storage can write."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_ack(value: Any) -> str:
    """The contract's `"ack": true` or `{"label": "..."}`: the button's label,
    "" for no button. Raises ValueError."""
    if value is False:
        return ""
    if value is True:
        return DEFAULT_LABEL
    label = value.get("label") if isinstance(value, Mapping) else None
    if not isinstance(value, Mapping) or set(value) - {"label"} or not isinstance(label, str) \
            or not label.strip() or len(label) > MAX_LABEL:
        raise ValueError(f"'ack' must be true, false or {{\"label\": \"...\"}} "
                         f"(1 to {MAX_LABEL} characters)")
    return label.strip()


def parse_fields(data: Mapping[str, Any], *, check: Callable[[Mapping[str, Any]], object]
                 ) -> dict[str, Any]:
    """The contract's `ack`, `followUp` and `unless` as Content fields; the
    reminder's content is checked with `check` now, not when it is due.
    Raises InvalidMessage."""
    try:
        return _fields(data, check)
    except InvalidMessage:
        raise
    except ValueError as exc:
        raise InvalidMessage(Poison.SCHEMA, str(exc)) from exc


def _fields(data: Mapping[str, Any], check: Callable[[Mapping[str, Any]], object]
            ) -> dict[str, Any]:
    follow_up = FollowUp.parse(data["followUp"]) if "followUp" in data else None
    if follow_up is not None:
        try:
            check(follow_up.content)
        except InvalidMessage as exc:
            raise InvalidMessage(exc.reason, f"followUp: {exc.detail}") from exc
    unless = Condition.parse(data["unless"]) if "unless" in data else None
    return {"ack": parse_ack(data.get("ack", False)), "follow_up": follow_up, "unless": unless}


def fields_json(ack: str, follow_up: FollowUp | None, unless: Condition | None
                ) -> dict[str, Any]:
    """The contract JSON of those fields (what parse_fields reads back)."""
    out: dict[str, Any] = {"ack": {"label": ack}} if ack else {}
    if follow_up is not None:
        out["followUp"] = follow_up.to_json()
    if unless is not None:
        out["unless"] = unless.to_json()
    return out
