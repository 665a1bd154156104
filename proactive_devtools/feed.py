"""The dev launcher's live lines: one per delivered, failed or skipped message,
as it happens, read from the delivery records in (local) Table Storage.

The records are the truth the app keeps (the logs say less, and differently
under `func start` and the built-in host), so the feed polls the deliveries
table for rows changed since its last look and prints each final state once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from proactive.storage.counting import SKIP_REASONS
from proactive.storage.deliveries import FINAL

SKEW = timedelta(seconds=5)  # rows written just before a look, with a later Timestamp


def line(row: dict[str, Any]) -> str:
    state, reason = str(row.get("state", "")), str(row.get("reason", "") or "")
    word = {"sent": "delivered", "deleted": "deleted", "cancelled": "skipped"}.get(state, state)
    if state == "failed" and reason in SKIP_REASONS:
        word = "skipped"
    why = f" ({reason})" if reason and state != "sent" else ""
    return f"{word:>9}  {row.get('key', '?')} -> {row.get('recipient', '?')}{why}"


class DeliveryFeed:
    def __init__(self, table: Any, *, now: datetime | None = None) -> None:
        self.table = table  # azure.data.tables.TableClient (sync)
        self.since = (now or datetime.now(UTC)) - SKEW
        self.seen: set[tuple[str, str, str]] = set()

    def poll(self) -> list[str]:
        """The lines for final states recorded since the last poll."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        started = datetime.now(UTC)
        out: list[str] = []
        try:
            rows = list(self.table.query_entities(
                "Timestamp ge @since", parameters={"since": self.since}))
        except ResourceNotFoundError:  # no send yet: the table comes with the first
            return out
        except AzureError:  # storage not answering (Azurite stopped): the launcher
            return out      # sees its child exit and says so; the next look catches up
        for row in rows:
            state = str(row.get("state", ""))
            mark = (row["PartitionKey"], row["RowKey"], state)
            if state in FINAL and mark not in self.seen:
                self.seen.add(mark)
                out.append(line(dict(row)))
        self.since = started - SKEW
        return out
