"""A send's summary row (storage/progress.py) as a typed value, as
storage/delivery_rows.py is for delivery rows: `from_entity` reads one from
Table storage, `to_entity` gives it back with the same property names and
values, so rows already stored read as before and nothing is lost: a
property this model does not name stays in `extra` and is written back as it
was read. A field that is None is a property the row does not have.

`CampaignProgress` is what a progress read returns: the summary and the
counters summed over its shards. The shard and marker rows themselves stay
entities inside storage/progress.py: they are pieces of one entity-group
transaction, with counter names (`failed_<reason>`) that are data, not fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proactive.storage import tables
from proactive.storage.rows import entity_of, fill
from proactive.storage.rows import stored as _prop
from proactive.storage.send_index import SendState

SUMMARY = "summary"  # the summary's RowKey
TOTAL = "total_"  # a final counter copied to the summary: `total_sent`


@dataclass
class CampaignRow:
    key: str
    # running / done / failed / cancelled. A stored value that is not a
    # SendState reads as None and stays, as it was, in `extra`.
    state: SendState | None = field(default=None, metadata={"property": "state"})
    created_at: str | None = _prop("createdAt")
    index_row: str | None = _prop("indexRow")  # the send index's RowKey (send_index.py)
    reason: str | None = _prop("reason")  # why it failed or had nobody to send to
    detail: str | None = _prop("detail")
    again: str | None = _prop("again")  # a failure reason whose recipients are tried again
    cancelled_at: str | None = _prop("cancelledAt")
    finished_at: str | None = _prop("finishedAt")
    duration_seconds: float | None = _prop("durationSeconds")
    # The counters as they were when it turned final: `total_<name>`, by name.
    totals: dict[str, int] = field(default_factory=dict)
    # Every other property, as read (PartitionKey and RowKey among them).
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> CampaignRow:
        row = fill(cls(key=str(entity.get("key", ""))),
                   {name: value for name, value in entity.items()
                    if name != "state" and not name.startswith(TOTAL)}, skip=("key",))
        row.totals = {name.removeprefix(TOTAL): value for name, value in entity.items()
                      if name.startswith(TOTAL)}
        state = entity.get("state")
        if isinstance(state, str) and state in SendState.__members__.values():
            row.state = SendState(state)
        elif state is not None:
            row.extra["state"] = state
        return row

    def to_entity(self) -> dict[str, Any]:
        entity = {"PartitionKey": tables.safe_key(self.key), "RowKey": SUMMARY,
                  **entity_of(self), "key": self.key}
        if self.state is not None:
            entity["state"] = str(self.state)
        return entity | {TOTAL + name: n for name, n in self.totals.items()}


@dataclass
class CampaignProgress:
    """A send's summary and its counters now (summed over the shards; `pages`,
    an internal counter, left out)."""

    summary: CampaignRow
    counts: dict[str, int]

    def view(self) -> dict[str, Any]:
        """As JSON for a person (the CLI's `progress`): the summary's
        properties and the counts, as the stored row names them."""
        entity = self.summary.to_entity()
        return {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")} | {
            "counts": dict(self.counts)}
