"""The contract's `schedule` object (README "Scheduling"): its shape and
meaning, and the time rules it is written in. Pure, no I/O; the scheduler
that stores and fires schedules is proactive/scheduling/.

    errors.py      ScheduleError, the one error here (an InvalidMessage:
                   reason + detail)
    spec.py        the `schedule` object: shape and meaning checked (`parse_spec`
                   -> `Spec`), occurrence keys (`standup:2026-12-07T08:00Z`)
    rrules.py      RRULE text checked against RFC 5545
    walls.py       an RRULE's wall times from dateutil, with bounded work (a
                   series continues from its start); grid.py: hourly and
                   minutely rules a day at a time
    cron.py        cron / NCRONTAB text and its next time (the local Functions
                   host uses it for timer triggers too)
    zones.py       time zones and daylight saving: wall times <-> instants
"""
