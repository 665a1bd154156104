"""Conversation references in Table Storage: everything a later proactive send
needs, kept fresh by every inbound activity.

One table, rows keyed by what producers address (PartitionKey) and the tenant
(RowKey), so a lookup without a tenant is a single-partition query:

    user:{aad object id}   the user's personal (1:1) conversation
    conv:{conversation id} any conversation seen: personal, group chat, channel
    team:{team id}         a team the bot is installed in, with its channels
    tenant:{tenant id}     the tenant's latest serviceUrl (to create 1:1 chats)
    users:{tenant id}      the tenant's users, a copy of each user row
                           (storage/user_index.py: allUsers without a scan)

Install state lives on the user, conversation and team rows: `installed`,
`uninstalled` (kept, with when), `blocked` (the user blocked the bot).

Rows leave this store typed (storage/reference_rows.py): a `Reference` to
send to, a team's whole `ReferenceRow`. Writes stay merges of the properties
each activity or answer taught: see that module.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from proactive.storage import tables, user_index
from proactive.storage.reference_keys import (
    InstallState,
    conv_pk,
    team_pk,
    tenant_pk,
    user_pk,
)
from proactive.storage.reference_rows import Reference as Reference  # the senders' import
from proactive.storage.reference_rows import ReferenceRow
from proactive.teams.activity import Activity, Change

if TYPE_CHECKING:
    from proactive.storage.tables import Table

# How long a reachable reference read here is used again without a storage
# read (per process). Only `installed` rows are kept: a cached row can only be
# stale towards trying Teams, whose answer (403/404) is authoritative and
# marks the row; an uninstalled or blocked row is read again every time, so a
# reinstall seen by another instance counts at once. Writes through this store
# drop what they touch. At most CACHE_SIZE rows (~3 KB each): a part holds its
# own users' rows while it runs (`part`): nothing grows with an audience.
CACHE_SECONDS = 60.0
CACHE_SIZE = 1_000
# The references of the part this task is delivering (user PartitionKey ->
# row): set by `ReferenceStore.part`, seen by the tasks the part starts.
_PART: contextvars.ContextVar[dict[str, dict[str, Any]] | None] = contextvars.ContextVar(
    "proactive_part_references", default=None)


class ReferenceStore:
    def __init__(self, table: Table, *, cache_seconds: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.table = table
        self._ttl = cache_seconds
        self._clock = clock
        # (PartitionKey, RowKey) -> (expires, entity): reachable rows only.
        self._rows: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        # PartitionKey -> the RowKey (tenant) of its only row. An AAD object id
        # or a conversation id belongs to one tenant for good, so this is never
        # stale; a key seen in two tenants is not kept (the query decides).
        self._tenant_of: dict[str, str] = {}
        # Tenants whose row this process has written (user_index.record_tenant).
        self._tenants: set[str] = set()

    # --- reads -----------------------------------------------------------

    async def _find(self, pk: str, tenant_id: str | None) -> dict[str, Any] | None:
        held = _PART.get()
        if held is not None and pk in held and (
                not tenant_id or held[pk].get("tenantId", "").lower() == tenant_id.lower()):
            return held[pk]
        rk = tables.safe_key(tenant_id) if tenant_id else self._tenant_of.get(pk)
        if rk is not None:
            cached = self._fresh(pk, rk)
            if cached is not None:
                return cached
            found = await tables.read(self.table, pk, rk)  # a point read, not a query
            if found is not None:
                self._keep(found[0])
                return found[0]
            if tenant_id:
                return None
        # No tenant and not seen yet: the partition's rows (a user or
        # conversation in two tenants: the first, as always).
        rows = []
        async for entity in self.table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": pk}, results_per_page=2
        ):
            rows.append(dict(entity))
            if len(rows) == 2:
                break
        if len(rows) == 1:
            self._tenant_of[pk] = rows[0]["RowKey"]
            self._keep(rows[0])
        if len(self._tenant_of) > CACHE_SIZE:
            self._tenant_of.pop(next(iter(self._tenant_of)))
        return rows[0] if rows else None

    def _fresh(self, pk: str, rk: str) -> dict[str, Any] | None:
        cached = self._rows.get((pk, rk))
        return cached[1] if cached is not None and cached[0] > self._clock() else None

    def _keep(self, entity: dict[str, Any]) -> None:
        key = (entity.get("PartitionKey", ""), entity.get("RowKey", ""))
        if self._ttl <= 0 or entity.get("installState") != InstallState.INSTALLED:
            self._rows.pop(key, None)
            return
        self._rows[key] = (self._clock() + self._ttl, entity)
        if len(self._rows) > CACHE_SIZE:
            self._rows.pop(next(iter(self._rows)))

    def _forget(self, pk: str, rk: str) -> None:
        self._rows.pop((pk, rk), None)

    async def user(self, aad_id: str, tenant_id: str | None = None) -> Reference | None:
        entity = await self._find(user_pk(aad_id), tenant_id)
        return Reference.from_entity(entity) if entity else None

    async def conversation(self, conversation_id: str,
                           tenant_id: str | None = None) -> Reference | None:
        entity = await self._find(conv_pk(conversation_id), tenant_id)
        return Reference.from_entity(entity) if entity else None

    async def team(self, team_id: str, tenant_id: str | None = None) -> ReferenceRow | None:
        entity = await self._find(team_pk(team_id), tenant_id)
        return ReferenceRow.from_entity(entity) if entity else None

    async def tenant_service_url(self, tenant_id: str) -> tuple[str, str] | None:
        """(serviceUrl, botId) last seen for the tenant."""
        entity = await self._find(tenant_pk(tenant_id), tenant_id)
        if not entity:
            return None
        return entity.get("serviceUrl", ""), entity.get("botId", "")

    async def users_of_tenant(self, tenant_id: str, after: str = "") -> AsyncIterator[str]:
        """AAD ids of the tenant's users with a personal reference, a page of
        the tenant's index at a time, in index order (see user_index);
        `after`: those after this AAD id."""
        async for row in user_index.users(self.table, tenant_id, after):
            if row.get("aadObjectId"):  # kept: a part sent soon here reads nothing
                self._keep(user_index.as_user_row(row))
                yield str(row["aadObjectId"])

    @contextlib.asynccontextmanager
    async def part(self, tenant_id: str, aad_ids: Sequence[str]) -> AsyncIterator[None]:
        """Hold the references of a part's users for as long as it runs (this
        task and the tasks it starts): see user_index.part_references."""
        held = await user_index.part_references(self.table, tenant_id, aad_ids, self._fresh)
        token = _PART.set(held)
        try:
            yield
        finally:
            _PART.reset(token)

    # --- writes ----------------------------------------------------------

    async def record(self, activity: Activity) -> bool:
        """Store what the activity tells us. Returns True when it newly
        installed the bot for a user in personal scope (welcome them)."""
        now = tables.iso()
        base = {
            "RowKey": tables.safe_key(activity.tenant_id),
            "tenantId": activity.tenant_id,
            "serviceUrl": activity.service_url,
            "botId": activity.bot_id,
            "lastSeen": now,
        }
        await user_index.record_tenant(self.table, {**base, "PartitionKey": tenant_pk(
            activity.tenant_id)}, self._tenants)
        self._forget(tenant_pk(activity.tenant_id), base["RowKey"])

        conversation = {
            **base,
            "PartitionKey": conv_pk(activity.conversation_id),
            "kind": "conversation",
            "conversationId": activity.conversation_id,
            "conversationType": activity.conversation_type,
        }
        if activity.locale:
            conversation["locale"] = activity.locale
        if activity.team_id:
            conversation["teamId"] = activity.team_id
        welcome = False
        if activity.scope == "personal" and activity.from_aad_id:
            user = {**conversation, "PartitionKey": user_pk(activity.from_aad_id),
                    "kind": "user", "aadObjectId": activity.from_aad_id,
                    "userId": activity.from_id}
            if activity.timezone:
                user["timezone"] = activity.timezone
            welcome = await self._transition(user, activity.change, now)
            conversation["userId"] = activity.from_id
            conversation["aadObjectId"] = activity.from_aad_id
        if activity.timezone:
            conversation["timezone"] = activity.timezone
        await self._transition(conversation, activity.change, now)
        if activity.team_id:
            await self._record_team(activity, base, now)
        return welcome

    async def _record_team(self, activity: Activity, base: dict[str, Any], now: str) -> None:
        team = {**base, "PartitionKey": team_pk(activity.team_id), "kind": "team",
                "teamId": activity.team_id, "conversationType": "channel",
                # The team id is also the id of its General channel.
                "conversationId": activity.team_id}
        if activity.team_name:
            team["teamName"] = activity.team_name
        if activity.team_aad_group_id:
            team["aadGroupId"] = activity.team_aad_group_id
        channels = {activity.team_id}
        if activity.channel:
            channels.add(activity.channel)
        channels.add(activity.conversation_id.split(";", 1)[0])
        self._forget(team["PartitionKey"], team["RowKey"])

        def merged(entity: dict[str, Any] | None) -> tuple[dict[str, Any], None]:
            if entity is None:
                return {**team, "firstSeen": now, "channelIds": json.dumps(sorted(channels)),
                        **_state_fields({}, activity.change, now)}, None
            known = set(json.loads(entity.get("channelIds") or "[]"))
            return {**entity, **team, "channelIds": json.dumps(sorted(known | channels)),
                    **_state_fields(entity, activity.change, now)}, None

        await tables.update(self.table, team["PartitionKey"], team["RowKey"], merged,
                            what="team row")

    async def _transition(self, fields: dict[str, Any], change: Change, now: str) -> bool:
        """Merge `fields` into the row, applying the install change with an
        ETag-guarded write, and a user row into its tenant's index. True when
        this write moved the row to installed (exactly one of several
        concurrent writers sees True)."""
        pk, rk = fields["PartitionKey"], fields["RowKey"]
        self._forget(pk, rk)

        def moved(current: dict[str, Any] | None
                  ) -> tuple[dict[str, Any], tuple[dict[str, Any], bool]]:
            if current is None:
                entity = {**fields, "firstSeen": now, **_state_fields({}, change, now)}
                return entity, (entity, bool(entity["installState"] == InstallState.INSTALLED))
            before = current.get("installState", InstallState.UNKNOWN)
            updated = {**current, **fields, **_state_fields(current, change, now)}
            return updated, (updated, before != InstallState.INSTALLED
                             and updated["installState"] == InstallState.INSTALLED
                             and change is Change.INSTALLED)

        written, installed = await tables.update(self.table, pk, rk, moved, what=pk)
        await user_index.put(self.table, written)
        return installed

    async def mark(self, reference: Reference, state: str, *, aad_id: str = "") -> None:
        """Record what a Connector answer taught us (blocked, uninstalled...)."""
        now = tables.iso()
        rk = tables.safe_key(reference.tenant_id)
        stamp = {"installState": state, f"{state}At": now}
        pks = [conv_pk(reference.conversation_id)]
        if aad_id:
            pks.append(user_pk(aad_id))
        for pk in pks:
            await tables.merge(self.table, {"PartitionKey": pk, "RowKey": rk, **stamp})
            self._forget(pk, rk)
        if aad_id:
            await user_index.change(self.table, reference.tenant_id, aad_id, stamp)

    async def move_service_url(self, reference: Reference, service_url: str, *,
                               aad_id: str = "", team_id: str = "") -> None:
        """Teams answered on another host than the stored one (403
        InvalidBotApiHost, then the cloud's fallback host worked): later sends
        to the conversation, user, team and tenant go there directly. Rows
        that don't exist are not created."""
        rk = tables.safe_key(reference.tenant_id)
        pks = [conv_pk(reference.conversation_id), tenant_pk(reference.tenant_id)]
        pks += [user_pk(aad_id)] if aad_id else []
        pks += [team_pk(team_id)] if team_id else []
        for pk in pks:
            found = await tables.read(self.table, pk, rk)
            if found is not None:
                await tables.merge(self.table, {"PartitionKey": pk, "RowKey": rk,
                                                "serviceUrl": service_url})
                self._forget(pk, rk)
        if aad_id:
            await user_index.change(self.table, reference.tenant_id, aad_id,
                                    {"serviceUrl": service_url})

    async def remember_members(self, tenant_id: str, members: dict[str, str]) -> None:
        """The roster ids of users (AAD id -> `29:` id) seen in a team's members:
        creating their 1:1 chat later uses the id Teams gave. No `kind`, so a
        member is not one of the tenant's users until a chat with them exists."""
        rk = tables.safe_key(tenant_id)
        for aad_id, member_id in members.items():
            await tables.merge(self.table, {"PartitionKey": user_pk(aad_id), "RowKey": rk,
                                            "tenantId": tenant_id, "aadObjectId": aad_id,
                                            "userId": member_id})

    async def remember_installation(self, aad_id: str, tenant_id: str,
                                    installation_id: str = "") -> None:
        """How far Graph's install of the app for a user got, while their chat
        is not read yet: installed (POST answered), then the installation's
        id. A later attempt resumes from there instead of installing again.
        No `kind`, like a remembered roster id."""
        rk = tables.safe_key(tenant_id)
        fields = {"graphInstallationId": installation_id} if installation_id else {}
        await tables.merge(self.table, {"PartitionKey": user_pk(aad_id), "RowKey": rk,
                                        "tenantId": tenant_id, "aadObjectId": aad_id,
                                        "graphInstallPosted": True,
                                        "graphInstallationAt": tables.iso(), **fields})
        self._forget(user_pk(aad_id), rk)

    async def store_created_conversation(self, aad_id: str, tenant_id: str, service_url: str,
                                         bot_id: str, conversation_id: str) -> Reference:
        """A 1:1 conversation we created for a user who never wrote to us."""
        now = tables.iso()
        entity = {
            "RowKey": tables.safe_key(tenant_id), "tenantId": tenant_id,
            "serviceUrl": service_url, "botId": bot_id, "conversationId": conversation_id,
            "conversationType": "personal", "aadObjectId": aad_id, "createdAt": now,
        }
        await tables.merge(self.table, {**entity, "PartitionKey": user_pk(aad_id),
                                        "kind": "user"})
        await tables.merge(self.table, {**entity, "PartitionKey": conv_pk(conversation_id),
                                        "kind": "conversation"})
        self._forget(user_pk(aad_id), entity["RowKey"])
        self._forget(conv_pk(conversation_id), entity["RowKey"])
        found = await tables.read(self.table, user_pk(aad_id), tables.safe_key(tenant_id))
        assert found is not None
        await user_index.put(self.table, found[0])
        return Reference.from_entity(found[0])


def _state_fields(current: dict[str, Any], change: Change, now: str) -> dict[str, Any]:
    state = current.get("installState", InstallState.UNKNOWN)
    if change is Change.INSTALLED:
        return {"installState": InstallState.INSTALLED, "installedAt": now}
    if change is Change.UNINSTALLED:
        return {"installState": InstallState.UNINSTALLED, "uninstalledAt": now}
    if state == InstallState.DISABLED:
        return {"installState": state}
    # Any other activity from the conversation shows the bot is there, and a
    # user who had blocked it talks to it again.
    return {"installState": InstallState.INSTALLED}
