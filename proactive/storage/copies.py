"""The copies of a message a delivery row knows Teams accepted, and the
fields that mark an attempt whose outcome is unknown (README "Exactly once,
as far as Teams allows"): a crash mid-call or a lost answer leaves the row
`ambiguous`, and a late answer adds its copy instead of overwriting the row."""

from __future__ import annotations

import json
from typing import Any

from proactive.storage.states import DeliveryState

RETRYING, SENT, UNKNOWN = DeliveryState.RETRYING, DeliveryState.SENT, DeliveryState.UNKNOWN

UNKNOWN_FIELDS = ("ambiguous", "unknownAttempt", "unknownAttemptAt", "unknownCause")


def unknown_attempt(entity: dict[str, Any], cause: str) -> dict[str, Any]:
    """The fields that mark a delivery ambiguous for its current attempt,
    whose outcome is unknown (`cause`: lease-expired, timeout ...). The first
    such attempt is the one kept: a later one changes nothing."""
    if entity.get("ambiguous"):
        return {}
    return {"ambiguous": True, "unknownAttempt": int(entity.get("attempts", 1)),
            "unknownAttemptAt": entity.get("updatedAt", ""), "unknownCause": cause}


def copies(row: dict[str, Any]) -> list[dict[str, str]]:
    """Every copy of the message a row knows Teams accepted: its own
    (activityId) and the others (`otherCopies`), each with where it is."""
    out = []
    if row.get("activityId"):
        out.append({"activityId": str(row["activityId"]),
                    "conversationId": str(row.get("conversationId", "")),
                    "serviceUrl": str(row.get("serviceUrl", ""))})
    try:
        others = json.loads(str(row.get("otherCopies") or "[]"))
    except ValueError:
        others = []
    return out + [c for c in others if isinstance(c, dict) and c.get("activityId")]


def late_copy(row: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
    """`row` (taken over by another claim) with a copy Teams accepted from the
    holder it was taken from. A row that has no sent copy of its own yet
    (waiting for a retry, or recorded unknown) now has this one: the user got
    it. Otherwise it is one of `otherCopies`."""
    row = {**row, **unknown_attempt(row, "late-answer")}
    copy = {k: str(sent.get(k, "")) for k in ("activityId", "conversationId", "serviceUrl")}
    if row.get("state") in (RETRYING, UNKNOWN):
        row.update(copy, state=SENT, sentAt=sent.get("sentAt", ""),
                   tenantId=sent.get("tenantId", ""), leaseUntil="", retryAt="")
        row.pop("reason", None)
        return row
    if copy["activityId"] not in {c["activityId"] for c in copies(row)}:
        row["otherCopies"] = json.dumps(
            [c for c in copies(row) if c["activityId"] != row.get("activityId")] + [copy])
    return row
