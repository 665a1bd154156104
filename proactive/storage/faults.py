"""Where azure-core's storage errors become members of proactive.errors.

The one mapping (`translate`), used at the storage edge only: by the clients
the Runtime hands out (`proactive.storage.autocreate.on_demand`, and `checked`
for a client that must not create what is missing) and by the helpers in
storage/ that may be given an SDK client of a test's own (`translated`). So
nothing above proactive/storage/ imports azure-core's exceptions:

    no connection, timeout, 5xx, 408, 429   -> StorageUnavailable (Transient)
    404                                     -> NotFound
    409                                     -> Conflict
    412                                     -> PreconditionFailed (a Conflict)
    a transaction's 404 / 409 / 412         -> Conflict, with the failed `index`
    no token, or a 401                      -> StorageError `unauthorized`
    any other azure-core error (400, 403…)  -> StorageError
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from proactive.errors import (
    Conflict,
    NotFound,
    PreconditionFailed,
    ProactiveError,
    Reason,
    StorageError,
    StorageUnavailable,
)


def unavailable(exc: BaseException) -> bool:
    """Whether a storage call failed for want of storage (no connection, a
    timeout, a 5xx after the client's own retries), rather than with an answer
    about the entity (404, 409, 412) or a bug of ours."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(exc, StorageUnavailable | ServiceRequestError | ServiceResponseError
                  | TimeoutError | OSError):
        return True
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        return status >= 500 or status in (408, 429)
    return False


def translate(exc: BaseException, where: str = "") -> BaseException:
    """`exc` as a member of the tree when it is a storage error (`exc` itself
    otherwise: ours already, or a bug that should surface as it is). `where`
    (a table or queue) goes into the detail."""
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceExistsError,
        ResourceModifiedError,
        ResourceNotFoundError,
    )

    if isinstance(exc, ProactiveError):
        return exc
    prefix = f"{where}: " if where else ""
    status = (exc.status_code or 0) if isinstance(exc, HttpResponseError) else 0
    code = getattr(exc, "error_code", None)
    code = str(getattr(code, "value", code) or "")  # TableErrorCode is an enum
    if unavailable(exc):
        return StorageUnavailable(detail=f"{prefix}{type(exc).__name__}", status=status,
                                  code=code)
    if not isinstance(exc, AzureError):
        return exc
    detail = f"{prefix}{status or type(exc).__name__} {code}".rstrip()
    if isinstance(exc, ClientAuthenticationError):  # no token, or storage refused it
        return StorageError(Reason.UNAUTHORIZED, detail, status=status, code=code)
    index = getattr(exc, "index", None)  # TableTransactionError
    if index is not None and status in (404, 409, 412):
        return Conflict(detail=detail, status=status, code=code, index=int(index))
    if isinstance(exc, ResourceNotFoundError):
        return NotFound(detail=detail, status=status, code=code)
    if isinstance(exc, ResourceModifiedError) or status == 412:
        return PreconditionFailed(detail=detail, status=status, code=code)
    if isinstance(exc, ResourceExistsError) or status == 409:
        return Conflict(detail=detail, status=status, code=code)
    return StorageError(detail=detail, status=status, code=code)


@contextlib.contextmanager
def translated(where: str = "") -> Iterator[None]:
    """Run the block with azure-core's errors raised as the tree's (see
    `translate`); for storage/ helpers given a client that is not wrapped."""
    try:
        yield
    except Exception as exc:
        new = translate(exc, where)
        if new is exc:
            raise
        raise new from exc
