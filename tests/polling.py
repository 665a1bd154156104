"""Waiting for an outcome in tests: poll with a deadline, never a fixed sleep.
Every wait in the tests goes through `eventually` (issue 20 §6)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def eventually(check: Callable[[], Any], timeout: float = 15.0,
                     what: str = "condition", *, interval: float = 0.05,
                     seen: Callable[[], Any] | None = None) -> Any:
    """Poll `check` (sync or async) until it returns something truthy, and
    return that. `interval`: the pause between tries (a retry invisible on the
    queue until due needs no faster polling); `seen`: what to show when the
    deadline passes (the check's last observation, a log tail). A check may
    raise to give up early (a host that exited)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f" (last seen: {seen()})" if seen is not None else ""
            raise AssertionError(f"{what} not met within {timeout:g}s{detail}")
        await asyncio.sleep(interval)
