"""Resources and scopes that compare equal but encode differently keep their own groups on the wire.

``True == 1 == 1.0`` and ``0.0 == -0.0`` in Python, yet each is a different OTLP value:
spans of several providers sharing one exporter must leave under their own resource.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from telemetry_infra.otel.otlp_wire import encode_spans
from telemetry_infra.otel.otlp_wire.exporters import FastSpanExporter
from telemetry_infra.testing import OTLPReceiver
from tests.integration.test_otlp_fast_export import PROTOCOLS, span_exporter

EQUAL_BUT_NOT_THE_SAME = [(True, 1), (1, 1.0), (0.0, -0.0)]


def _spans(resource_value: Any, scope_value: Any, name: str) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "grouping", "v": resource_value}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.grouping", attributes={"v": scope_value})
    with tracer.start_as_current_span(name):
        pass
    return list(memory.get_finished_spans())


def _same(first: Any, second: Any) -> bool:
    if isinstance(first, float) and isinstance(second, float):
        return first == second and math.copysign(1, first) == math.copysign(1, second)
    return type(first) is type(second) and first == second


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("first", "second"), EQUAL_BUT_NOT_THE_SAME, ids=["True-1", "1-1.0", "0.0--0.0"])
def test_equal_but_different_resources_keep_their_own_attributes(
    protocol: str, first: Any, second: Any
) -> None:
    spans = _spans(first, "scope", "first") + _spans(second, "scope", "second")
    with OTLPReceiver() as receiver:
        exporter = FastSpanExporter.wrap(span_exporter(receiver, protocol))
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        received = {span.name: span.resource["v"] for span in receiver.wait_for_spans(count=2)}
        exporter.shutdown()
    assert _same(received["first"], first) and _same(received["second"], second), received


@pytest.mark.parametrize(("first", "second"), EQUAL_BUT_NOT_THE_SAME, ids=["True-1", "1-1.0", "0.0--0.0"])
def test_equal_but_different_scopes_keep_their_own_attributes(first: Any, second: Any) -> None:
    spans = _spans("same", first, "first") + _spans("same", second, "second")
    request = ExportTraceServiceRequest.FromString(encode_spans(spans))
    scopes = {}
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            (value,) = [kv.value for kv in scope_spans.scope.attributes if kv.key == "v"]
            for span in scope_spans.spans:
                scopes[span.name] = getattr(value, value.WhichOneof("value"))
    assert _same(scopes["first"], first) and _same(scopes["second"], second), scopes
