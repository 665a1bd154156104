"""The one injectable clock of the tests: time moves only when the test says so
(`advance`, or `now += …`) or when the code under test sleeps on it (`sleep`)."""

from __future__ import annotations


class Clock:
    """A callable returning `now` (seconds, like time.time/monotonic); pass it as
    the `clock=` of the code under test, and `clock.sleep` as its `sleep=`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
