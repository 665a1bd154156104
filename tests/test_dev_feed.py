"""The dev launcher's live lines: each final delivery state once, as it is
recorded, in real (Azurite) Table Storage."""

from __future__ import annotations

import uuid
from typing import Any

from azure.data.tables import TableClient

from proactive_devtools.dev import _instructions
from proactive_devtools.feed import DeliveryFeed


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
    user = {"name": "Alex", "chat": "c", "aad": "a"}
    first, second = _instructions(1, user), _instructions(1, user)
    key = first.split("send --key ")[1].split()[0]
    assert key.startswith("hello-") and f"status --key {key}" in first and key not in second
