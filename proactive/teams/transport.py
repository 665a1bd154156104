"""One HTTP request to a Teams service (the Connector, Graph) over an httpx
client, with the transport's failures as members of proactive.errors: no
answer in time, or no connection, is a transient `ServiceUnavailable`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proactive.errors import Reason, ServiceUnavailable

if TYPE_CHECKING:
    import httpx


async def request(http: httpx.AsyncClient, method: str, url: str, *, content: bytes | None,
                  headers: dict[str, str], timeout: float, service: str) -> httpx.Response:
    import httpx

    try:
        return await http.request(method, url, content=content, headers=headers,
                                  timeout=timeout)
    except httpx.TimeoutException as exc:
        raise ServiceUnavailable(Reason.TIMEOUT, f"no answer from {service} in time",
                                 code="Timeout") from exc
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(Reason.CONNECTION_ERROR, f"could not reach {service}: "
                                 f"{type(exc).__name__}", code=type(exc).__name__) from exc
