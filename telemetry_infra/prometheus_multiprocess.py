"""Documented import path kept: ``telemetry_infra.prometheus_multiprocess.mark_process_dead``.

Multiprocess exposition lives in :mod:`telemetry_infra.otel.prometheus_multiprocess`.
"""

from telemetry_infra.otel.prometheus_multiprocess import ENV_VAR, mark_process_dead

__all__ = ["ENV_VAR", "mark_process_dead"]
