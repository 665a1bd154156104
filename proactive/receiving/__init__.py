"""What Teams sends the bot: POST /api/messages, authenticated, and what each
activity means (a reference kept fresh, a welcome, a command, a receipt).

Modules, from the request to what it changes:

    endpoint.py      the handler: authenticate, record the reference, act on it
    auth.py          every activity's Bot Framework token checked (JWT, issuer, keys)
    signing_keys.py  the Bot Framework's signing keys, from the cloud's metadata
    activities.py    parse an activity; what it means for the stored references
    welcome.py       the welcome a user gets once on a personal install
    commands.py      what a user tells the bot: help, stop, start; opt-out button
    acks.py          an acknowledgement button pressed (`proactive.ack`)
    receipts.py      read receipts: how far a user has read their chat

The package imports none of them itself (import the module you need).
"""

__all__ = ["acks", "activities", "auth", "commands", "endpoint", "receipts", "signing_keys",
           "welcome"]
