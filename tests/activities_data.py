"""Activities as Teams sends them (shapes from the Bot Framework / Teams docs
and captured from the Agents Playground), for tests."""

from __future__ import annotations

import copy
import uuid
from typing import Any

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
BOT = "28:11111111-2222-3333-4444-555555555555"
USER_AAD = "6f3a8c1e-0000-4000-8000-00000000aaaa"
USER_ID = "29:1a2b3c-user"
SERVICE_URL = "https://smba.trafficmanager.net/emea/"


def activity(kind: str = "message", *, scope: str = "personal",
             conversation: str = "a:1personal-conversation", service_url: str = SERVICE_URL,
             aad: str = USER_AAD, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": kind,
        "id": str(uuid.uuid4()),
        "channelId": "msteams",
        "serviceUrl": service_url,
        "from": {"id": USER_ID, "aadObjectId": aad, "name": "Megan"},
        "recipient": {"id": BOT, "name": "Proactive"},
        "conversation": {"id": conversation, "conversationType": scope, "tenantId": TENANT},
        "channelData": {"tenant": {"id": TENANT}},
        "locale": "en-GB",
    }
    body.update(copy.deepcopy(extra))
    return body


def install(**kw: Any) -> dict[str, Any]:
    return activity("installationUpdate", action="add", **kw)


def uninstall(**kw: Any) -> dict[str, Any]:
    return activity("installationUpdate", action="remove", **kw)


def team_install(team: str = "19:team-general@thread.tacv2", **kw: Any) -> dict[str, Any]:
    body = activity("conversationUpdate", scope="channel", conversation=team,
                    membersAdded=[{"id": BOT}], **kw)
    body["channelData"] = {"tenant": {"id": TENANT}, "eventType": "teamMemberAdded",
                           "team": {"id": team, "name": "Ops", "aadGroupId": "g-1"},
                           "settings": {"selectedChannel": {"id": team}}}
    return body
