"""The operations page: static files shipped in the package (proactive/ui/static),
served at /api/ui/ by the app itself, no build step and nothing from elsewhere.

The files hold no data: the page reads it from the HTTP API with the API's own
auth, so serving them is anonymous. Only the files in the folder are served
(looked up by name in a fixed table, never by joining a path), each with a
strict Content-Security-Policy: scripts, styles, images and requests to this
origin only, no inline script or style, no framing.
"""

from __future__ import annotations

from pathlib import Path

from proactive.api.problems import Reply, problem

STATIC = Path(__file__).resolve().parent.parent / "ui" / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def _files() -> dict[str, Path]:
    return {p.name: p for p in STATIC.iterdir() if p.is_file() and p.suffix in TYPES}


def page(path: str) -> Reply:
    """The file `path` names ('' is the page itself)."""
    files = _files()
    found = files.get(path or "index.html")
    if found is None:
        reply = problem(404, "not-found", "no such file in the operations page")
        return Reply(reply.status, reply.body, reply.content_type, {**reply.headers, **HEADERS})
    return Reply(200, found.read_bytes(), TYPES[found.suffix], dict(HEADERS))
