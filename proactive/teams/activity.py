"""One Bot Framework activity from Teams, as the app keeps it: the fields a
conversation reference needs (`Activity`) and what it changes for the stored
references (`Change`). Plain data: proactive/receiving/activities.py parses
and checks the body into one; storage/references.py records it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Change(Enum):
    NONE = "none"
    INSTALLED = "installed"
    UNINSTALLED = "uninstalled"


@dataclass(frozen=True)
class Activity:
    id: str
    type: str
    service_url: str
    channel_id: str
    conversation_id: str
    conversation_type: str
    tenant_id: str
    bot_id: str
    from_id: str
    from_aad_id: str
    locale: str
    timezone: str
    change: Change
    team_id: str = ""
    team_name: str = ""
    team_aad_group_id: str = ""
    channel: str = ""
    event_type: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def scope(self) -> str:
        return self.conversation_type
