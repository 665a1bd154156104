"""The one error of the schedule object (scheduling too raises it): a branch of
proactive.errors."""

from __future__ import annotations

from proactive.errors import InvalidMessage


class ScheduleError(InvalidMessage):
    """A schedule that can't be used. `reason` is `schema` for a wrong shape
    (what the JSON Schema refuses too) or `invalid-schedule` for a well-formed
    one that does not work (unknown zone, bad RRULE or cron, no occurrence).
    Parsing and checking a schedule raise nothing else, whatever the input.
    Being an InvalidMessage, it sends the message to the poison queue."""

    def __init__(self, detail: str, reason: str = "invalid-schedule") -> None:
        super().__init__(reason, detail)
