"""Every way the app can go wrong, as one tree.

Catch by meaning, not by where the error came from:

    ProactiveError
    ├── ConfigError(*problems)           settings that can't work: the app refuses to
    │                                    start (locally) or to act (in Azure)
    ├── InvalidMessage(reason, detail)   the message breaks the contract: poisoned,
    │   │                                never retried
    │   └── scheduling.ScheduleError     a schedule that can't be kept (a bad time,
    │                                    zone or rule)
    ├── api.problems.Problem(status, reason, detail)
    │                                    a request the API refuses (an HTTP answer)
    ├── DeliveryFailed(reason, detail)   one recipient's attempt did not succeed
    │   ├── Permanent                    recorded `failed`, never retried (400, 401,
    │   │   │                            403, 404, 405, 413, 500, 501, unknown recipient)
    │   │   ├── Unreachable              blocked / uninstalled / disabled: also marks
    │   │   │                            the recipient's reference
    │   │   ├── UntrustedServiceUrl      not a Connector host of the configured cloud
    │   │   └── NoCredentials            no secret, certificate or managed identity:
    │   │                                a configuration error, retrying can't help
    │   └── Transient(retry_after)       retried later, uses up an attempt
    │       ├── Throttled                429
    │       ├── ServiceUnavailable       412, 502, 503, 504, timeout, connection error
    │       ├── TokenUnavailable         the bot's token can't be obtained right now
    │       └── StorageUnavailable       Table or Queue storage did not answer
    │           └── storage.deliveries.Unrecorded
    │                                    Teams answered; the outcome is not written yet
    ├── RetryLater(delay, reason)        not a failure: come back after `delay`
    │   │                                without using up an attempt (the tenant's
    │   │                                budget is spent: pacing.Defer; the send an
    │   │                                edit needs is waiting)
    │   └── Busy                         another worker holds the delivery's claim
    └── StorageError(reason, detail)     storage answered no (not an outage): a
        │                                400, a 403, no token (`unauthorized`)
        ├── NotFound                     the entity, table or queue is not there
        └── Conflict(index)              another writer got there first: control flow
            │                            of read-modify-write (read again, retry:
            │                            storage.tables.update) and of claims
            │                            ("taken"), not a failure
            └── PreconditionFailed       an ETag-conditional write found it changed

StorageUnavailable and the StorageError branch are raised in place of
azure-core's exceptions by one mapping, at the storage edge
(`proactive.storage.faults`): nothing above proactive/storage/ imports them.
A StorageError has no outcome: the caller that expects one catches it (a
missing table is an empty listing); one no caller expected reaches the worker
as a bug would, and `outcome_of` raises it on (the host retries the message).

`reason` is a stable kebab-case name (it is written to delivery rows and the
poison queue); `detail` says what happened, for people, and never holds a
secret. What each class leads to is decided in one place:
`proactive.delivering.outcomes.outcome_of`.

Outside the tree, on purpose: each is caught by the edge or the loop that
raises it and never reaches `outcome_of` (whose `except ProactiveError` in
the worker would otherwise have to invent an outcome for it), and none has a
stable `reason` to write to a row.

    receiving.auth.AuthenticationError(status, reason)
                                  an inbound request refused: the endpoint answers
                                  401/403 "unauthorized"; `reason` is for the log only
    receiving.signing_keys.KeysUnavailable
                                  no signing keys: turned at once into a 401 (fail
                                  closed, activities) or a 503 Problem (the API)
    receiving.activities.InvalidActivity (ValueError; TenantConflict)
                                  an inbound body we can't act on: answered 400 with
                                  its text, never queued
    reporting.reports.ReportError (ValueError)
                                  a report asked for wrongly: the API answers 400,
                                  the CLI one line and exit 2
    cli.fail.CliError(what, hint) a CLI mistake or an unusable service: one line and
                                  an exit code, never a traceback (cli/ only; its
                                  StorageRefused: storage refused the person)
    delivering.send._OptedOut, cli.doctor_checks.Failed, cli.live._Missing
                                  private control flow inside one module
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a delivery ended or waits: written to delivery rows, progress
    counters and the poison queue, so the names are stable."""

    # Teams' answers (proactive/teams/connector.py maps status and code to these).
    BLOCKED = "blocked"
    UNINSTALLED = "uninstalled"
    DISABLED = "disabled"
    CONVERSATION_NOT_FOUND = "conversation-not-found"
    ACTIVITY_NOT_FOUND = "activity-not-found"
    INVALID_BOT_API_HOST = "invalid-bot-api-host"
    TOO_LARGE = "too-large"
    BAD_REQUEST = "bad-request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not-found"
    NOT_SUPPORTED = "not-supported"
    SERVICE_ERROR = "service-error"
    HTTP_ERROR = "http-error"  # a status Teams does not document
    BAD_RESPONSE = "bad-response"
    THROTTLED = "throttled"
    PRECONDITION_FAILED = "precondition-failed"
    BAD_GATEWAY = "bad-gateway"
    UNAVAILABLE = "unavailable"
    GATEWAY_TIMEOUT = "gateway-timeout"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection-error"
    # Ours, before or around the call.
    NO_CREDENTIALS = "no-credentials"
    TOKEN_UNAVAILABLE = "token-unavailable"
    UNTRUSTED_SERVICE_URL = "untrusted-service-url"
    STORAGE_UNAVAILABLE = "storage-unavailable"
    TENANT_NOT_ALLOWED = "tenant-not-allowed"
    UNKNOWN_USER = "unknown-user"
    UNKNOWN_CONVERSATION = "unknown-conversation"
    UNKNOWN_CHANNEL = "unknown-channel"
    # Audiences and Graph installs (README "Audiences").
    UNKNOWN_TEAM = "unknown-team"
    NOT_INSTALLED = "not-installed"  # no conversation, and installing is off or refused
    NO_CONVERSATION = "no-conversation"  # installed, but Graph gave no chat
    NO_AAD_ID = "no-aad-id"  # a roster member without an Azure AD object id
    GUEST = "guest"  # sent, to a guest of the tenant (Graph userType "Guest")
    DISABLED_ACCOUNT = "disabled-account"  # Graph accountEnabled false: not sent to
    INVALID_ID = "invalid-id"  # neither an object id (GUID) nor a principal name
    # Graph refused the app itself (a permission not granted or not consented):
    # the whole audience waits for an admin, not one user.
    GRAPH_PERMISSION = "graph-permission"
    RETRIES_EXHAUSTED = "retries-exhausted"
    CANCELLED = "cancelled"
    OPTED_OUT = "opted-out"  # the user said stop (all, or the message's topic)
    OUTCOME_UNKNOWN = "outcome-unknown"  # onUnknown skip: an attempt's answer never came
    # Not failures: why a message waits or ends without a send.
    SENT = "sent"
    DUPLICATE = "duplicate"
    BUSY = "busy"
    PACED = "paced"
    SEND_PENDING = "send-pending"
    UNKNOWN_KEY = "unknown-key"
    DISPATCHING = "dispatching"


# Teams' answers that say a recipient can't be reached until they act (raised
# as Unreachable): the reference row is marked with the same word
# (storage/references.py InstallState), and later sends fail fast on it.
UNREACHABLE = frozenset({Reason.BLOCKED, Reason.UNINSTALLED, Reason.DISABLED})


class Poison(StrEnum):
    """Why a queue message is parked in the poison queue (InvalidMessage's
    reason, or the retries' end): the parked envelope's `reason`, stable."""

    SCHEMA = "schema"  # the contract is broken: `detail` names the field
    NOT_JSON = "not-json"
    UNSUPPORTED_VERSION = "unsupported-version"
    UNKNOWN_OP = "unknown-op"
    TOO_LARGE = "too-large"  # the activity is over Teams' limit, or the queue's
    APP_ONLY_FIELD = "app-only-field"  # unsigned (SECURITY.md "The app's seal")
    INSTALL_DISABLED = "install-disabled"
    RETRIES_EXHAUSTED = Reason.RETRIES_EXHAUSTED.value
    NO_CONVERSATION = Reason.NO_CONVERSATION.value


class ProactiveError(Exception):
    """Base of every error this package raises on purpose."""

    reason = "error"

    def __init__(self, reason: str = "", detail: str = "") -> None:
        self.reason = reason or type(self).reason
        self.detail = detail or self.reason
        super().__init__(f"{self.reason}: {self.detail}" if detail else self.reason)


class ConfigError(ProactiveError, ValueError):
    """Settings are missing or have values that can't be used. `problems` lists
    each one; the message joins them. No problem text holds a secret value."""

    def __init__(self, *problems: str) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class InvalidMessage(ProactiveError, ValueError):
    """The queue message breaks the contract; never retried. `reason` is a
    stable name, `detail` says what to fix."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)


class DeliveryFailed(ProactiveError):
    """One recipient's attempt did not succeed. `status` and `code` are Teams'
    answer when there was one (0 and "" otherwise)."""

    def __init__(self, reason: str = "", detail: str = "", *, status: int = 0,
                 code: str = "") -> None:
        super().__init__(reason, detail)
        self.status = status
        self.code = code


class Permanent(DeliveryFailed):
    """Retrying can't help: the recipient's delivery is recorded failed."""


class Unreachable(Permanent):
    """The recipient blocked the bot, uninstalled it, or an admin disabled it
    (`reason` is `blocked`, `uninstalled` or `disabled`)."""


class UntrustedServiceUrl(Permanent):
    """The serviceUrl is not a Teams Connector host of the configured cloud, so
    the bot's token must not go there."""

    reason = Reason.UNTRUSTED_SERVICE_URL

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail=detail)


class NoCredentials(Permanent):
    """No client secret, certificate or managed identity is configured (and
    local development mode is off): a configuration error."""

    reason = Reason.NO_CREDENTIALS

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail=detail or "no MicrosoftAppPassword, "
                                          "MicrosoftAppCertificatePath or managed identity "
                                          "is configured for the bot")


class Transient(DeliveryFailed):
    """Worth trying again later; the retry uses up an attempt. `retry_after`
    is the server's wish in seconds (None: our own backoff)."""

    def __init__(self, reason: str = "", detail: str = "", *, status: int = 0,
                 code: str = "", retry_after: float | None = None) -> None:
        super().__init__(reason, detail, status=status, code=code)
        self.retry_after = retry_after


class Throttled(Transient):
    reason = Reason.THROTTLED


class ServiceUnavailable(Transient):
    reason = Reason.UNAVAILABLE


class TokenUnavailable(Transient):
    """The bot's token could not be obtained (wrong secret, identity endpoint
    down). `code` is Azure AD's error code (`invalid_client`, `AADSTS7000215`),
    never a secret."""

    reason = Reason.TOKEN_UNAVAILABLE


class StorageUnavailable(Transient):
    """Table or Queue storage did not answer: raised for every outage by the
    storage edge (`proactive.storage.faults`, through the wrapper of each
    Runtime client), so nothing above proactive/storage/ catches azure-core's
    errors. `status` and `code`: storage's answer, when it gave one (a 503)."""

    reason = Reason.STORAGE_UNAVAILABLE


class StorageError(ProactiveError):
    """Table or Queue storage answered, and the answer is no: not an outage
    (that is StorageUnavailable) but a refusal about the entity, table or
    queue, or a request storage won't take (a 400, a 403). Raised by the
    storage edge (`proactive.storage.faults`) in place of azure-core's errors.
    `status` and `code` are storage's answer (its x-ms-error-code)."""

    reason = "storage-error"

    def __init__(self, reason: str = "", detail: str = "", *, status: int = 0,
                 code: str = "") -> None:
        super().__init__(reason, detail)
        self.status = status
        self.code = code


class NotFound(StorageError):
    """The entity, or the table or queue itself, is not there (404)."""

    reason = Reason.NOT_FOUND


class Conflict(StorageError):
    """Another writer got there first: the entity exists already (409), or an
    ETag-conditional write found it changed or gone (412, or 404 for a
    replace). The caller of a read-modify-write reads again; for a claim it
    means "taken". `index`: which operation of an entity-group transaction
    failed (None outside one)."""

    reason = "conflict"

    def __init__(self, reason: str = "", detail: str = "", *, status: int = 0,
                 code: str = "", index: int | None = None) -> None:
        super().__init__(reason, detail, status=status, code=code)
        self.index = index


class PreconditionFailed(Conflict):
    """An ETag-conditional write or delete found the entity changed (412)."""

    reason = Reason.PRECONDITION_FAILED


class RetryLater(ProactiveError):
    """Not a failure: come back after `delay` seconds (0: a short jittered
    wait), without using up an attempt."""

    reason = "retry-later"

    def __init__(self, delay: float = 0.0, reason: str = "", detail: str = "") -> None:
        super().__init__(reason, detail)
        self.delay = delay


class Busy(RetryLater):
    """Another worker holds a live claim on this delivery (or held it and died:
    its lease runs out)."""

    reason = Reason.BUSY
