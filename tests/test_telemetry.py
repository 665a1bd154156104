"""One trace from the producer through the outbox queue, a retry and the
Connector call, recorded by an in-memory exporter; real Azurite, the Connector
emulator over loopback HTTP. And: nothing of OpenTelemetry is loaded or
recorded when telemetry is not configured."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from proactive import telemetry
from proactive.contract import parse_message
from proactive.runtime import Runtime
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from tests.activities_data import USER_AAD
from tests.test_outbox import send


@pytest.fixture
def spans() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.enable(provider, MeterProvider(metric_readers=[reader]))
    try:
        yield exporter, reader
    finally:
        telemetry.disable()


async def take_one(rt: Runtime) -> tuple[str, str, Any]:
    """Receive the next outbox message as the queue trigger would: its text, id
    and insertion time."""
    from tests.polling import eventually

    got: list[Any] = []

    async def more() -> bool:
        async for message in rt.outbox.queue.receive_messages(max_messages=1):
            got.append(message)
            await rt.outbox.queue.delete_message(message)
        return bool(got)

    await eventually(more, timeout=15, what="a message on the outbox")
    return got[0].content, got[0].id, got[0].inserted_on


def metric_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return [point for rm in data.resource_metrics for sm in rm.scope_metrics
            for metric in sm.metrics if metric.name == name for point in metric.data.data_points]


async def test_one_trace_runs_from_the_producer_through_a_retry_to_the_connector(
        installed: Runtime, emulator: ConnectorEmulator,
        spans: tuple[InMemorySpanExporter, InMemoryMetricReader],
        caplog: pytest.LogCaptureFixture) -> None:
    exporter, reader = spans
    caplog.set_level(logging.INFO, logger="proactive.worker")
    emulator.inject(503, operation="send", count=1)

    # The caller's trace context arrives with POST /api/notifications; the
    # API's span continues it and its context goes INTO the queued message.
    from proactive.api.notifications import accept

    caller_trace, caller_span = "ab" * 16, "cd" * 8
    reply = await accept(installed, send("k-trace").encode(), content_type="application/json",
                         base_url="http://127.0.0.1/api/notifications",
                         traceparent=f"00-{caller_trace}-{caller_span}-01")
    assert reply.status == 202
    body, message_id, inserted = await take_one(installed)
    message = json.loads(body)
    assert parse_message(body).traceparent == message["traceparent"]
    first = await process(installed, body, message_id=message_id, inserted_at=inserted)
    assert first.state == "retry"
    body, message_id, inserted = await take_one(installed)  # the re-queued copy
    assert json.loads(body)["traceparent"] == message["traceparent"]
    second = await process(installed, body, message_id=message_id, inserted_at=inserted)
    assert second.state == "done"

    finished = exporter.get_finished_spans()
    by_name: dict[str, list[Any]] = {}
    for s in finished:
        by_name.setdefault(s.name, []).append(s)
    [producer] = by_name["POST /api/notifications"]
    assert f"{producer.context.trace_id:032x}" == caller_trace  # the caller's trace
    assert f"{producer.parent.span_id:016x}" == caller_span
    outbox = by_name["outbox send"]
    connector = by_name["Connector POST"]
    assert len(outbox) == 2
    assert {s.context.trace_id for s in finished} == {producer.context.trace_id}
    assert all(s.parent.span_id == producer.context.span_id for s in outbox)
    assert [s.attributes["proactive.attempt"] for s in outbox] == [1, 2]
    assert {s.parent.span_id for s in connector} <= {s.context.span_id for s in outbox}
    statuses = sorted(s.attributes["http.response.status_code"] for s in connector)
    assert any(status < 300 for status in statuses) and 503 in statuses
    # Method, host, status: never a body, a path or a token.
    for s in connector:
        assert set(s.attributes) == {"http.request.method", "server.address",
                                     "http.response.status_code"}
    # The structured log records: key, recipient hash, trace id; no recipient id.
    records = [r for r in caplog.records if getattr(r, "proactive.key", "") == "k-trace"]
    assert len(records) == 2
    assert {vars(r)["trace_id"] for r in records} == {f"{producer.context.trace_id:032x}"}
    assert all(len(getattr(r, "proactive.recipient")) == 16 for r in records)
    assert all(USER_AAD not in r.getMessage() for r in records)
    assert metric_points(reader, "proactive.connector.duration")
    assert len(metric_points(reader, "proactive.queue.age")) >= 1
    outcomes = {p.attributes["outcome"]: p.value
                for p in metric_points(reader, "proactive.messages")}
    assert outcomes == {"retry": 1, "done": 1}
    assert len(metric_points(reader, "proactive.pacing.wait")) >= 1


async def test_teams_429s_are_counted_by_tenant(
        installed: Runtime, emulator: ConnectorEmulator,
        spans: tuple[InMemorySpanExporter, InMemoryMetricReader]) -> None:
    _, reader = spans
    emulator.inject(429, operation="send", count=1)
    outcome = await process(installed, send("k-429"), message_id="m1")
    assert outcome.state == "retry"
    counted = {p.attributes["tenant"]: p.value
               for p in metric_points(reader, "proactive.throttled")}
    assert list(counted.values()) == [1] and all(counted)


async def test_without_telemetry_nothing_is_recorded_and_messages_carry_no_context(
        installed: Runtime) -> None:
    assert not telemetry.enabled()
    with telemetry.span("anything") as current:
        assert current is None
    assert telemetry.inject({"op": "send"}) == {"op": "send"}
    assert telemetry.traceparent() == "" and telemetry.trace_id() == ""


def test_cold_start_imports_no_opentelemetry_unless_configured() -> None:
    code = ("import sys, proactive.worker, proactive.triggers, proactive.telemetry as t;"
            "t.setup({});"
            "print(sorted(m for m in sys.modules"
            "             if m.startswith(('opentelemetry', 'azure.monitor'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
