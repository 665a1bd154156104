"""A row of the references table (storage/references.py) as typed values.

`Reference` is what a send needs of a user's or conversation's row: where
and how to reach the conversation. `ReferenceRow` is a whole row of any kind
(user, conversation, team, tenant) as it is read, for what above storage/
reads of one (a team's row, the unreachable users a report lists), as
storage/delivery_rows.py is for delivery rows: `from_entity` reads it, and
`to_entity` gives it back with the same property names and values; a
property this model does not name (the read receipts' fields, storage/reads.py;
a later version's) stays in `extra`. A field that is None is a property the
row does not have.

The store does not write whole rows from this model: a reference row is
written by merges of the few properties an activity, a Connector answer or a
Graph install taught (an upsert of a subset), and a whole-row write would
change which properties each write sets. Those merges stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from proactive.storage.reference_keys import InstallState
from proactive.storage.rows import entity_of, fill, properties
from proactive.storage.rows import stored as _prop


@dataclass(frozen=True)
class Reference:
    """Where and how to reach one conversation."""

    conversation_id: str
    service_url: str
    tenant_id: str
    bot_id: str
    conversation_type: str
    state: str
    timezone: str = ""
    locale: str = ""
    user_id: str = ""
    # A personal (1:1) chat's owner: whose opt-outs a send into it obeys,
    # whatever address it used (README "Opt-out, opt-in, help").
    aad_id: str = ""
    installation_id: str = ""  # Graph's installation of the app for the user, once read
    install_posted: bool = False  # Graph installed the app for the user (POST 201/409)

    @property
    def owner(self) -> str:
        """The AAD id of the person this conversation is a 1:1 chat with, or ""."""
        return self.aad_id if self.conversation_type == "personal" else ""

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> Reference:
        return cls(
            conversation_id=entity.get("conversationId", ""),
            service_url=entity.get("serviceUrl", ""),
            tenant_id=entity.get("tenantId", ""),
            bot_id=entity.get("botId", ""),
            conversation_type=entity.get("conversationType", ""),
            state=entity.get("installState", InstallState.UNKNOWN),
            timezone=entity.get("timezone", ""),
            locale=entity.get("locale", ""),
            user_id=entity.get("userId", ""),
            aad_id=entity.get("aadObjectId", ""),
            installation_id=entity.get("graphInstallationId", ""),
            install_posted=bool(entity.get("graphInstallPosted")),
        )


@dataclass
class ReferenceRow:
    partition_key: str  # user:… conv:… team:… tenant:… (reference_keys.py)
    row_key: str  # the tenant, as a key
    kind: str | None = _prop("kind")  # user, conversation, team; none on a tenant's row
    tenant_id: str | None = _prop("tenantId")
    service_url: str | None = _prop("serviceUrl")
    bot_id: str | None = _prop("botId")
    conversation_id: str | None = _prop("conversationId")
    conversation_type: str | None = _prop("conversationType")
    user_id: str | None = _prop("userId")
    aad_id: str | None = _prop("aadObjectId")
    locale: str | None = _prop("locale")
    timezone: str | None = _prop("timezone")
    team_id: str | None = _prop("teamId")
    team_name: str | None = _prop("teamName")
    aad_group_id: str | None = _prop("aadGroupId")
    channel_ids: str | None = _prop("channelIds")  # JSON: a team's channels
    install_state: str | None = _prop("installState")  # an InstallState
    installed_at: str | None = _prop("installedAt")
    uninstalled_at: str | None = _prop("uninstalledAt")
    blocked_at: str | None = _prop("blockedAt")
    disabled_at: str | None = _prop("disabledAt")
    first_seen: str | None = _prop("firstSeen")
    last_seen: str | None = _prop("lastSeen")
    created_at: str | None = _prop("createdAt")  # a 1:1 chat the bot created
    graph_installation_id: str | None = _prop("graphInstallationId")
    graph_install_posted: bool | None = _prop("graphInstallPosted")
    graph_installation_at: str | None = _prop("graphInstallationAt")
    # Every other property, as read.
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> ReferenceRow:
        row = cls(partition_key=str(entity.get("PartitionKey", "")),
                  row_key=str(entity.get("RowKey", "")))
        return fill(row, entity, skip=("PartitionKey", "RowKey"))

    def to_entity(self) -> dict[str, Any]:
        return {"PartitionKey": self.partition_key, "RowKey": self.row_key,
                **entity_of(self)}

    @property
    def state_at(self) -> str | None:
        """When the row took its install state (`installedAt`, `blockedAt`...)."""
        name, known = f"{self.install_state}At", properties(ReferenceRow)
        return getattr(self, known[name]) if name in known else self.extra.get(name)

    def reference(self, conversation_id: str | None = None) -> Reference:
        """The row as a Reference; `conversation_id`: to another conversation
        than the row's (a team's row, for one of its channels)."""
        found = Reference.from_entity(self.to_entity())
        return found if conversation_id is None else replace(found,
                                                             conversation_id=conversation_id)
