"""The HTTP API for producers (README "HTTP API"): `/api/notifications`,
`/api/sends/{key}` and its recipients, report and cancel, `/api/reach`, and the
OpenAPI document that describes them (`openapi.json`, served at
`/api/openapi.json`).

- routes.py         the Functions Blueprint: thin handlers (decode, call, map)
- problems.py       RFC 9457 problem details: the one shape of every error
- notifications.py  POST /api/notifications: validate as the worker does, enqueue
- sends.py          a send's state, its recipients (paged) and cancel
- paging.py         opaque continuation tokens and page sizes
- reports.py        the report and reach routes' data (until proactive.reporting lands)
- bearer.py         the optional Entra ID bearer-token check
"""
