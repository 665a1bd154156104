"""Traces and metrics (OpenTelemetry), and nothing at all until configured.

One trace runs from the producer through the outbox queue, its retries and
parts, to each Connector call: the W3C `traceparent` rides INSIDE the queue
message (the Functions host carries trace context only for HTTP, Service Bus
and Event Hubs), `inject` writes it, the worker continues it.

Cold start and the hot path: with nothing configured no OpenTelemetry module
is imported and `span` hands out one shared do-nothing context manager, so a
message pays an attribute lookup and a function call per span. `setup()` turns
Application Insights on when APPLICATIONINSIGHTS_CONNECTION_STRING is set
(importing azure-monitor-opentelemetry only then); tests call `enable` with
their own (in-memory) providers.

What goes in: names, ids, method, host, status, latency, counts. Never a body,
a token or a message's text (SECURITY.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

CONNECTION_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
NAME = "proactive"


@dataclass
class _State:
    """Until `enable`, tracer and meter are None and every call is a no-op."""

    tracer: Any = None
    meter: Any = None
    instruments: dict[str, Any] = field(default_factory=dict)


_state = _State()


def enabled() -> bool:
    return _state.tracer is not None


def setup(env: Mapping[str, str] | None = None) -> bool:
    """Application Insights when its connection string is set; True if on."""
    env = os.environ if env is None else env
    if enabled() or not env.get(CONNECTION_SETTING):
        return enabled()
    from azure.monitor.opentelemetry import configure_azure_monitor

    configure_azure_monitor(connection_string=env[CONNECTION_SETTING], logger_name=NAME)
    enable()
    log.info("telemetry: Application Insights on")
    return True


def enable(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Record spans and metrics through these providers (default: the global ones)."""
    from opentelemetry import metrics, trace

    global _state
    _state = _State(trace.get_tracer(NAME, tracer_provider=tracer_provider),
                    metrics.get_meter(NAME, meter_provider=meter_provider))


def disable() -> None:
    global _state
    _state = _State()


_NOTHING = contextlib.nullcontext(None)


def span(name: str, *, traceparent: str = "", kind: str = "internal",
         **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A span as a context manager (yields None when telemetry is off).
    `traceparent`: continue that trace (a queue message's) instead of the
    current context's."""
    if _state.tracer is None:
        return _NOTHING
    return _span(name, traceparent, kind, attributes)


@contextlib.contextmanager
def _span(name: str, traceparent: str, kind: str, attributes: dict[str, Any]) -> Iterator[Any]:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = (TraceContextTextMapPropagator().extract({"traceparent": traceparent})
               if traceparent else None)
    with _state.tracer.start_as_current_span(
            name, context=context, kind=getattr(trace.SpanKind, kind.upper()),
            attributes={k: v for k, v in attributes.items() if v is not None}) as current:
        yield current


def set_attributes(current: Any, **attributes: Any) -> None:
    if current is not None:
        current.set_attributes({k: v for k, v in attributes.items() if v is not None})


def traceparent() -> str:
    """The current span's W3C traceparent, "" when off or outside a span."""
    if _state.tracer is None:
        return ""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent", "")


def inject(message: dict[str, Any]) -> dict[str, Any]:
    """Put the current trace context into an outbox message (for producers in
    this code base: the HTTP API, the scheduler). A message that already has
    one keeps it."""
    if "traceparent" not in message and (parent := traceparent()):
        message["traceparent"] = parent
    return message


def trace_id() -> str:
    """The current trace id (32 hex), for log records; "" when off."""
    if _state.tracer is None:
        return ""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else ""


def recipient_hash(recipient: str) -> str:
    """A short stable hash of a recipient id: lets logs be joined per person
    without naming them."""
    return hashlib.sha256(recipient.encode()).hexdigest()[:16]


# --- logs -----------------------------------------------------------------------------

# Libraries that log a line per request at INFO, with whole URLs (Graph's name
# users by UPN, the Connector's carry conversation ids) or ids in messages:
# WARNING unless the app's logging configuration names a level for them.
QUIET_LOGGERS = ("httpx", "httpcore", "azure", "msal", "aiohttp", "urllib3", "requests",
                 "hpack", "opentelemetry")
# A URL path segment kept as is in a log line: an API's own words (v3,
# conversations, activities, users, emea ...). Anything else is an id: '{id}'.
_WORD = re.compile(r"(?:[A-Za-z]{1,24}|v[0-9]+(?:\.[0-9]+)?)")


def quiet_libraries() -> None:
    """Third-party loggers to WARNING (those without a level of their own)."""
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def log_id(recipient: str) -> str:
    """A recipient (or conversation) id as our log lines show it: its kind and
    the hash telemetry uses (`user#3fa2c1...`), never the id itself."""
    kind, sep, _ = recipient.partition(":")
    prefix = kind if sep and _WORD.fullmatch(kind) else "id"
    return f"{prefix}#{recipient_hash(recipient)}"


def log_url(url: str) -> str:
    """A URL as our log lines show it: scheme, host and the path's own words,
    every id replaced by '{id}', no query string or fragment."""
    head, sep, rest = url.partition("://")
    if not sep:
        return "{id}"
    host, _, path = rest.partition("/")
    path = path.split("?", 1)[0].split("#", 1)[0]
    kept = [part if _WORD.fullmatch(part) or not part else "{id}" for part in path.split("/")]
    return f"{head}://{host.rsplit('@', 1)[-1]}/{'/'.join(kept)}"


# --- metrics -------------------------------------------------------------------

# name -> (kind, unit, description)
METRICS = {
    "proactive.messages": ("counter", "{message}", "outbox messages by outcome and reason"),
    "proactive.throttled": ("counter", "{response}", "429 answers from the Connector, by tenant"),
    "proactive.connector.duration": ("histogram", "s", "Connector call latency"),
    "proactive.pacing.wait": ("histogram", "s", "time a send waited for its tenant's budget"),
    "proactive.queue.age": ("histogram", "s", "outbox message age at pickup"),
    "proactive.scheduler.lateness": ("histogram", "s", "how late a scheduled send fired"),
}


def _instrument(name: str) -> Any:
    found = _state.instruments.get(name)
    if found is None:
        kind, unit, description = METRICS[name]
        make = _state.meter.create_counter if kind == "counter" else \
            _state.meter.create_histogram
        found = _state.instruments[name] = make(name, unit=unit, description=description)
    return found


def count(name: str, value: int = 1, **attributes: Any) -> None:
    if _state.meter is not None:
        _instrument(name).add(value, attributes)


def record(name: str, value: float, **attributes: Any) -> None:
    if _state.meter is not None:
        _instrument(name).record(value, attributes)
