"""The HTTP API for producers (README "HTTP API"): `/api/notifications`,
`/api/sends/{key}` and its recipients, report and cancel, `/api/reach`, and the
OpenAPI document that describes them (`openapi.json`, served at
`/api/openapi.json`).

- routes.py         the Functions Blueprint: thin handlers (decode, call, map)
- problems.py       RFC 9457 problem details: the one shape of every error
- notifications.py  POST /api/notifications: validate as the worker does, enqueue
- sends.py          a send's state, its recipients (paged) and cancel
- paging.py         opaque continuation tokens and page sizes
- reports.py        the report and reach routes' data (proactive.reporting's reports)
- stuck.py          the poison queue (list, requeue, purge) and schedules to come
- bearer.py         the optional Entra ID bearer-token check
- ui.py             the operations page's static files, served at /api/ui/
- page_auth.py      who may read the page's data in Azure (Easy Auth, an app role)
- page_data.py      the page's data routes under /api/ui/data/

The package imports none of them itself (import the module you need).
"""

__all__ = ["bearer", "notifications", "page_auth", "page_data", "paging", "problems",
           "reports", "routes", "sends", "stuck", "ui"]
