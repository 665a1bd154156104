"""Scheduled sends: a `send` with a `schedule` is stored, and a timer puts the
ordinary send on the outbox queue when it is due (README "Scheduling").

Modules, from the schedule object to the table:

    errors.py      ScheduleError, the one error of the package (reason + detail)
    spec.py        the `schedule` object: shape and meaning checked (`parse_spec`
                   -> `Spec`), occurrence keys (`standup:2026-12-07T08:00Z`)
    rrules.py      RRULE text checked against RFC 5545, and its wall times from
                   dateutil with bounded work (a series continues from its start)
    cron.py        cron / NCRONTAB text and its next time (the local Functions
                   host uses it for timer triggers too)
    zones.py       time zones and daylight saving: wall times <-> instants
    recurrence.py  `Plan`: a schedule in a zone; its first occurrence and the
                   one after each (`Occurrence`)
    store.py       the `schedules` table: `ScheduleItem` rows (typed, with
                   `to_entity` / `from_entity`), `State`, keys, reads by key
    placing.py     a new scheduled send stored (`store_send`), each item moved
                   to its next occurrence, due ones onto the queue
    timer.py       the tick: claim what is due, dispatch it once (`tick`)
    manage.py      cancel / delete / update by key or by occurrence (`manage`)

Nothing here imports the worker or the delivering package: the worker routes
to scheduling. The names below are the package's surface; they load on first
use, so importing `proactive.scheduling.spec` (every message with a schedule)
does not load the storage side.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proactive.scheduling.errors import ScheduleError
    from proactive.scheduling.manage import Managed, manage
    from proactive.scheduling.placing import rows_for, store_send
    from proactive.scheduling.recurrence import Occurrence, Plan
    from proactive.scheduling.spec import Spec, parse_spec
    from proactive.scheduling.store import ScheduleItem, State, ZoneSource, list_items
    from proactive.scheduling.timer import TickReport, tick

_EXPORTS = {
    "ScheduleError": "errors",
    "Spec": "spec", "parse_spec": "spec",
    "Occurrence": "recurrence", "Plan": "recurrence",
    "ScheduleItem": "store", "State": "store", "ZoneSource": "store", "list_items": "store",
    "store_send": "placing", "rows_for": "placing",
    "TickReport": "timer", "tick": "timer",
    "Managed": "manage", "manage": "manage",
}
__all__ = ["Managed", "Occurrence", "Plan", "ScheduleError", "ScheduleItem", "Spec", "State",
           "TickReport", "ZoneSource", "list_items", "manage", "parse_spec", "rows_for",
           "store_send", "tick"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
