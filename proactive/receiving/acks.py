"""The acknowledgement button pressed: `invoke` `adaptiveCard/action` with verb
`proactive.ack` and data `{"sendKey": ...}` (`{"key": ...}` on cards sent
before; proactive/delivering/ack.py).

Authenticated like every activity before this runs. Valid only from the
recipient the card was sent to: the delivery row of (key, `user:` the
sender's AAD id) must be a sent card with the button, in this conversation and
tenant (or the key was sent to this conversation by id and it is the sender's
own personal chat). Then the first click is written on that row; a repeat is
answered the same, not recounted. Anything else (another user's, another
chat's, a made-up key) changes nothing and is answered with an error card.

The answer (Universal Actions: HTTP 200, `{"statusCode": 200, "type":
"application/vnd.microsoft.card.adaptive", "value": <card>}`) is the card as
sent, with "Acknowledged at 14:02" in the user's time zone (the invoke's
clientInfo entity / localTimezone) and the button gone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from proactive.contract import ADAPTIVE_CARD, MAX_KEY
from proactive.delivering.ack import acknowledged, error_card, local_time, pressed_key
from proactive.storage import tables
from proactive.storage.acks import AckOutcome, AckStore
from proactive.teams.activity import Activity
from proactive.telemetry import log_id

if TYPE_CHECKING:
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)

NOT_YOURS = "This acknowledgement could not be recorded: the message was not sent to you here."


def _answer(card: Mapping[str, Any]) -> dict[str, Any]:
    return {"statusCode": 200, "type": ADAPTIVE_CARD, "value": dict(card)}


async def _recipients(rt: Runtime, activity: Activity) -> list[str]:
    """The delivery rows this sender may acknowledge in this chat."""
    names = [f"user:{activity.from_aad_id.lower()}"]
    ref = await rt.references.conversation(activity.conversation_id, activity.tenant_id)
    if ref is not None and ref.owner and ref.owner.lower() == activity.from_aad_id.lower():
        names.append(f"conv:{activity.conversation_id}")  # sent to their chat by its id
    return names


async def answer_ack(rt: Runtime, activity: Activity, data: Any) -> dict[str, Any]:
    key = pressed_key(data)
    if not key or len(key) > MAX_KEY or not activity.from_aad_id:
        return _answer(error_card(NOT_YOURS))
    store = AckStore(rt.deliveries.table, rt.campaigns.table)
    now = tables.iso()
    for recipient in await _recipients(rt, activity):
        done = await store.acknowledge(key, recipient, conversation_id=activity.conversation_id,
                                       tenant_id=activity.tenant_id, at=now)
        if done.outcome is AckOutcome.NOT_YOURS:
            continue
        log.info("acknowledgement of %s by %s: %s", key, log_id(recipient), done.outcome)
        card = await store.card(key) or {"type": "AdaptiveCard", "version": "1.4", "body": []}
        at = datetime.fromisoformat(done.at.replace("Z", "+00:00"))
        return _answer(acknowledged(card, local_time(at, activity.timezone)))
    log.warning("acknowledgement of %s refused: no delivery to this sender in this chat", key)
    return _answer(error_card(NOT_YOURS))
