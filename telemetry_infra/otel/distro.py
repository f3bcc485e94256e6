"""telemetry_infra as an OpenTelemetry distro and configurator, for ``opentelemetry-instrument``.

The auto-instrumentation agent picks a distro (entry point group ``opentelemetry_distro``)
and a configurator (``opentelemetry_configurator``) before it loads the instrumentations.
Ours builds telemetry through :func:`telemetry_infra.configure` from the environment
(resource, exporters, the Prometheus bridge, logging); the instrumentations then feed our
providers, and a ``configure()`` in the app takes over from this one without duplicates.

With ``opentelemetry-distro`` installed as well, which distro comes first is up to the
installation order: set ``OTEL_PYTHON_DISTRO=telemetry_infra``. Our distro then selects
our configurator (``OTEL_PYTHON_CONFIGURATOR``, unless it is set).
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]  # module is marked `# type: ignore` upstream
from opentelemetry.sdk._configuration import _BaseConfigurator

__all__ = ["DISTRO_NAME", "TelemetryInfraConfigurator", "TelemetryInfraDistro"]

#: The entry point name of both, in pyproject.toml.
DISTRO_NAME = "telemetry_infra"


class TelemetryInfraDistro(BaseDistro):  # type: ignore[misc]  # BaseDistro is Any: its module is untyped upstream
    """Selects our configurator; the instrumentations load as with the default distro."""

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault("OTEL_PYTHON_CONFIGURATOR", DISTRO_NAME)


class TelemetryInfraConfigurator(_BaseConfigurator):
    """Runs ``telemetry_infra.configure()`` with every setting from the environment."""

    def _configure(self, **kwargs: Any) -> None:
        from telemetry_infra.otel.setup import configure

        configure()
