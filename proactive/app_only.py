"""The outbox contract's app-only fields: what only the app sets, on what it
enqueues for itself. A queue message carrying one is acted on only with the
app's `signature` (proactive/storage/seal.py); the HTTP API and the CLI refuse
them. Part of the contract (proactive/contract/ re-exports it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proactive.errors import InvalidMessage, Poison

# Retries, parts, the next page of an audience, its own messages, reminders.
APP_ONLY = ("attempt", "part", "service", "unless")
SIGNATURE = "signature"


def app_only_fields(data: Mapping[str, Any]) -> list[str]:
    """The app-only fields `data` carries, as named in the contract."""
    found = [name for name in APP_ONLY if name in data]
    to = data.get("to")
    if isinstance(to, Mapping) and "continuation" in to:
        found.append("to.continuation")
    return found


def refuse_app_only(data: Any) -> None:
    """A producer's message (HTTP API, CLI): InvalidMessage naming the first
    field only the app may set."""
    if isinstance(data, Mapping):
        for name in [*app_only_fields(data), *([SIGNATURE] if SIGNATURE in data else [])]:
            raise InvalidMessage(Poison.APP_ONLY_FIELD,
                                 f"'{name}' is set by the app only: leave it out")
