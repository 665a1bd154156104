"""Paging: opaque continuation tokens and bounded page sizes.

Table Storage continues a query from (NextPartitionKey, NextRowKey); the API
hands that out as URL-safe base64 JSON so producers treat it as opaque and we
may change what is inside. A token that doesn't decode is the caller's mistake
(400), never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from proactive.api.problems import Problem

DEFAULT_PAGE = 100
MAX_PAGE = 1000  # Table Storage's own maximum page


def page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_PAGE
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise Problem(400, "bad-page-size", f"'limit' must be a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def encode_token(token: Any) -> str | None:
    if not token:
        return None
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode().rstrip("=")


def decode_token(raw: str | None) -> dict[str, str] | None:
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        data = None
    if not isinstance(data, dict) or not data or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise Problem(400, "bad-continuation", "'continuation' is not a token this API gave out")
    return data
