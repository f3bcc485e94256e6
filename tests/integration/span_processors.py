"""Span processors the light-span tests attach to tell a light span from a live one."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import SpanProcessor


class WatchesStarts(SpanProcessor):
    """Acts when a span starts: while it is attached, every span is a live SDK span
    (``otel.light_spans`` is used only under processors silent until a span ends)."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(span.name)
