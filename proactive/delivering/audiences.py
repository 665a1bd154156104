"""The pages of a team's or group's members, for a send to many users.

A `teamMembers` or `group` audience is never listed whole: each queue message
lists one page (the Connector's paged members, or Graph's transitive members)
and carries the next page's token in the message that lists it. A page gives
the users' AAD object ids, the tenant they belong to, and the members that
can't be reached at all, each with a reason (never dropped in silence).

A roster member's object id is `aadObjectId` (the Bot Framework's
ChannelAccount) or `objectId` (Teams' "Get roster" example and the
TeamsChannelAccount wire model of the official Java SDK): both are read, and
when a member carries both and they differ, `aadObjectId` wins (it is the
field activities carry, under which the bot stores its references). A group
member whose account is disabled (Graph `accountEnabled` false) is not sent
to (`disabled-account`); a guest is, in parts of their own marked as guests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from proactive.contract import Target, TargetKind
from proactive.errors import Permanent, Reason, Unreachable
from proactive.storage.reference_keys import InstallState

if TYPE_CHECKING:
    from proactive.runtime import Runtime

# Teams' largest page of members.
TEAM_PAGE = 500


@dataclass
class Page:
    users: list[str]
    tenant: str
    continuation: str = ""
    guests: list[str] = field(default_factory=list)  # sent to, reported as guests
    # recipient name (as delivery rows spell it) -> why it can't be reached
    unreachable: dict[str, str] = field(default_factory=dict)


async def page(rt: Runtime, target: Target) -> Page:
    """One page of the audience. Raises members of proactive.errors."""
    if target.kind == TargetKind.TEAM_MEMBERS:
        return await _team_page(rt, target)
    return await _group_page(rt, target)


async def _group_page(rt: Runtime, target: Target) -> Page:
    from proactive.delivering.install import graph_call

    tenant = target.tenant or rt.settings.app_tenant_id
    users, link = await graph_call(
        rt, tenant, lambda graph: graph.group_members(target.id, target.continuation))
    found = Page(users=[], tenant=tenant, continuation=link)
    for user in users:
        if not user.enabled:
            found.unreachable[f"user:{user.id.lower()}"] = Reason.DISABLED_ACCOUNT
        elif user.guest:
            found.guests.append(user.id)
        else:
            found.users.append(user.id)
    return found


def object_id(member: dict[str, object]) -> str:
    """A roster member's Entra object id, from either field ("" if none)."""
    for name in ("aadObjectId", "objectId"):
        value = member.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


async def _team_page(rt: Runtime, target: Target) -> Page:
    from proactive.delivering.send import call

    team = await rt.references.team(target.id, target.tenant or None)
    if team is None:
        raise Permanent(Reason.UNKNOWN_TEAM, "the bot has no stored reference for this team "
                                             "(install it in the team first)")
    if team.install_state == InstallState.UNINSTALLED:
        raise Unreachable(Reason.UNINSTALLED, "the bot was removed from this team")
    tenant = team.tenant_id or target.tenant
    (members, token), _ = await call(
        rt, tenant, "", team.service_url or "",
        lambda url: rt.connector.paged_members(url, target.id, page_size=TEAM_PAGE,
                                               continuation=target.continuation))
    found = Page(users=[], tenant=tenant, continuation=token)
    roster: dict[str, str] = {}
    for member in members:
        aad_id, member_id = object_id(member), member.get("id")
        if aad_id:
            found.users.append(aad_id)
            if isinstance(member_id, str) and member_id:
                roster[aad_id] = member_id
        elif isinstance(member_id, str):
            found.unreachable[f"member:{member_id}"] = Reason.NO_AAD_ID
    await rt.references.remember_members(tenant, roster)
    return found
