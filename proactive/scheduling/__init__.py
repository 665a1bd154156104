"""Scheduled sends: a `send` with a `schedule` is stored, and a timer puts the
ordinary send on the outbox queue when it is due (README "Scheduling").

The `schedule` object itself (its shape and meaning: `Spec`, RRULE, cron,
time zones, `ScheduleError`) is part of the contract: proactive/contract/schedule/.
Modules here, from the plan to the table:

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
use, so importing the package does not load the storage side.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proactive.contract.schedule.errors import ScheduleError
    from proactive.contract.schedule.spec import Spec, parse_spec
    from proactive.scheduling.manage import Managed, manage
    from proactive.scheduling.placing import rows_for, store_send
    from proactive.scheduling.recurrence import Occurrence, Plan
    from proactive.scheduling.store import ScheduleItem, State, ZoneSource, list_items
    from proactive.scheduling.timer import TickReport, tick

_EXPORTS = {
    "ScheduleError": "proactive.contract.schedule.errors",
    "Spec": "proactive.contract.schedule.spec", "parse_spec": "proactive.contract.schedule.spec",
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
    module = _EXPORTS[name]
    value = getattr(import_module(module if "." in module else f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
