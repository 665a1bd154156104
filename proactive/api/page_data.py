"""The operations page's data in Azure, behind App Service authentication
(`proactive.api.page_auth`): the API's own handlers under `/api/ui/data/`,
for a browser that holds a sign-in cookie rather than a Functions key.

A state change is a POST that must carry the `X-Proactive-Page` header: a
form on another site can't send one, and a script there can't either
without a CORS preflight this app never grants, so a signed-in user's
cookie can't be used from elsewhere (CSRF).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proactive.api import page_auth
from proactive.api.problems import Problem, Reply

if TYPE_CHECKING:
    import azure.functions as func

    from proactive.runtime import Runtime

CSRF_HEADER = "X-Proactive-Page"


async def serve(rt: Runtime, req: func.HttpRequest) -> Reply:
    from proactive.api import reports, sends, stuck

    user = page_auth.check(rt.settings, req.headers)
    rest = req.route_params.get("rest") or ""
    parts = rest.split("/")
    q = req.params.get
    url = req.url.split("?", 1)[0]
    if req.method == "POST":
        if not req.headers.get(CSRF_HEADER):
            raise Problem(403, "csrf", f"a page action needs the {CSRF_HEADER} header")
        match parts:
            case ["sends", key, "cancel"]:
                return await sends.cancel(rt, key, base_url=url[: url.rfind("/cancel")])
            case ["poison", message_id, "requeue"]:
                return await stuck.requeue(rt, message_id, req.get_body())
            case ["poison", message_id, "purge"]:
                return await stuck.purge(rt, message_id)
    elif req.method == "GET":
        match parts:
            case ["session"]:
                return Reply.json(200, {"user": user.name}, **{"Cache-Control": "no-store"})
            case ["sends"]:
                return await sends.listing(rt, limit=q("limit"), continuation=q("continuation"),
                                           state=q("state"), topic=q("topic"), text=q("text"))
            case ["sends", key]:
                return await sends.status(rt, key, base_url=url.rstrip("/") + "/")
            case ["sends", key, "recipients"]:
                return await sends.recipients(rt, key, limit=q("limit"),
                                              continuation=q("continuation"))
            case ["sends", key, "report"]:
                fmt = reports.report_format(q("format"), req.headers.get("Accept", ""))
                return await reports.report(rt, key, fmt=fmt, limit=q("limit"),
                                            continuation=q("continuation"), url=url)
            case ["reach"]:
                return await reports.reach(rt, q("group") or "")
            case ["poison"]:
                return await stuck.poison(rt)
            case ["schedules"]:
                return await stuck.schedules(rt)
    raise Problem(404, "not-found", f"no page data at {req.method} {rest!r}")
