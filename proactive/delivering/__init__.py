"""What the worker does with an outbox message: send to one user or many,
update or delete what was sent, pre-install, remind, and what becomes of it.

Modules, from one recipient to many:

    send.py          one recipient: claim the delivery row, call Teams, record
    outcomes.py      an Outcome (done / failed / retry / poisoned) from each error
    requeue.py       a RETRY or POISONED outcome put into effect on the queues
    edit.py          update or delete every copy sent under a key
    broadcast.py     one send to many users: split into parts, deliver, count
    audiences.py     a team's or group's members, page by page
    unlisted.py      who a many-user send passed over, and why
    pacing.py        Teams' per-tenant rate limits, shared by every instance
    conversation_pacing.py  Teams' per-conversation limits, per process
    install.py       Microsoft Graph: paced calls, principal names, proactive install
    preinstall.py    op `install`: the app installed for one user, nothing sent
    notification.py  `notification` content rendered as an Adaptive Card
    ack.py           cards that ask "Got it?", and the card after the press
    followup.py      a send's follow-up: remind who hasn't read or acknowledged
    reminders.py     whether a recipient still gets that reminder
    optouts.py       who stopped which notifications, checked without a read per send

The package imports none of them itself (import the module you need).
"""

__all__ = ["ack", "audiences", "broadcast", "conversation_pacing", "edit", "followup",
           "install", "notification", "optouts", "outcomes", "pacing", "preinstall",
           "reminders", "requeue", "send", "unlisted"]
