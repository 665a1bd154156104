"""The states a delivery row records (storage/deliveries.py): `state`, and
`updateState` / `deleteState` of an edit. Defined once, here, so no module
compares state strings of its own; the worker's parts (proactive/delivering)
decide them, storage keeps them.
"""

from __future__ import annotations

from enum import StrEnum


class DeliveryState(StrEnum):
    """`state` of a delivery row (storage/deliveries.py):
    sending (claimed, lease running) -> sent | failed | retrying | cancelled |
    skipped (the recipient opted out: no Connector call) | unknown (an
    attempt's outcome is unknown and the send says `"onUnknown": "skip"`);
    sent -> deleted.
    An `install` op ends in installed (reason installed / already-installed)."""

    SENDING = "sending"
    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"
    DELETED = "deleted"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    INSTALLED = "installed"  # op install: the app is there for the user; nothing sent
    UNKNOWN = "unknown"  # onUnknown skip: an attempt may have reached the user; not resent


class EditState(StrEnum):
    """`updateState` / `deleteState` of a delivery row."""

    DONE = "done"
    FAILED = "failed"
