"""The recipient's time zone as Teams reports it in an activity: IANA names
kept, Windows names (some Teams clients on Windows) mapped by CLDR's
windowsZones table, an IANA value preferred over a Windows one, and the
mapping loaded only when a Windows name arrives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proactive.receiving.activities import parse_activity, timezone_of
from tests.activities_data import activity


def client_info(zone: str) -> list[dict[str, Any]]:
    return [{"type": "clientInfo", "locale": "en-US", "timezone": zone}]


@pytest.mark.parametrize(("windows", "iana"), [
    ("Pacific Standard Time", "America/Los_Angeles"),
    ("W. Europe Standard Time", "Europe/Berlin"),
    ("GMT Standard Time", "Europe/London"),
    ("Tokyo Standard Time", "Asia/Tokyo"),
    ("UTC", "UTC"),
])
def test_a_windows_zone_name_becomes_its_iana_zone(windows: str, iana: str) -> None:
    assert parse_activity(activity(entities=client_info(windows))).timezone == iana
    assert parse_activity(activity(localTimezone=windows)).timezone == iana


def test_an_iana_value_wins_over_a_windows_one_wherever_each_is() -> None:
    both = activity(entities=client_info("Pacific Standard Time"),
                    localTimezone="Europe/Paris")
    assert timezone_of(both) == "Europe/Paris"
    both = activity(entities=client_info("America/Chicago"),
                    localTimezone="W. Europe Standard Time")
    assert timezone_of(both) == "America/Chicago"
    assert timezone_of(activity(entities=client_info("Not A Zone"),
                                localTimezone="Tokyo Standard Time")) == "Asia/Tokyo"
    # Neither usable: kept as sent, for the scheduler to log and use the default.
    assert timezone_of(activity(entities=client_info("Mars/Olympus"))) == "Mars/Olympus"
    assert timezone_of(activity()) == ""


def test_the_windows_table_loads_only_when_a_windows_name_arrives() -> None:
    root = Path(__file__).parents[1]
    iana = json.dumps(activity(entities=client_info("Europe/Berlin")))
    windows = json.dumps(activity(entities=client_info("W. Europe Standard Time")))
    code = ("import json, sys; from proactive.receiving.activities import parse_activity; "
            "zones = [parse_activity(json.loads(a)).timezone for a in sys.argv[1:]]; "
            "print(zones[-1], any(m.startswith('tzlocal') for m in sys.modules))")
    for bodies, expected in (([iana], ["Europe/Berlin", "False"]),
                             ([iana, windows], ["Europe/Berlin", "True"])):
        out = subprocess.run([sys.executable, "-c", code, *bodies], cwd=root,
                             capture_output=True, text=True, check=True).stdout.split()
        assert out == expected
