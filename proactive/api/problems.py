"""RFC 9457 problem details: every error the API gives has this one shape.

    {"type": "https://.../problems/schema", "title": "Invalid message",
     "status": 400, "detail": "'to' must be an object", "reason": "schema"}

`reason` is the machine-readable word the rest of the service uses (the poison
queue's envelope carries the same one), so a producer handles a refusal from
the API and one from the queue the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from proactive.errors import ProactiveError

PROBLEM_JSON = "application/problem+json"
# A relative `type` is allowed (RFC 9457 §3.1.1); it names the reason and
# resolves against the API's own URL, where README "HTTP API" lists them.
TYPE_BASE = "/api/problems/"

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    413: "Content too large",
    415: "Unsupported media type",
    500: "Internal error",
    503: "Service unavailable",
}


@dataclass(frozen=True)
class Reply:
    """What a route answers, independent of the Functions types (tests read it directly)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: Any, **headers: str) -> Reply:
        return cls(status, json.dumps(data, ensure_ascii=False).encode(), "application/json",
                   dict(headers))


class Problem(ProactiveError):
    """A request the API refuses; `extra` adds members (e.g. a batch's `errors`)."""

    def __init__(self, status: int, reason: str, detail: str, **extra: Any) -> None:
        super().__init__(reason, detail)
        self.status, self.extra = status, extra

    def reply(self, headers: dict[str, str] | None = None) -> Reply:
        return problem(self.status, self.reason, self.detail, headers=headers, **self.extra)


def problem(status: int, reason: str, detail: str, *, headers: dict[str, str] | None = None,
            **extra: Any) -> Reply:
    body = {"type": TYPE_BASE + reason, "title": TITLES.get(status, "Error"), "status": status,
            "detail": detail, "reason": reason, **extra}
    return Reply(status, json.dumps(body, ensure_ascii=False).encode(), PROBLEM_JSON,
                 dict(headers or {}))
