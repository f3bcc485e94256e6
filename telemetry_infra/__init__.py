"""telemetry_infra: production observability for a Python service in one call.

Everything public is re-exported here; the modules behind it are private detail.
"""

from importlib.metadata import PackageNotFoundError, version

from telemetry_infra.cache import (
    CacheClosedError,
    CacheError,
    CacheManager,
    CacheSerializationError,
    CacheWriteError,
    cached,
    get_default_cache_manager,
    set_default_cache_manager,
)
from telemetry_infra.logs import (
    clear_request_context,
    get_logger,
    get_request_context,
    log_exceptions,
    log_execution_time,
    request_context,
    set_request_context,
    setup_logging,
)
from telemetry_infra.otel.prometheus import metrics_asgi_app
from telemetry_infra.otel.prometheus_multiprocess import mark_process_dead
from telemetry_infra.otel.setup import Telemetry, configure, get_telemetry, shutdown
from telemetry_infra.settings import Settings

try:
    __version__ = version("telemetry-infra")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "CacheClosedError",
    "CacheError",
    "CacheManager",
    "CacheSerializationError",
    "CacheWriteError",
    "Settings",
    "Telemetry",
    "__version__",
    "cached",
    "clear_request_context",
    "configure",
    "get_default_cache_manager",
    "get_logger",
    "get_request_context",
    "get_telemetry",
    "log_exceptions",
    "log_execution_time",
    "mark_process_dead",
    "metrics_asgi_app",
    "request_context",
    "set_default_cache_manager",
    "set_request_context",
    "setup_logging",
    "shutdown",
]
