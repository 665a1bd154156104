"""The Azure Functions triggers: thin adapters from the host to `proactive`.

Heavy modules are imported inside the functions, not here: `function_app`
imports this module at cold start and must stay cheap.
"""

from __future__ import annotations

import logging

import azure.functions as func

log = logging.getLogger(__name__)

bp = func.Blueprint()


@bp.route(route="messages", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def messages(req: func.HttpRequest) -> func.HttpResponse:
    """Bot Framework activities from Teams."""
    from proactive.receiving.endpoint import handle_activity
    from proactive.runtime import get_runtime

    reply = await handle_activity(await get_runtime(), req.headers, req.get_body())
    return func.HttpResponse(reply.body, status_code=reply.status, mimetype="text/plain")


@bp.queue_trigger(arg_name="msg", queue_name="%OUTBOX_QUEUE%", connection="AzureWebJobsStorage")
async def outbox(msg: func.QueueMessage) -> None:
    """Send, update or delete a Teams message (see the outbox contract)."""
    from proactive.runtime import get_runtime
    from proactive.worker import process

    body = msg.get_body().decode("utf-8", errors="replace")
    outcome = await process(await get_runtime(), body, message_id=msg.id or "")
    log.info("outbox message %s: %s %s", msg.id, outcome.state, outcome.reason)


@bp.timer_trigger(arg_name="timer", schedule="0 */1 * * * *", run_on_startup=True)
async def schedules(timer: func.TimerRequest) -> None:
    """Every minute: put scheduled sends that are due on the outbox (once each,
    even when runs overlap; a run after downtime catches up)."""
    from proactive.runtime import get_runtime
    from proactive.scheduling.timer import tick

    report = await tick(await get_runtime())
    if report.due or timer.past_due:
        log.info("schedules tick: %s", report.as_dict())
