"""A message as the app enqueues it for itself: signed by its seal
(proactive/storage/seal.py), as every retry, part and own message is."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proactive.runtime import Runtime


async def app_made(rt: Runtime, message: dict[str, Any] | str) -> str:
    data = json.loads(message) if isinstance(message, str) else message
    return json.dumps(await rt.outbox.seal.sign(data))
