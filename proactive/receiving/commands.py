"""What a user can tell the bot in its personal chat: `help`, `stop [topic]`,
`start [topic]`; and the opt-out button on notification cards.

Typed commands change the user's opt-outs inside the request (one storage
write) and are answered with a short card sent through the outbox, like the
welcome: Teams waits 15 s for /api/messages, and a Connector call is paced and
retried, which only the worker does. The answer's key is derived from the
activity, so a redelivered message is answered once. Unknown text gets the help.

The card button (`Action.Execute`, verb `proactive.optout`) arrives as an
`invoke` named `adaptiveCard/action`; its answer is the card that replaces the
notification in place (Universal Actions), given in the HTTP response.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from proactive.contract import ADAPTIVE_CARD, Content, Op, OutboxMessage, Target
from proactive.contract.fields import valid_topic
from proactive.delivering.notification import OPT_OUT_VERB
from proactive.storage.preferences import ALL
from proactive.teams.activity import Activity

if TYPE_CHECKING:
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)

BOT_NAME = "Proactive"
_MENTION = re.compile(r"<at>.*?</at>", re.IGNORECASE | re.DOTALL)




def parse_command(text: str) -> tuple[str, str]:
    """(command, topic): command is help, stop or start ("help" for anything
    else); topic is "" for all, or the topic named, or "?" if it is no topic."""
    words = _MENTION.sub(" ", text).strip().lower().split()
    if not words or words[0].strip("/!.") not in ("stop", "start", "help"):
        return "help", ""
    command = words[0].strip("/!.")
    if command == "help" or len(words) == 1:
        return command, ""
    topic = words[1]
    if len(words) > 2 or not valid_topic(topic):
        return command, "?"
    return command, "" if topic in ("all", "everything") else topic


def _card(title: str, *lines: str) -> dict[str, Any]:
    return {"type": "AdaptiveCard", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "version": "1.5",
            "body": [{"type": "TextBlock", "text": title, "weight": "Bolder", "wrap": True},
                     *({"type": "TextBlock", "text": line, "wrap": True} for line in lines)]}


def help_card(stopped: list[str], bot_name: str = BOT_NAME) -> dict[str, Any]:
    now = ("You get every notification." if not stopped else
           "You stopped all notifications." if ALL in stopped else
           f"You stopped: {', '.join(sorted(stopped))}.")
    return _card(f"{bot_name} sends you notifications from your organisation's systems",
                 "Alerts, reminders and updates arrive in this chat; each kind has a name "
                 "(a topic) shown on its card's **Stop notifications like this** button.",
                 "Type **stop** to stop them all, or **stop** *topic* for one kind. "
                 "Type **start** (or **start** *topic*) to get them again.",
                 now)


def stopped_card(topic: str, new: bool, bot_name: str = BOT_NAME) -> dict[str, Any]:
    what = "any notifications" if topic == ALL else f"notifications about **{topic}**"
    again = "start" if topic == ALL else f"start {topic}"
    return _card("Stopped" if new else "Already stopped",
                 f"You won't get {what} from {bot_name} anymore.",
                 f"Type **{again}** to get them again.")


def started_card(topic: str, cleared: list[str], still: list[str]) -> dict[str, Any]:
    what = "notifications" if not topic else f"notifications about **{topic}**"
    lines = [f"You'll get {what} again." if cleared else f"You were already getting {what}."]
    if ALL in still:
        lines.append("You still stopped all notifications: type **start** for everything.")
    return _card("Started", *lines)


def reply_message(activity: Activity, card: dict[str, Any], summary: str) -> OutboxMessage:
    """The outbox message answering `activity`: one per activity, however often
    Teams delivers it (the key)."""
    digest = hashlib.sha256(f"{activity.conversation_id}\n{activity.id}".encode()).hexdigest()
    return OutboxMessage(Op.SEND, f"reply:{digest[:40]}",
                         target=Target.user(activity.from_aad_id, activity.tenant_id),
                         content=Content(summary=summary, card=card, service=True))


async def answer_message(rt: Runtime, activity: Activity) -> None:
    """Carry out what the user typed in the personal chat, and queue the answer."""
    text = activity.raw.get("text")
    command, topic = parse_command(text if isinstance(text, str) else "")
    user, prefs = activity.from_aad_id, rt.preferences
    if command == "stop" and topic != "?":
        new = await rt.opt_outs.stop(user, topic or ALL, via="command",
                                     tenant_id=activity.tenant_id)
        card, summary = stopped_card(topic or ALL, new, rt.settings.bot_name), "Stopped"
        log.info("user opted out (%s) by command", topic or ALL)
    elif command == "start" and topic != "?":
        cleared = await rt.opt_outs.start(user, topic or None, tenant_id=activity.tenant_id)
        still = [o.topic for o in await prefs.of_user(user)]
        card, summary = started_card(topic, cleared, still), "Started"
        log.info("user opted in (%s) by command", topic or "everything")
    else:
        card = help_card([o.topic for o in await prefs.of_user(user)], rt.settings.bot_name)
        summary = "Help"
    await rt.outbox.put(reply_message(activity, card, summary))


def _action(raw: Mapping[str, Any]) -> tuple[str, Any]:
    value = raw.get("value")
    action = value.get("action") if isinstance(value, Mapping) else None
    if not isinstance(action, Mapping):
        return "", None
    return str(action.get("verb") or ""), action.get("data")


async def answer_card_action(rt: Runtime, activity: Activity) -> dict[str, Any]:
    """The invoke response body for an `adaptiveCard/action`: the opt-out,
    confirmed by the card that replaces the notification."""
    verb, data = _action(activity.raw)
    from proactive.delivering.ack import ACK_VERB

    if verb == ACK_VERB:  # README "Read, acknowledged, reminded"
        from proactive.receiving.acks import answer_ack

        return await answer_ack(rt, activity, data)
    topic = data.get("topic") if isinstance(data, Mapping) else None
    if verb != OPT_OUT_VERB or not isinstance(topic, str) \
            or not (topic == ALL or valid_topic(topic)) or not activity.from_aad_id:
        return {"statusCode": 400, "type": "application/vnd.microsoft.error",
                "value": {"code": "BadRequest", "message": "unknown action"}}
    new = await rt.opt_outs.stop(activity.from_aad_id, topic, via="card",
                                 tenant_id=activity.tenant_id)
    log.info("user opted out (%s) from a card", topic)
    return {"statusCode": 200, "type": ADAPTIVE_CARD,
            "value": stopped_card(topic, new, rt.settings.bot_name)}
