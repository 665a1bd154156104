"""Follow-ups: remind the recipients who haven't read (or acknowledged) a send.

A send may carry `"followUp": {"after": "PT4H", "unless": "read" | "acked",
"text" | "card" | "notification": ..., "summary": ...}` (README "Read,
acknowledged, reminded"). When the send is carried out, the reminder is
stored with the existing scheduler (proactive/scheduling) as a normal keyed
send `<key>:reminder` to the same recipients, due `after` from then: a tick
reads only what is due, and the reminder is paced, exactly-once, opt-out-aware
and reportable like any send. Each reminder carries the app-only field
`unless` ({"key", "what"}; signed by the outbox, proactive/storage/seal.py),
and the worker checks it per recipient just before sending (reminders.py): the original
delivery row (one point read) and, for `read`, its chat's read-receipt row
(one point read): O(N) point reads for N recipients, nothing scanned.

Who is not reminded (recorded `skipped` with the reason): who read it
(`already-read`; an acknowledgement counts as read), who acknowledged it
(`already-acked`), whose delivery didn't go out (`not-delivered`), and
deliveries whose read/ack state can't be known, in group chats and channels
(`not-trackable`: Teams sends no receipts there and a button press there is
not one person's). A read state that can't be compared (`unknown`) is reminded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

MIN_AFTER = timedelta(minutes=5)
MAX_AFTER = timedelta(days=30)
SUFFIX = ":reminder"
_DURATION = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")


class Unless(StrEnum):
    READ = "read"
    ACKED = "acked"


class Skip(StrEnum):
    """Why a recipient gets no reminder (the reminder's delivery `reason`)."""
    READ = "already-read"
    ACKED = "already-acked"
    NOT_DELIVERED = "not-delivered"
    NOT_TRACKABLE = "not-trackable"


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


def reminder(key: str, to: Mapping[str, Any], follow_up: FollowUp, due: str) -> dict[str, Any]:
    """The outbox message of the reminder (contract JSON) to the send's
    recipients `to` (its contract `to`), scheduled at `due`."""
    return {"version": 1, "op": "send", "key": f"{key}{SUFFIX}", "to": dict(to),
            **follow_up.content, "schedule": {"at": due},
            "unless": Condition(key, follow_up.unless).to_json()}


def parse_fields(data: Mapping[str, Any], *, check: Callable[[Mapping[str, Any]], object]
                 ) -> dict[str, Any]:
    """The contract's `ack`, `followUp` and `unless` as Content fields; the
    reminder's content is checked with `check` now, not when it is due.
    Raises InvalidMessage."""
    from proactive.errors import InvalidMessage

    try:
        return _fields(data, check)
    except InvalidMessage:
        raise
    except ValueError as exc:
        raise InvalidMessage("schema", str(exc)) from exc


def _fields(data: Mapping[str, Any], check: Callable[[Mapping[str, Any]], object]
            ) -> dict[str, Any]:
    from proactive.delivering.ack import parse_ack
    from proactive.errors import InvalidMessage

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
