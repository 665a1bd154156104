"""What becomes of an outbox message.

An `Outcome` says whether a message is done, to be retried (with a delay, and
whether the retry uses up an attempt) or poisoned. proactive/delivering/requeue.py
puts it into effect on the queues.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MAX_BACKOFF = 300.0


@dataclass(frozen=True)
class Outcome:
    state: str  # done | retry | poisoned
    reason: str = ""
    delay: float = 0.0
    counts: bool = True  # whether the retry uses up an attempt


def backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return retry_after
    base = min(MAX_BACKOFF, 2.0 ** attempt)
    return base / 2 + random.uniform(0, base / 2)
