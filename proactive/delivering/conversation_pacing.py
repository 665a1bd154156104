"""Teams' per-conversation limits (7/1 s, 8/2 s, 60/30 s, 1,800/h), kept per
process: a broadcast reaches each conversation once, and a stream into one
conversation from several processes is what the 429 handling covers. A 429's
Retry-After holds its conversation in this process (`hold`)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from proactive.delivering.pacing import Clock, Defer

CONVERSATION_WINDOWS = ((1.0, 7), (2.0, 8), (30.0, 60), (3600.0, 1800))
# Conversations whose sends this process remembers: a deque of a few floats
# each (under 1 KB), so about 2 MB at most.
CONVERSATIONS = 2048


class ConversationPacer:
    """Teams' per-conversation windows, kept in this process.

    At most CONVERSATIONS conversations are remembered (least recently sent
    to forgotten first, and any idle for the longest window): a broadcast
    reaches each conversation once, so its memory stays the same however
    large the audience. A conversation forgotten while it still had sends in
    its hour window may get a 429 from Teams, which the retry handles."""

    def __init__(self, *, clock: Clock = time.monotonic, max_wait: float = 2.0,
                 windows: tuple[tuple[float, int], ...] = CONVERSATION_WINDOWS,
                 sleep: Callable[[float], object] = asyncio.sleep,
                 size: int = CONVERSATIONS) -> None:
        self.clock = clock
        self.max_wait = max_wait
        self.windows = windows
        self.sleep = sleep
        self.size = size
        self._sent: OrderedDict[str, deque[float]] = OrderedDict()
        # Conversation -> until when Teams asked us to wait (Retry-After).
        self._held: OrderedDict[str, float] = OrderedDict()
        self._calls = 0

    def _wait(self, sent: deque[float], now: float) -> float:
        horizon = self.windows[-1][0]
        while sent and sent[0] <= now - horizon:
            sent.popleft()
        wait = 0.0
        for span, limit in self.windows:
            if len(sent) >= limit:
                # The send `limit` places back must leave the window first.
                wait = max(wait, sent[-limit] + span - now)
        return wait

    def _forget_idle(self, now: float) -> None:
        horizon = self.windows[-1][0]
        for key in [k for k, sent in self._sent.items() if not sent or sent[-1] < now - horizon]:
            del self._sent[key]
        for key in [k for k, until in self._held.items() if until <= now]:
            del self._held[key]

    def hold(self, conversation_id: str, seconds: float) -> None:
        """Teams answered 429 with Retry-After `seconds` for this conversation:
        this process sends nothing more to it before then."""
        key = conversation_id.split(";", 1)[0]
        until = self.clock() + seconds
        self._held[key] = max(until, self._held.get(key, 0.0))
        self._held.move_to_end(key)
        if len(self._held) > self.size:
            self._held.popitem(last=False)

    async def acquire(self, conversation_id: str) -> None:
        now = self.clock()
        self._calls += 1
        if self._calls % 4096 == 0:
            self._forget_idle(now)
        key = conversation_id.split(";", 1)[0]
        sent = self._sent.get(key)
        if sent is None:
            sent = self._sent[key] = deque()
            if len(self._sent) > self.size:
                self._sent.popitem(last=False)
        else:
            self._sent.move_to_end(key)
        wait = max(self._wait(sent, now), self._held.get(key, now) - now)
        if wait > self.max_wait:
            raise Defer(wait)
        sent.append(now + wait)
        if wait > 0:
            await self.sleep(wait)  # type: ignore[misc]
