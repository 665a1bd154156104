"""The partition keys of the references table: one per user, conversation,
team and tenant; and a row's `installState` (storage/references.py describes
the rows)."""

from __future__ import annotations

from enum import StrEnum

from proactive.errors import Reason
from proactive.storage import tables


class InstallState(StrEnum):
    """A reference's `installState`; the unreachable ones are spelled as
    Teams' reasons (proactive.errors.UNREACHABLE), which mark them."""
    INSTALLED = "installed"
    UNINSTALLED = Reason.UNINSTALLED.value
    BLOCKED = Reason.BLOCKED.value
    DISABLED = Reason.DISABLED.value
    UNKNOWN = "unknown"


def user_pk(aad_id: str) -> str:
    return tables.safe_key(f"user:{aad_id.lower()}")


def conv_pk(conversation_id: str) -> str:
    return tables.safe_key(f"conv:{conversation_id}")


def team_pk(team_id: str) -> str:
    return tables.safe_key(f"team:{team_id}")


def tenant_pk(tenant_id: str) -> str:
    return tables.safe_key(f"tenant:{tenant_id}")
