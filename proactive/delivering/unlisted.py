"""Who and what a many-user send passed over, and an audience that can't be
read: their delivery rows (the report names them) and their counts, so the
send still ends true. Shared by the split (broadcast.py) and the retries
(requeue.py)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING

from proactive.errors import Reason
from proactive.storage.counting import SKIP_REASONS, result_counts
from proactive.storage.states import DeliveryState

if TYPE_CHECKING:
    from proactive.contract import OutboxMessage, Target
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)


def digest(target: Target) -> str:
    return hashlib.sha256(json.dumps(target.to_json(), sort_keys=True).encode()).hexdigest()


async def unreadable(rt: Runtime, message: OutboxMessage, reason: str, detail: str) -> None:
    """A page of a team or group that can't be read (refused for good, or its
    retries spent): the send ends `failed` with the reason once every other
    part is done, a report row `audience:<kind>:<id>` says why, and the page
    is no longer awaited."""
    target = message.target
    assert target is not None
    name = f"audience:{target.kind}:{target.id}"
    await unlisted(rt, message.key, name, reason, detail)
    await rt.campaigns.refuse(message.key, reason, detail)
    log.warning("send %s: audience refused: %s", message.key, reason)
    counts = {f"queued:{name}": Counter(queued=1), name: result_counts(reason)}
    if target.continuation:
        root = digest(replace(target, continuation=""))
        counts[f"page:{root}:{digest_of(target.continuation)}"] = Counter(pages=-1)
    await rt.campaigns.count(message.key, counts)
    await rt.campaigns.mark_split(message.key, digest(target))
    await rt.campaigns.settle(message.key)


# What the report row of someone passed over says.
WHY: dict[str, str] = {
    Reason.NO_AAD_ID: "the roster gives this member no Azure AD object id",
    Reason.DISABLED_ACCOUNT: "Graph says the account is disabled (accountEnabled false): "
                             "not sent to",
}


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


async def unlisted(rt: Runtime, key: str, recipient: str, reason: str, detail: str) -> None:
    """The delivery row of someone (or an audience) no send was made for."""
    from proactive.storage.deliveries import Claim

    claim = await rt.deliveries.claim(key, recipient)
    if isinstance(claim, Claim):
        state = DeliveryState.SKIPPED if reason in SKIP_REASONS else DeliveryState.FAILED
        await rt.deliveries.finish(claim, state, reason=reason, detail=detail, attempts=0)
