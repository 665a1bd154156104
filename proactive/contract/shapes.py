"""The outbox message's typed shape: `OutboxMessage` and its parts, the one
way the app makes a message (`to_json` writes contract v1; `parse.py` reads it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from proactive.contract.fields import Condition, FollowUp, fields_json

if TYPE_CHECKING:
    from proactive.contract.schedule.spec import Spec

VERSION = 1
MAX_KEY = 200
MAX_ID = 512
# A storage queue message holds at most 64 KB, about 1,600 AAD ids; larger
# audiences are sent as several messages with the same key, or as allUsers.
MAX_USERS = 10_000
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"


class Op(StrEnum):
    SEND = "send"
    UPDATE = "update"
    DELETE = "delete"
    CANCEL = "cancel"
    INSTALL = "install"


class TargetKind(StrEnum):
    """The one recipient field of `to` (its name is the kind)."""
    USER = "user"
    CONVERSATION = "conversation"
    CHANNEL = "channel"
    USERS = "users"
    ALL_USERS = "allUsers"
    TEAM_MEMBERS = "teamMembers"
    GROUP = "group"


class OnUnknown(StrEnum):
    """What a send does with a recipient whose earlier attempt's outcome is
    unknown (a worker died mid-call, an answer was lost): README "Exactly once,
    as far as Teams allows". resend: at least once (the default); skip: at most once."""
    RESEND = "resend"
    SKIP = "skip"


AUDIENCES = (TargetKind.USERS, TargetKind.ALL_USERS, TargetKind.TEAM_MEMBERS, TargetKind.GROUP)


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    id: str = ""
    tenant: str = ""
    team: str = ""
    reply_to: str = ""
    users: tuple[str, ...] = ()
    continuation: str = ""  # teamMembers / group: where the next page starts
    guests: bool = False  # users: a part of an audience's guests (Graph userType Guest)

    @classmethod
    def user(cls, aad_id: str, tenant: str = "") -> Target:
        return cls(kind=TargetKind.USER, id=aad_id, tenant=tenant)

    @property
    def is_broadcast(self) -> bool:
        return self.kind in AUDIENCES

    def to_json(self) -> dict[str, Any]:
        """The contract's `to` (what `parse_target` reads)."""
        to: dict[str, Any]
        if self.kind == TargetKind.USERS:
            to = {"users": list(self.users)}
            if self.guests:
                to["guests"] = True
        elif self.kind == TargetKind.ALL_USERS:
            to = {"allUsers": True}
        else:
            to = {str(self.kind): self.id}
        for name, value in (("tenant", self.tenant), ("team", self.team),
                            ("replyTo", self.reply_to), ("continuation", self.continuation)):
            if value:
                to[name] = value
        return to

    @property
    def recipient(self) -> str:
        """The stable name of this recipient in delivery records."""
        if self.kind == TargetKind.USER:
            return f"user:{self.id.lower()}"
        if self.kind == TargetKind.CHANNEL:
            return f"thread:{self.id};{self.reply_to}" if self.reply_to else f"channel:{self.id}"
        return f"conv:{self.id}"


@dataclass(frozen=True)
class Content:
    text: str = ""
    card: Mapping[str, Any] | None = None
    summary: str = ""
    # Opt-outs (README "Opt-out, opt-in, help"): the producer's name for this
    # kind of message; `service` marks the bot's own messages (welcome, answers
    # to help/stop/start), never skipped and without the opt-out action.
    topic: str = ""
    notification: Mapping[str, Any] | None = None  # facts, rendered to a card
    service: bool = False
    on_unknown: OnUnknown = OnUnknown.RESEND  # kept with the content, so schedules keep it
    # README "Read, acknowledged, reminded" (proactive/delivering/followup.py).
    ack: str = ""
    follow_up: FollowUp | None = None
    unless: Condition | None = None

    def to_json(self) -> dict[str, Any]:
        """The contract's content fields (what `parse_message` reads)."""
        out: dict[str, Any] = {}
        if self.text:
            out["text"] = self.text
        if self.card is not None:
            out["card"] = dict(self.card)
        if self.summary:
            out["summary"] = self.summary
        if self.topic:
            out["topic"] = self.topic
        if self.notification is not None:
            out["notification"] = dict(self.notification)
        if self.service:
            out["service"] = True
        if self.on_unknown != OnUnknown.RESEND:
            out["onUnknown"] = str(self.on_unknown)
        return {**out, **fields_json(self.ack, self.follow_up, self.unless)}


@dataclass(frozen=True)
class OutboxMessage:
    op: Op
    key: str
    target: Target | None = None
    content: Content | None = None
    # send: when (README "Scheduling"); update: a new time for a scheduled key.
    schedule: Spec | None = None
    attempt: int = 1  # this is the attempt-th try (retries count up)
    part: bool = False  # one part of a many-user send, already split
    traceparent: str = ""  # the producer's trace; copies (retries, parts) carry it on
    needs_seal: bool = False  # it came with app-only fields: the worker checks the signature

    def to_json(self) -> dict[str, Any]:
        """The message as contract v1 JSON (what `parse_message` reads back).
        The key is always written: a copy must stay the same delivery."""
        out: dict[str, Any] = {"version": VERSION, "op": str(self.op), "key": self.key}
        if self.target is not None:
            out["to"] = self.target.to_json()
        if self.content is not None:
            out.update(self.content.to_json())
        if self.schedule is not None:
            out["schedule"] = self.schedule.to_json()
        if self.attempt > 1:
            out["attempt"] = self.attempt
        if self.part:
            out["part"] = True
        if self.traceparent:
            out["traceparent"] = self.traceparent
        return out

    def retry(self, *, attempt: int) -> OutboxMessage:
        """The copy that goes back on the queue for another try."""
        return replace(self, attempt=attempt)

    def for_users(self, users: list[str] | tuple[str, ...], tenant: str = "", *,
                  guests: bool | None = None) -> OutboxMessage:
        """A part of a many-user send for these users (same key, content and
        attempt; an audience's tenant when it is known only once listed;
        `guests`: they are guests of the tenant, None: as this part says)."""
        assert self.target is not None
        return replace(self, target=replace(
            self.target, kind=TargetKind.USERS, users=tuple(users), id="", continuation="",
            tenant=tenant or self.target.tenant,
            guests=self.target.guests if guests is None else guests), part=True)

    def next_page(self, continuation: str) -> OutboxMessage:
        """The message that lists the next page of a paged audience."""
        assert self.target is not None
        return replace(self, target=replace(self.target, continuation=continuation),
                       part=True, attempt=1)
