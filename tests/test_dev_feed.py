"""The dev launcher's live lines: each final delivery state once, as it is
recorded, in real (Azurite) Table Storage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableClient

from proactive_devtools.dev import _instructions, _supervise
from proactive_devtools.feed import DeliveryFeed
from proactive_devtools.processes import REPO_ROOT, start_azurite, stop_process


def test_each_delivered_failed_or_skipped_message_shows_once(azurite: Any) -> None:
    table = TableClient.from_connection_string(azurite.connection_string,
                                               f"d{uuid.uuid4().hex[:10]}")
    feed = DeliveryFeed(table)
    assert feed.poll() == []  # no table yet: no lines, no error
    table.create_table()

    def put(key: str, state: str, reason: str = "") -> None:
        table.upsert_entity({"PartitionKey": key, "RowKey": "r", "key": key,
                             "recipient": "user:u1", "state": state, "reason": reason})

    put("k1", "sending")
    put("k2", "sent")
    put("k3", "failed", "uninstalled")
    put("k4", "failed", "forbidden")
    lines = feed.poll()
    assert sorted(lines) == sorted([
        "delivered  k2 -> user:u1", "  skipped  k3 -> user:u1 (uninstalled)",
        "   failed  k4 -> user:u1 (forbidden)"])
    assert feed.poll() == []  # once each
    put("k1", "sent")
    assert feed.poll() == ["delivered  k1 -> user:u1"]


def test_the_demo_commands_use_a_fresh_key_each_run() -> None:
    user = {"name": "Alex", "chat": "c", "aad": "a", "tenant": "t-1"}
    first, second = _instructions(1, user), _instructions(1, user)
    key = first.split("send --key ")[1].split()[0]
    assert key.startswith("hello-") and f"status --key {key}" in first and key not in second
    assert "Tenant: t-1" in first and "send --all-users" in first  # the local broadcast's


def test_azurite_exiting_under_the_launcher_is_one_line_not_a_traceback(
        capsys: pytest.CaptureFixture[str]) -> None:
    # The launcher's loop with a real Azurite and a real child standing for the
    # app; Azurite is killed while the feed is reading from it.
    log = REPO_ROOT / ".dev" / "azurite.log"
    azurite = start_azurite()
    app = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                           start_new_session=True)
    try:
        table = TableClient.from_connection_string(
            azurite.connection_string, f"d{uuid.uuid4().hex[:10]}", retry_total=0)
        table.create_table()
        feed = DeliveryFeed(table)
        looks = 0

        class KillingFeed:
            """The feed, with Azurite killed right before its second look."""

            def poll(self) -> list[str]:
                nonlocal looks
                looks += 1
                if looks == 2:
                    os.killpg(azurite.proc.pid, signal.SIGKILL)
                    azurite.proc.wait(10)
                return feed.poll()

        children = [("Azurite", azurite.proc, log), ("the app", app, Path("app.log"))]
        assert _supervise(children, KillingFeed(), interval=0.05) == 1  # type: ignore[arg-type]
        err = capsys.readouterr().err
        assert "Azurite exited (-9); see .dev/azurite.log" in err and "Traceback" not in err
        assert app.poll() is None  # left for the launcher's cleanup, which stops the rest
    finally:
        stop_process(app)
        azurite.stop()
