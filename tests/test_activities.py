"""Parsing activities: what each one means for the stored references."""

from __future__ import annotations

import json

import pytest

from proactive.receiving.activities import (
    InvalidActivity,
    TenantConflict,
    decode_body,
    parse_activity,
    tenant_of,
)
from proactive.teams.activity import Change
from tests.activities_data import BOT, TENANT, activity, install, team_install, uninstall


def test_install_and_uninstall_events_are_recognised() -> None:
    assert parse_activity(install()).change is Change.INSTALLED
    assert parse_activity(activity("installationUpdate", action="add-upgrade")).change \
        is Change.INSTALLED
    assert parse_activity(uninstall()).change is Change.UNINSTALLED
    # The old half of an in-place upgrade does not uninstall.
    assert parse_activity(activity("installationUpdate", action="remove-upgrade")).change \
        is Change.NONE
    assert parse_activity(activity("message")).change is Change.NONE


def test_bot_in_members_added_or_removed_means_install_or_uninstall() -> None:
    added = activity("conversationUpdate", membersAdded=[{"id": "29:someone"}, {"id": BOT}])
    assert parse_activity(added).change is Change.INSTALLED
    # Same bot written without the 28: prefix (as the Agents Playground does).
    bare = activity("conversationUpdate", membersAdded=[{"id": BOT.removeprefix("28:")}])
    assert parse_activity(bare).change is Change.INSTALLED
    removed = activity("conversationUpdate", membersRemoved=[{"id": BOT}])
    assert parse_activity(removed).change is Change.UNINSTALLED
    other = activity("conversationUpdate", membersAdded=[{"id": "29:someone-else"}])
    assert parse_activity(other).change is Change.NONE


def test_team_fields_and_channel_are_read() -> None:
    parsed = parse_activity(team_install())
    assert parsed.scope == "channel"
    assert parsed.team_id == "19:team-general@thread.tacv2"
    assert parsed.team_name == "Ops"
    assert parsed.event_type == "teamMemberAdded"
    assert parsed.change is Change.INSTALLED


def test_time_zone_from_client_info_else_local_timezone() -> None:
    with_entity = activity(entities=[{"type": "mention"},
                                     {"type": "clientInfo", "timezone": "Europe/Berlin"}],
                           localTimezone="America/New_York")
    assert parse_activity(with_entity).timezone == "Europe/Berlin"
    assert parse_activity(activity(localTimezone="Asia/Tokyo")).timezone == "Asia/Tokyo"
    assert parse_activity(activity()).timezone == ""


@pytest.mark.parametrize("key", ["tenantId", "tenantID", "TenantId", "tenantid"])
def test_tenant_from_conversation_in_any_case_or_channel_data(key: str) -> None:
    body = activity()
    body["conversation"] = {"id": "c", "conversationType": "personal", key: "T2"}
    body["channelData"] = {}
    assert parse_activity(body).tenant_id == "T2"
    body["conversation"] = {"id": "c", "conversationType": "personal"}
    body["channelData"] = {"Tenant": {"ID": "T3"}}
    assert parse_activity(body).tenant_id == "T3"
    body["channelData"] = {"tenant": {"id": TENANT}}
    assert parse_activity(body).tenant_id == TENANT


@pytest.mark.parametrize("conversation", [
    {"id": "c", "tenantId": "other"},
    {"id": "c", "tenantID": "other"},
    {"id": "c", "TENANTID": "other"},
    {"id": "c", "tenantId": TENANT, "tenantID": "other"},  # two spellings in one object
])
def test_an_activity_naming_two_tenants_is_refused(conversation: dict[str, str]) -> None:
    # Storage used to read tenantID while authentication read only tenantId:
    # the allow-list checked one tenant and the reference went under the other.
    body = activity()
    body["conversation"] = conversation
    body["channelData"] = {"tenant": {"id": TENANT}}
    with pytest.raises(TenantConflict):
        tenant_of(body)
    with pytest.raises(InvalidActivity, match="two different tenants"):
        parse_activity(body)


def test_the_same_tenant_in_both_places_is_one_tenant() -> None:
    body = activity()
    body["conversation"]["tenantID"] = TENANT.upper()  # GUIDs: case is no difference
    assert tenant_of(body) == TENANT
    assert parse_activity(body).tenant_id == TENANT


def test_unknown_activity_types_are_valid() -> None:
    assert parse_activity(activity("messageReaction")).change is Change.NONE


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda a: a.pop("type"), "missing type"),
    (lambda a: a.pop("id"), "missing id"),
    (lambda a: a.pop("serviceUrl"), "serviceUrl"),
    (lambda a: a.update(serviceUrl="ftp://x"), "serviceUrl"),
    (lambda a: a.pop("conversation"), "conversation.id"),
    (lambda a: a.update(conversation="not-an-object"), "conversation.id"),
    (lambda a: (a["conversation"].pop("tenantId"), a.pop("channelData")), "tenant"),
    (lambda a: a.pop("recipient"), "recipient.id"),
    (lambda a: a["conversation"].update(conversationType="meeting-ish"), "conversationType"),
])
def test_missing_required_fields_are_refused_with_a_reason(mutate, reason: str) -> None:
    body = activity()
    mutate(body)
    with pytest.raises(InvalidActivity, match=reason):
        parse_activity(body)


@pytest.mark.parametrize("raw", [b"", b"{", b"[1,2]", b"\xff\xfe", b'"text"', b"x" * 300_000])
def test_bodies_that_are_not_activities_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidActivity):
        decode_body(raw)


def test_decode_returns_the_object() -> None:
    assert decode_body(json.dumps({"a": 1}).encode()) == {"a": 1}


def test_lone_surrogates_are_refused_not_stored() -> None:
    with pytest.raises(InvalidActivity, match="unicode"):
        decode_body(b'{"type": "message", "id": "\\ud800"}')
