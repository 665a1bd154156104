"""The one error of the scheduling package."""

from __future__ import annotations


class ScheduleError(ValueError):
    """A schedule that can't be used. `reason` is `schema` for a wrong shape
    (what the JSON Schema refuses too) or `invalid-schedule` for a well-formed
    one that does not work (unknown zone, bad RRULE or cron, no occurrence).
    Parsing and checking a schedule raise nothing else, whatever the input."""

    def __init__(self, detail: str, reason: str = "invalid-schedule") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
