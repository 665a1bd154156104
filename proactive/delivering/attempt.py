"""A recipient's delivery claim, taken as late as it can be (see Attempt)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from proactive.storage.deliveries import Claim
from proactive.storage.delivery_rows import DeliveryRow
from proactive.telemetry import log_id

if TYPE_CHECKING:
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)


class Finished(Exception):
    """The delivery row is final already (raised by Attempt.take)."""

    def __init__(self, row: DeliveryRow) -> None:
        super().__init__(str(row.state))
        self.row = row


class Attempt:
    """A recipient's claim, taken as late as it can be: once the tenant's send
    slot is granted and the Connector call is about to go out (`call`'s
    `ready`), or when a result must be recorded without a call. A worker
    killed before then leaves no claim (nothing was sent: a clean retry), so
    only a kill between the claim and the outcome write leaves the delivery
    ambiguous (README "Exactly once, as far as Teams allows")."""

    def __init__(self, rt: Runtime, key: str, recipient: str, on_unknown: str) -> None:
        self.rt, self.key, self.recipient, self.on_unknown = rt, key, recipient, on_unknown
        self.claim: Claim | None = None

    async def take(self) -> Claim:
        """The claim (taken now if not yet); raises Busy, StorageUnavailable,
        or Finished with the final row."""
        if self.claim is not None:
            return self.claim
        got = await self.rt.deliveries.claim(self.key, self.recipient,
                                             on_unknown=self.on_unknown)
        if not isinstance(got, Claim):
            raise Finished(got)
        if got.entity.get("ambiguous") and got.entity.get("unknownAttempt") == got.attempts - 1:
            log.warning("delivery %s -> %s: attempt %s had an unknown outcome (%s); sending "
                        "again (onUnknown resend)", self.key, log_id(self.recipient),
                        got.entity["unknownAttempt"], got.entity.get("unknownCause"))
        self.claim = got
        return got
