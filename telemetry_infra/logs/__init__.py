"""Structured logging: JSON or console lines, trace correlation, OTLP export.

Public names are re-exported by :mod:`telemetry_infra`; the modules here are detail.
"""

from telemetry_infra.logs.console_formatter import ConsoleFormatter
from telemetry_infra.logs.context import (
    RequestContext,
    clear_request_context,
    get_request_context,
    request_context,
    set_request_context,
)
from telemetry_infra.logs.correlation import TraceCorrelationFilter
from telemetry_infra.logs.decorators import log_exceptions, log_execution_time
from telemetry_infra.logs.exception_hooks import install_exception_hooks, uninstall_exception_hooks
from telemetry_infra.logs.files import SharedRotatingFileHandler
from telemetry_infra.logs.json_formatter import JsonFormatter
from telemetry_infra.logs.loggers import StructuredLogger, get_logger
from telemetry_infra.logs.otlp_handler import OTLPLogHandler
from telemetry_infra.logs.redaction import REDACTED, set_secret_keys
from telemetry_infra.logs.setup import (
    SERVER_LOG_CONFIG,
    installed_handlers,
    server_console_handler,
    setup_logging,
    teardown_logging,
)

__all__ = [
    "REDACTED",
    "SERVER_LOG_CONFIG",
    "ConsoleFormatter",
    "JsonFormatter",
    "OTLPLogHandler",
    "RequestContext",
    "SharedRotatingFileHandler",
    "StructuredLogger",
    "TraceCorrelationFilter",
    "clear_request_context",
    "get_logger",
    "get_request_context",
    "install_exception_hooks",
    "installed_handlers",
    "log_exceptions",
    "log_execution_time",
    "request_context",
    "server_console_handler",
    "set_request_context",
    "set_secret_keys",
    "setup_logging",
    "teardown_logging",
    "uninstall_exception_hooks",
]
