"""POST /api/messages: authenticate the activity, keep the conversation
reference fresh, queue a welcome on a new personal install, and carry out
what a user types in the personal chat (help/stop/start) or presses on a card
(the opt-out: proactive/receiving/commands.py).

No Connector call happens here: Teams waits only 15 s for the answer and
redelivers on slowness, so the request does storage writes and returns.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proactive.receiving.activities import InvalidActivity, decode_body, parse_activity
from proactive.receiving.welcome import welcome_message
from proactive.storage import tables
from proactive.teams.activity import Activity

if TYPE_CHECKING:
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    status: int
    body: str
    content_type: str = "text/plain"


UNAUTHORIZED = Reply(401, "unauthorized")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def browser_refusal(headers: Mapping[str, str]) -> Reply | None:
    """In local development (tokenless activities accepted), refuse what a web
    page open in the developer's browser could send: a page may POST
    cross-origin without asking first (no CORS preflight) only with a form or
    text/plain body, and a browser marks its requests with `Origin` and
    `Sec-Fetch-Site`. The Bot Framework, the Agents Playground and the
    Connector emulator post application/json from a server, without either."""
    media = (_header(headers, "content-type") or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        return Reply(415, "local development accepts only Content-Type: application/json")
    if _header(headers, "origin") is not None:
        return Reply(403, "local development refuses requests from a web page (Origin)")
    site = _header(headers, "sec-fetch-site")
    if site is not None and site.strip().lower() != "none":
        return Reply(403, "local development refuses requests from a web page "
                          "(Sec-Fetch-Site)")
    return None


async def handle_activity(rt: Runtime, headers: Mapping[str, str], body: bytes) -> Reply:
    """Token first, body second: a caller without a good token learns nothing
    about its body (401 "unauthorized" whatever the body holds)."""
    from proactive.receiving.auth import AuthenticationError

    authorization = _header(headers, "authorization")
    try:
        if authorization is not None and authorization.strip():
            token = await rt.authenticator.verify_token(authorization)
        elif rt.settings.local_dev:
            # Local development mode: check_activity lets a tokenless activity
            # through from a loopback serviceUrl only.
            token = None
        else:
            return UNAUTHORIZED
    except AuthenticationError as exc:
        log.warning("refused an activity: %s", exc.reason)
        return Reply(exc.status, "unauthorized")
    try:
        raw = decode_body(body)
    except InvalidActivity as exc:
        return Reply(400, str(exc))
    try:
        rt.authenticator.check_activity(token, raw)
    except AuthenticationError as exc:
        log.warning("refused an activity: %s", exc.reason)
        return Reply(exc.status, "unauthorized")
    try:
        activity = parse_activity(raw)
    except InvalidActivity as exc:
        return Reply(400, str(exc))
    if _is_card_action(activity):
        # Answered in the response (the card that replaces the notification);
        # an opt-out is idempotent, so a redelivery just answers again.
        return await _card_action(rt, activity)
    from proactive.receiving.receipts import is_read_receipt, record_receipt

    if is_read_receipt(activity):
        # Teams doesn't read the answer; a receipt that names someone else's
        # chat is refused by writing nothing, still 200 (no oracle).
        await record_receipt(rt, activity)
        return Reply(200, "")
    if not await _first_delivery(rt, activity):
        log.info("activity %s already processed (redelivery)", activity.id)
        return Reply(200, "")
    try:
        installed = await rt.references.record(activity)
        if installed and rt.settings.welcome_enabled:
            await rt.outbox.put(welcome_message(activity, rt.settings.bot_name))
        if activity.type == "message" and activity.scope == "personal" \
                and activity.from_aad_id:
            from proactive.receiving.commands import answer_message

            await answer_message(rt, activity)
    except Exception:
        # Let Teams redeliver: forget that we saw it.
        await _forget(rt, activity)
        raise
    log.info("activity %s (%s, %s) recorded", activity.id, activity.type, activity.scope)
    return Reply(200, "")


def _is_card_action(activity: Activity) -> bool:
    return activity.type == "invoke" and activity.raw.get("name") == "adaptiveCard/action"


async def _card_action(rt: Runtime, activity: Activity) -> Reply:
    import json

    from proactive.receiving.commands import answer_card_action

    body = await answer_card_action(rt, activity)
    return Reply(200, json.dumps(body), "application/json")


def _dedupe_keys(activity: Activity) -> tuple[str, str]:
    digest = hashlib.sha256(f"{activity.conversation_id}\n{activity.id}".encode()).hexdigest()
    # One partition per day keeps old rows easy to drop with a range query.
    return tables.now_utc().strftime("%Y-%m-%d"), digest


async def _first_delivery(rt: Runtime, activity: Activity) -> bool:
    pk, rk = _dedupe_keys(activity)
    try:
        await tables.create(rt.activities_table, {"PartitionKey": pk, "RowKey": rk,
                                                  "type": activity.type})
    except tables.Conflict:
        return False
    return True


async def _forget(rt: Runtime, activity: Activity) -> None:
    pk, rk = _dedupe_keys(activity)
    try:
        await rt.activities_table.delete_entity(pk, rk)
    except Exception:  # the original error matters more
        log.exception("could not clear the dedupe row of activity %s", activity.id)
