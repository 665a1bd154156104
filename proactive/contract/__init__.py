"""The outbox queue message contract, version 1: what producers put on the
queue and what the app puts there itself, one shape for both.

    {"version": 1, "op": "send", "key": "deploy-4711",
     "to": {"user": "<AAD object id>"},
     "text": "Deployed **4711**", "summary": "Deploy finished"}

Modules (each imports only errors.py, app_only.py and its siblings):

    shapes.py        `OutboxMessage`, `Target`, `Content`, `Op`, `TargetKind`:
                     the only way the app makes a message (`to_json`)
    parse.py         JSON or a producer's fields -> `OutboxMessage`, or
                     InvalidMessage naming the field (`parse_message`, `build`)
    fields.py        follow-up, ack, topic: field shapes more layers share
    notification.py  the `notification` facts checked (rendered in delivering/)
    schedule/        the `schedule` object (`Spec`) and the time rules it is
                     written in; loaded only for a message that has one

The app-only fields and the seal on them: proactive/app_only.py.
"""

from __future__ import annotations

from proactive.app_only import APP_ONLY, SIGNATURE, app_only_fields, refuse_app_only
from proactive.contract.parse import build, parse_data, parse_message, parse_target
from proactive.contract.shapes import (
    ADAPTIVE_CARD,
    AUDIENCES,
    MAX_ID,
    MAX_KEY,
    MAX_USERS,
    VERSION,
    Content,
    OnUnknown,
    Op,
    OutboxMessage,
    Target,
    TargetKind,
)
from proactive.errors import InvalidMessage, Poison

__all__ = [
    "ADAPTIVE_CARD", "APP_ONLY", "AUDIENCES", "MAX_ID", "MAX_KEY", "MAX_USERS", "SIGNATURE",
    "VERSION", "Content", "InvalidMessage", "OnUnknown", "Op", "OutboxMessage", "Poison",
    "Target", "TargetKind", "app_only_fields", "build", "parse_data", "parse_message",
    "parse_target", "refuse_app_only",
]
