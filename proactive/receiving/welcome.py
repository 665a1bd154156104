"""The welcome message a user gets once when they install the bot personally.

Teams' guidance for a welcome message: say why the user is getting it, what
the bot offers, and what to do next, and keep it short. It goes out through
the outbox like any other message, so it is retried and recorded the same way.
"""

from __future__ import annotations

from typing import Any

from proactive.contract import Content, Op, OutboxMessage, Target
from proactive.teams.activity import Activity

BOT_NAME = "Proactive"


def welcome_card(bot_name: str) -> dict[str, Any]:
    return {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.5",
        "body": [
            {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": True,
             "text": f"Welcome to {bot_name}"},
            {"type": "TextBlock", "wrap": True,
             "text": "You're getting this because you just added the app. Your "
                     "organisation's systems use it to reach you here in Teams."},
            {"type": "TextBlock", "wrap": True, "weight": "Bolder", "text": "What to expect"},
            {"type": "FactSet", "facts": [
                {"title": "Notifications", "value": "alerts from CI, monitoring and other tools"},
                {"title": "Reminders", "value": "at the right time in your own time zone"},
                {"title": "Updates", "value": "a message is edited in place as things change"},
            ]},
            {"type": "TextBlock", "wrap": True, "isSubtle": True,
             "text": "Nothing to do now: messages arrive in this chat. Type **help** to "
                     "learn more, or **stop** to stop them (**start** brings them back)."},
        ],
    }


def welcome_message(activity: Activity, bot_name: str = BOT_NAME) -> OutboxMessage:
    """The outbox message for a user who just installed the bot."""
    # One welcome per install event; the install transition is guarded, so
    # the two events Teams sends for one install produce one welcome.
    return OutboxMessage(Op.SEND, f"welcome:{activity.id}",
                         target=Target.user(activity.from_aad_id, activity.tenant_id),
                         content=Content(summary=f"Welcome to {bot_name}",
                                         card=welcome_card(bot_name),
                                         service=True))  # never skipped for an opt-out
