"""Bot Framework activities from Teams: parse, check the fields we rely on, and
say what each one means for the stored conversation references (the `Activity`
it builds is proactive/teams/activity.py's).

Pure functions, no I/O. Teams sends more fields than we read; unknown activity
and event types are valid and simply mean nothing to us.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from proactive.contract.fields import encodable
from proactive.teams.activity import Activity, Change

MAX_ACTIVITY_BODY = 256 * 1024
MAX_ID = 1024  # longer ids are not Teams'; keys and rows have limits
MAX_NAME = 256
SCOPES = ("personal", "groupChat", "channel")


class InvalidActivity(ValueError):
    """The body is not an activity we can act on; the reason is safe to return."""


class TenantConflict(InvalidActivity):
    """The activity names two different tenants."""


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _all_ci(value: Any, name: str) -> list[Any]:
    """Every value of `value[name]`, the key in any case (tenantId, tenantID, ...)."""
    if not isinstance(value, Mapping):
        return []
    lowered = name.lower()
    return [v for k, v in value.items() if isinstance(k, str) and k.lower() == lowered]


def tenant_of(raw: Mapping[str, Any]) -> str:
    """The activity's tenant id, "" when it names none: `conversation.tenantId` or
    `channelData.tenant.id`, each key in any case. The one reading of it, used
    by authentication (the allow-list) and storage alike, so both see the same
    tenant. Raises TenantConflict when the activity names two different ones."""
    found = [tid for conversation in _all_ci(raw, "conversation")
             for tid in _all_ci(conversation, "tenantId")]
    found += [tid for channel_data in _all_ci(raw, "channelData")
              for tenant in _all_ci(channel_data, "tenant")
              for tid in _all_ci(tenant, "id")]
    ids = [tid.strip() for tid in found if isinstance(tid, str) and tid.strip()]
    if len({tid.lower() for tid in ids}) > 1:  # tenant ids are GUIDs: case is no difference
        raise TenantConflict("the activity names two different tenants")
    return ids[0] if ids else ""


def decode_body(body: bytes) -> Mapping[str, Any]:
    if len(body) > MAX_ACTIVITY_BODY:
        raise InvalidActivity("body too large")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidActivity("body is not JSON") from exc
    if not isinstance(data, dict):
        raise InvalidActivity("body is not a JSON object")
    if not encodable(data):
        raise InvalidActivity("body holds invalid unicode (lone surrogates)")
    return data


def timezone_of(raw: Mapping[str, Any]) -> str:
    """The sender's IANA zone, from a `clientInfo` entity or the root
    `localTimezone`. Teams clients on Windows may send a Windows name ("W.
    Europe Standard Time"): an IANA value is preferred, in that order, then
    a Windows name mapped to IANA. Neither usable: the first value as sent
    (the scheduler logs it and uses the default zone)."""
    names: list[str] = []
    entities = raw.get("entities")
    if isinstance(entities, list):
        names += [_str(entity.get("timezone")) for entity in entities
                  if isinstance(entity, Mapping) and entity.get("type") == "clientInfo"]
    names.append(_str(raw.get("localTimezone")))
    names = [name for name in names if name]
    for name in names:
        if _is_iana(name):
            return name
    for name in names:
        if zone := _iana_of_windows(name):
            return zone
    return names[0] if names else ""


def _is_iana(name: str) -> bool:
    from proactive.contract.schedule.zones import zone_or_none

    return len(name) <= 64 and zone_or_none(name) is not None


def _iana_of_windows(name: str) -> str:
    """The IANA zone of a Windows zone name by CLDR's windowsZones table
    (territory 001), as tzlocal ships it. Imported only when a name is not
    IANA: most activities never load it."""
    from tzlocal.windows_tz import win_tz

    zone = win_tz.get(name, "")
    return zone if zone and _is_iana(zone) else ""


def _change(raw: Mapping[str, Any], kind: str, bot_id: str) -> Change:
    if kind == "installationUpdate":
        action = _str(raw.get("action"))
        if action in ("add", "add-upgrade"):
            return Change.INSTALLED
        if action in ("remove", "remove-upgrade"):
            # remove-upgrade is the old half of an upgrade in place; the app stays.
            return Change.UNINSTALLED if action == "remove" else Change.NONE
        return Change.NONE
    if kind == "conversationUpdate":
        for name, change in (("membersAdded", Change.INSTALLED),
                             ("membersRemoved", Change.UNINSTALLED)):
            members = raw.get(name)
            if isinstance(members, list) and any(
                isinstance(m, Mapping) and _same_bot(_str(m.get("id")), bot_id) for m in members
            ):
                return change
    return Change.NONE


def _same_bot(member_id: str, bot_id: str) -> bool:
    if not member_id or not bot_id:
        return False
    return member_id.removeprefix("28:") == bot_id.removeprefix("28:")


def _short(value: str, limit: int) -> str:
    """Free text we only keep: dropped when implausibly long (a time zone or
    locale of 70 KB is not one), never a reason to refuse the activity."""
    return value if len(value) <= limit else ""


def parse_activity(raw: Mapping[str, Any]) -> Activity:
    """Check the fields a conversation reference needs; raise InvalidActivity."""
    activity = _parse(raw)
    for name in ("id", "service_url", "conversation_id", "tenant_id", "bot_id", "from_id",
                 "from_aad_id", "team_id", "team_aad_group_id", "channel"):
        if len(getattr(activity, name)) > MAX_ID:
            raise InvalidActivity(f"{name} is too long")
    return activity


def _parse(raw: Mapping[str, Any]) -> Activity:
    kind = _str(raw.get("type"))
    if not kind:
        raise InvalidActivity("missing type")
    activity_id = _str(raw.get("id"))
    if not activity_id:
        raise InvalidActivity("missing id")
    service_url = _str(raw.get("serviceUrl"))
    if not service_url.startswith(("https://", "http://")):
        raise InvalidActivity("missing or invalid serviceUrl")
    conversation = _obj(raw.get("conversation"))
    conversation_id = _str(conversation.get("id"))
    if not conversation_id:
        raise InvalidActivity("missing conversation.id")
    channel_data = _obj(raw.get("channelData"))
    tenant_id = tenant_of(raw)
    if not tenant_id:
        raise InvalidActivity("missing tenant id")
    recipient = _obj(raw.get("recipient"))
    bot_id = _str(recipient.get("id"))
    if not bot_id:
        raise InvalidActivity("missing recipient.id")
    sender = _obj(raw.get("from"))
    conversation_type = _str(conversation.get("conversationType")) or "personal"
    if conversation_type not in SCOPES:
        raise InvalidActivity("unknown conversation.conversationType")
    team = _obj(channel_data.get("team"))
    channel = _str(_obj(channel_data.get("channel")).get("id")) or _str(
        _obj(_obj(channel_data.get("settings")).get("selectedChannel")).get("id"))
    return Activity(
        id=activity_id,
        type=kind,
        service_url=service_url,
        channel_id=_str(raw.get("channelId")),
        conversation_id=conversation_id,
        conversation_type=conversation_type,
        tenant_id=tenant_id,
        bot_id=bot_id,
        from_id=_str(sender.get("id")),
        from_aad_id=_str(sender.get("aadObjectId")),
        locale=_short(_str(raw.get("locale")), 64),
        timezone=_short(timezone_of(raw), 64),
        change=_change(raw, kind, bot_id),
        team_id=_str(team.get("id")),
        team_name=_str(team.get("name"))[:MAX_NAME],
        team_aad_group_id=_str(team.get("aadGroupId")),
        channel=channel,
        event_type=_short(_str(channel_data.get("eventType")), MAX_NAME),
        raw=raw,
    )
