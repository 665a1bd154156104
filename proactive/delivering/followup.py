"""Follow-ups: remind the recipients who haven't read (or acknowledged) a send.

A send may carry `"followUp": {"after": "PT4H", "unless": "read" | "acked",
"text" | "card" | "notification": ..., "summary": ...}` (README "Read,
acknowledged, reminded"). When the send is carried out, the reminder is
stored with the existing scheduler (proactive/scheduling) as a normal keyed
send `<key>:reminder` to the same recipients, due `after` from then: a tick
reads only what is due, and the reminder is paced, exactly-once, opt-out-aware
and reportable like any send. Each reminder carries the app-only field
`unless` ({"key", "what"}; signed by the outbox, proactive/storage/seal.py),
and the worker checks it per recipient just before sending (reminders.py): the original
delivery row (one point read) and, for `read`, its chat's read-receipt row
(one point read): O(N) point reads for N recipients, nothing scanned.

Who is not reminded (recorded `skipped` with the reason): who read it
(`already-read`; an acknowledgement counts as read), who acknowledged it
(`already-acked`), whose delivery didn't go out (`not-delivered`), and
deliveries whose read/ack state can't be known, in group chats and channels
(`not-trackable`: Teams sends no receipts there and a button press there is
not one person's). A read state that can't be compared (`unknown`) is reminded.
"""

from __future__ import annotations

from enum import StrEnum

from proactive.contract import Op, OutboxMessage, Target, build
from proactive.contract.fields import Condition, FollowUp

SUFFIX = ":reminder"


class Skip(StrEnum):
    """Why a recipient gets no reminder (the reminder's delivery `reason`)."""
    READ = "already-read"
    ACKED = "already-acked"
    NOT_DELIVERED = "not-delivered"
    NOT_TRACKABLE = "not-trackable"


def reminder(key: str, to: Target, follow_up: FollowUp, due: str) -> OutboxMessage:
    """The reminder of the send `key` to its recipients `to`, scheduled at
    `due`, checked like any message (the content was when the send came)."""
    return build(Op.SEND, key=f"{key}{SUFFIX}", to=to.to_json(), **follow_up.content,
                 schedule={"at": due}, unless=Condition(key, follow_up.unless).to_json())
