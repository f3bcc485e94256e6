"""The current OpenTelemetry context and span in one ``ContextVar`` look-up.

``opentelemetry.context.get_current()`` and ``trace.get_current_span()`` take several
Python calls each; every log record and every cache operation asks for them. With the
default runtime context (a ``ContextVar`` holding the context) one ``get`` does it; any
other runtime context (``OTEL_PYTHON_CONTEXT``) goes through the public API.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import cast

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

__all__ = ["current_context", "current_span"]


def _variable() -> ContextVar[Context] | None:
    """The ``ContextVar`` OpenTelemetry keeps the current context in, if it does."""
    runtime = getattr(context_api, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if type(runtime) is ContextVarsRuntimeContext and isinstance(variable, ContextVar):
        return variable
    return None


def _context_reader() -> Callable[[], Context]:
    variable = _variable()
    return variable.get if variable is not None else context_api.get_current


def _span_reader() -> Callable[[], trace.Span | None]:
    variable = _variable()
    span_key = getattr(trace.propagation, "_SPAN_KEY", None)
    if variable is None or not isinstance(span_key, str):
        return trace.get_current_span
    read = variable.get

    def span() -> trace.Span | None:
        return cast("trace.Span | None", read().get(span_key))  # the context maps _SPAN_KEY to a span

    return span


#: The current context (``opentelemetry.context.get_current``).
current_context = _context_reader()
#: The current span, or None outside any (``trace.get_current_span`` says INVALID_SPAN).
current_span = _span_reader()
