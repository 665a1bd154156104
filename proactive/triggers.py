"""The Azure Functions triggers: thin adapters from the host to `proactive`.

Heavy modules are imported inside the functions, not here: `function_app`
imports this module at cold start and must stay cheap.

When the settings can't be used (`ConfigError`), the Python worker can't stop
the host, so every invocation says why in the log and does no work: the HTTP
endpoint answers 503, the queue trigger fails the invocation (the message is
not consumed: the host makes it visible again later) and the timer skips its run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from proactive.errors import ConfigError

log = logging.getLogger(__name__)

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions: untyped __init__

CONFIG_ERROR_BODY = "service unavailable: the app's configuration is invalid (see its log)"


def _refuse(what: str, exc: ConfigError) -> None:
    log.error("%s not run: configuration error: %s", what, exc)


@bp.route(route="messages", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def messages(req: func.HttpRequest) -> func.HttpResponse:
    """Bot Framework activities from Teams."""
    from proactive.errors import ConfigError
    from proactive.receiving.endpoint import browser_refusal, handle_activity
    from proactive.runtime import get_runtime

    try:
        rt = await get_runtime()
    except ConfigError as exc:
        _refuse("activity", exc)
        return func.HttpResponse(CONFIG_ERROR_BODY, status_code=503, mimetype="text/plain")
    refusal = browser_refusal(req.headers) if rt.settings.local_dev else None
    reply = refusal or await handle_activity(rt, req.headers, req.get_body())
    return func.HttpResponse(reply.body, status_code=reply.status, mimetype=reply.content_type)


@bp.queue_trigger(arg_name="msg", queue_name="%OUTBOX_QUEUE%", connection="AzureWebJobsStorage")
async def outbox(msg: func.QueueMessage) -> None:
    """Send, update or delete a Teams message (see the outbox contract)."""
    from proactive.errors import ConfigError
    from proactive.runtime import get_runtime
    from proactive.worker import process

    try:
        rt = await get_runtime()
    except ConfigError as exc:
        _refuse(f"outbox message {msg.id}", exc)
        raise  # not consumed: the host retries it (README, "Configuration errors")
    body = msg.get_body().decode("utf-8", errors="replace")
    outcome = await process(rt, body, message_id=msg.id or "", inserted_at=msg.insertion_time)
    log.info("outbox message %s: %s %s", msg.id, outcome.state, outcome.reason)


# Not run_on_startup: on Flex Consumption every new instance would run it as it
# starts. Nothing is lost without it: the next minute's tick catches up on what fell
# due while the app was down (tests/test_scheduler.py, "after downtime").
@bp.timer_trigger(arg_name="timer", schedule="0 */1 * * * *", run_on_startup=False)
async def schedules(timer: func.TimerRequest) -> None:
    """Every minute: put scheduled sends that are due on the outbox (once each,
    even when runs overlap; a run after downtime catches up)."""
    from proactive.errors import ConfigError
    from proactive.runtime import get_runtime
    from proactive.scheduling.timer import tick

    try:
        rt = await get_runtime()
    except ConfigError as exc:
        _refuse("schedules tick", exc)
        return
    report = await tick(rt)
    if report.due or timer.past_due:
        log.info("schedules tick: %s", report.as_dict())
