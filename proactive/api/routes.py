"""The HTTP API's routes: a Functions Blueprint of thin handlers.

Every route but `health` is behind a Functions key (`auth_level=FUNCTION`: the
`x-functions-key` header or the `code` query parameter, checked by the host
before the function runs) and, when PROACTIVE_API_AUDIENCE is set, an Entra ID bearer token too
(`proactive.api.bearer`). Heavy modules are imported inside the handlers: this
module is imported at cold start. Every error is RFC 9457 problem details.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from proactive.api.problems import Reply
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions: untyped __init__
KEY = func.AuthLevel.FUNCTION
OPENAPI = Path(__file__).with_name("openapi.json")

Handler = Callable[["Runtime"], Awaitable["Reply"]]
# Every answer comes within this many seconds: past it (storage, or a token
# endpoint, not answering), 503 with Retry-After. The storage clients give up
# sooner by themselves (runtime.REQUEST_PATH_*); this bounds the sum.
API_DEADLINE = 9.0
RETRY_AFTER = {"Retry-After": "10"}


def _api_base(req: func.HttpRequest, marker: str) -> str:
    """The API's base URL (ending in the route prefix and '/'), from this request's."""
    url: str = req.url.split("?", 1)[0]
    return url[: url.rfind(marker)] + "/"


async def _serve(req: func.HttpRequest, handler: Handler, *,
                 bearer: bool = True) -> func.HttpResponse:
    """Run `handler` with the Runtime and map its Reply; every failure becomes a problem.
    `bearer`: the API's optional Entra ID token check applies (not to the page's
    data, which App Service authentication guards: `proactive.api.page_auth`)."""
    from proactive.api.problems import Problem, problem
    from proactive.errors import ConfigError, StorageError, StorageUnavailable
    from proactive.runtime import get_api_runtime

    async def serve() -> Reply:
        rt = await get_api_runtime()
        if bearer and rt.settings.api_audience:
            from proactive.api.bearer import check_request

            await check_request(rt, req.headers.get("Authorization", ""))
        return await handler(rt)

    try:
        reply = await asyncio.wait_for(serve(), API_DEADLINE)
    except TimeoutError:
        # Cut short like a storage failure half-way: whatever was written stays,
        # and a retry with the same key is deduplicated (README "HTTP API").
        log.warning("API request not answered within %g s: %s %s", API_DEADLINE, req.method,
                    req.url.split("?", 1)[0])
        reply = problem(503, "storage-unavailable", f"storage did not answer within "
                        f"{API_DEADLINE:g} s", headers=RETRY_AFTER)
    except Problem as exc:
        reply = exc.reply()
    except ConfigError as exc:
        log.error("API request not served: configuration error: %s", exc)
        reply = problem(503, "config-error", "the app's configuration is invalid (see its log)")
    except StorageUnavailable as exc:
        reply = problem(503, "storage-unavailable", exc.detail or "storage is unreachable",
                        headers=RETRY_AFTER)
    except StorageError as exc:  # storage refused: the caller may retry
        log.warning("API request: storage error: %s", exc.detail)
        reply = problem(503, "storage-unavailable", f"storage answered {type(exc).__name__}",
                        headers=RETRY_AFTER)
    except Exception:
        log.exception("API request failed: %s %s", req.method, req.url.split("?", 1)[0])
        reply = problem(500, "internal", "the request failed; see the app's log")
    return func.HttpResponse(reply.body, status_code=reply.status, headers=reply.headers,
                             mimetype=reply.content_type)


@bp.route(route="notifications", methods=["POST"], auth_level=KEY)
async def api_notifications(req: func.HttpRequest) -> func.HttpResponse:
    """Outbox messages (one, or a batch) over HTTP."""
    from proactive.api.notifications import accept

    return await _serve(req, lambda rt: accept(
        rt, req.get_body(), content_type=req.headers.get("Content-Type", ""),
        base_url=_api_base(req, "/notifications"),
        traceparent=req.headers.get("traceparent", "")))


@bp.route(route="sends", methods=["GET"], auth_level=KEY)
async def api_sends(req: func.HttpRequest) -> func.HttpResponse:
    """Sends to many recipients, newest first, from the send index."""
    from proactive.api import sends

    q = req.params.get
    return await _serve(req, lambda rt: sends.listing(
        rt, limit=q("limit"), continuation=q("continuation"), state=q("state"),
        topic=q("topic"), text=q("text")))


@bp.route(route="sends/{key}", methods=["GET"], auth_level=KEY)
async def api_send_status(req: func.HttpRequest) -> func.HttpResponse:
    from proactive.api import sends

    base = req.url.split("?", 1)[0].rstrip("/") + "/"
    return await _serve(req, lambda rt: sends.status(rt, req.route_params["key"], base_url=base))


@bp.route(route="sends/{key}/recipients", methods=["GET"], auth_level=KEY)
async def api_send_recipients(req: func.HttpRequest) -> func.HttpResponse:
    from proactive.api import sends

    return await _serve(req, lambda rt: sends.recipients(
        rt, req.route_params["key"], limit=req.params.get("limit"),
        continuation=req.params.get("continuation")))


@bp.route(route="sends/{key}/cancel", methods=["POST"], auth_level=KEY)
async def api_send_cancel(req: func.HttpRequest) -> func.HttpResponse:
    from proactive.api import sends

    base = req.url.split("?", 1)[0]
    base = base[: base.rfind("/cancel")]
    return await _serve(req, lambda rt: sends.cancel(rt, req.route_params["key"], base_url=base))


@bp.route(route="sends/{key}/report", methods=["GET"], auth_level=KEY)
async def api_send_report(req: func.HttpRequest) -> func.HttpResponse:
    """A send's report, a page at a time, as JSON or CSV (`format`, or Accept)."""
    from proactive.api import reports

    url = req.url.split("?", 1)[0]

    async def run(rt: Runtime) -> Reply:
        fmt = reports.report_format(req.params.get("format"), req.headers.get("Accept", ""))
        return await reports.report(rt, req.route_params["key"], fmt=fmt,
                                    limit=req.params.get("limit"),
                                    continuation=req.params.get("continuation"), url=url)
    return await _serve(req, run)


@bp.route(route="reach", methods=["GET"], auth_level=KEY)
async def api_reach(req: func.HttpRequest) -> func.HttpResponse:
    """Whom the bot can reach, per tenant (`group`: and who in it never installed it)."""
    from proactive.api import reports

    group = req.params.get("group") or ""
    return await _serve(req, lambda rt: reports.reach(rt, group))


@bp.route(route="poison", methods=["GET"], auth_level=KEY)
async def api_poison(req: func.HttpRequest) -> func.HttpResponse:
    """The poison queue: its count and its first 32 messages with their reasons."""
    from proactive.api import stuck

    return await _serve(req, stuck.poison)


@bp.route(route="poison/{id}/requeue", methods=["POST"], auth_level=KEY)
async def api_poison_requeue(req: func.HttpRequest) -> func.HttpResponse:
    """A parked message (or the fixed one in the body) back on the outbox, if valid."""
    from proactive.api import stuck

    return await _serve(req, lambda rt: stuck.requeue(rt, req.route_params["id"],
                                                      req.get_body()))


@bp.route(route="poison/{id}/purge", methods=["POST"], auth_level=KEY)
async def api_poison_purge(req: func.HttpRequest) -> func.HttpResponse:
    from proactive.api import stuck

    return await _serve(req, lambda rt: stuck.purge(rt, req.route_params["id"]))


@bp.route(route="schedules", methods=["GET"], auth_level=KEY)
async def api_schedules(req: func.HttpRequest) -> func.HttpResponse:
    """The scheduled items still to come, soonest first."""
    from proactive.api import stuck

    return await _serve(req, stuck.schedules)


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def api_health(req: func.HttpRequest) -> func.HttpResponse:
    """Whether the app's settings can be used: 200, or 503 naming the settings to
    fix, never a value (anonymous: SECURITY.md "Inbound: the HTTP API")."""
    from proactive.api.problems import Reply, problem
    from proactive.config import named_settings
    from proactive.errors import ConfigError
    from proactive.runtime import get_runtime

    try:
        await get_runtime()  # no storage call: the settings and the clients, made once
        reply = Reply.json(200, {"status": "ok"})
    except ConfigError as exc:
        names = named_settings(exc.problems)
        reply = problem(503, "config-error", "the app's configuration is invalid: "
                        f"{', '.join(names) or 'see its log'}", settings=names)
    headers = {**reply.headers, "Cache-Control": "no-store"}
    return func.HttpResponse(reply.body, status_code=reply.status, headers=headers,
                             mimetype=reply.content_type)


@bp.route(route="ui/data/{*rest}", methods=["GET", "POST"],
          auth_level=func.AuthLevel.ANONYMOUS)
async def api_ui_data(req: func.HttpRequest) -> func.HttpResponse:
    """The page's data for a user App Service signed in (anonymous to the host: the
    check is `proactive.api.page_auth`; 404 unless App Service authentication is on)."""
    from proactive.api import page_data

    return await _serve(req, lambda rt: page_data.serve(rt, req), bearer=False)


@bp.route(route="ui/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def api_ui(req: func.HttpRequest) -> func.HttpResponse:
    """The operations page's static files (anonymous: they hold no data; the page
    reads the API with the API's own auth). `/api/ui` without the slash is
    redirected so the page's relative URLs resolve."""
    from proactive.api import ui

    path = req.route_params.get("path") or ""
    if not path and not req.url.split("?", 1)[0].endswith("/"):
        return func.HttpResponse(status_code=308, headers={
            "Location": req.url.split("?", 1)[0] + "/", **ui.HEADERS})
    reply = ui.page(path)
    return func.HttpResponse(reply.body, status_code=reply.status, headers=reply.headers,
                             mimetype=reply.content_type.split(";")[0], charset="utf-8")


@bp.route(route="openapi.json", methods=["GET"], auth_level=KEY)
async def api_openapi(req: func.HttpRequest) -> func.HttpResponse:
    """The OpenAPI 3.1 document of these routes (committed; a test keeps it true)."""
    return func.HttpResponse(OPENAPI.read_bytes(), mimetype="application/json")
