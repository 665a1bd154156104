"""What becomes of an outbox message, decided in one place.

A part of the worker (send, edit, broadcast) either returns an `Outcome` or
raises a member of `proactive.errors`; `outcome_of` turns the error into an
Outcome, as arq's `Retry(defer=...)` does for a job:

    InvalidMessage     -> POISONED  (never retried)
    Permanent          -> FAILED    (recorded, never retried)
    Transient          -> RETRY     after Retry-After or backoff; uses up an attempt
    RetryLater         -> RETRY     after its delay; keeps the attempt count
    StorageError       -> raised on: the queue trigger fails, the host retries it

proactive/delivering/requeue.py carries a RETRY or POISONED outcome out on the
queues. The delivery rows' states are storage's (proactive/storage/states.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from proactive.errors import (
    InvalidMessage,
    Permanent,
    ProactiveError,
    RetryLater,
    StorageError,
    Transient,
)

MAX_BACKOFF = 300.0


class Action(StrEnum):
    DONE = "done"  # nothing more to do (sent, a duplicate, stored for later)
    FAILED = "failed"  # recorded as failed; retrying can't help
    RETRY = "retry"  # back on the queue after `delay`
    POISONED = "poisoned"  # parked in the poison queue with its reason


@dataclass(frozen=True)
class Outcome:
    state: Action
    reason: str = ""
    delay: float = 0.0
    counts: bool = True  # whether the retry uses up an attempt
    # An attempt's outcome was unknown on the way (README "Exactly once, as far
    # as Teams allows"): the recipient may have two copies (resend) or none (skip).
    ambiguous: bool = False


def backoff(attempt: int, retry_after: float | None) -> float:
    """Retry-After when Teams gave one, else 2^attempt s (capped) with jitter."""
    if retry_after is not None:
        return retry_after
    base = min(MAX_BACKOFF, 2.0 ** attempt)
    return base / 2 + random.uniform(0, base / 2)


def outcome_of(exc: ProactiveError, attempt: int) -> Outcome:
    """What an error means for the message on its `attempt`-th try."""
    if isinstance(exc, InvalidMessage):
        return Outcome(Action.POISONED, exc.reason)
    if isinstance(exc, Permanent):
        return Outcome(Action.FAILED, exc.reason)
    if isinstance(exc, Transient):
        return Outcome(Action.RETRY, exc.reason, delay=backoff(attempt, exc.retry_after))
    if isinstance(exc, RetryLater):
        return Outcome(Action.RETRY, exc.reason, delay=exc.delay or backoff(1, None),
                       counts=False)
    if isinstance(exc, StorageError):
        raise exc  # an answer of storage no caller expected: the host retries the message
    raise TypeError(f"no outcome for {type(exc).__name__}")  # a new branch of the tree

