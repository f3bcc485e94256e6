"""Configuration, resolved once: argument > environment variable > default.

Every setting lives in :class:`Settings`; nothing else in the package reads the
environment for these values. Bad values raise ``ValueError`` naming the argument
or the variable they came from and what is accepted.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["LOG_LEVELS", "OTLP_PROTOCOLS", "Settings", "url_without_password"]

OTLP_PROTOCOLS = ("grpc", "http/protobuf")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEVELOPMENT_ENVIRONMENTS = frozenset({"development", "dev", "local"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _default_service_name() -> str:
    executable = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    return f"unknown_service:{executable or 'python'}"


@dataclass(frozen=True)
class _Source:
    """Where a value came from, for error messages: an argument or a variable."""

    argument: str
    variable: str | None = None

    def name(self, from_argument: bool) -> str:
        if from_argument or not self.variable:
            return f"argument {self.argument!r}"
        return f"environment variable {self.variable}"


def _pick(argument: Any, source: _Source, env: Mapping[str, str], default: Any) -> tuple[Any, bool]:
    """Return ``(value, from_argument)`` following argument > env var > default."""
    if argument is not None:
        return argument, True
    if source.variable and env.get(source.variable, "").strip():
        return env[source.variable].strip(), False
    return default, False


def _parse_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{where} must be a boolean (true/false), got {value!r}")


def _parse_key_values(text: str, where: str) -> dict[str, str]:
    """Parse the W3C-baggage-like ``k1=v1,k2=v2`` form used by OTEL_* variables."""
    pairs: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{where} must be a comma-separated list of key=value pairs, got item {item!r}")
        pairs[unquote(key.strip())] = unquote(value.strip())
    return pairs


def _parse_mapping(value: Any, where: str) -> dict[str, str]:
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, str):
        return _parse_key_values(value, where)
    raise ValueError(f"{where} must be a mapping or a 'key=value,...' string, got {type(value).__name__}")


def _parse_endpoint(value: Any, where: str) -> str:
    text = str(value).strip()
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ValueError(
            f"{where} must be an http:// or https:// URL with a host, "
            f"e.g. http://localhost:4317, got {text!r}"
        )
    return text.rstrip("/")


def url_without_password(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and summaries."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def _parse_port(value: Any, where: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a TCP port number (0-65535), got {value!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{where} must be a TCP port number (0-65535), got {value!r}")
    return port


def _parse_positive_int(value: Any, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a positive integer, got {value!r}") from None
    if number <= 0:
        raise ValueError(f"{where} must be a positive integer, got {value!r}")
    return number


def _parse_level(value: Any, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = logging.getLevelName(value)
    level = str(value).strip().upper()
    if level == "WARN":
        level = "WARNING"
    if level not in LOG_LEVELS:
        raise ValueError(f"{where} must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


@dataclass(frozen=True)
class Settings:
    """Everything ``configure()`` and ``setup_logging()`` need, resolved and validated."""

    service_name: str
    service_version: str = "unknown"
    environment: str = "development"
    log_level: str = "INFO"
    log_dir: str = "./logs"
    otlp_endpoint: str | None = None
    otlp_protocol: str = "grpc"
    otlp_headers: Mapping[str, str] = field(default_factory=dict)
    otlp_timeout_s: float = 10.0
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    sdk_disabled: bool = False
    metric_export_interval_ms: int = 60_000
    prometheus_port: int | None = None
    prometheus_host: str = "127.0.0.1"
    instrument_redis: bool = True
    capture_uncaught_exceptions: bool = True
    fast_export: bool = True

    @property
    def json_logs(self) -> bool:
        """JSON output everywhere but in a development environment."""
        return self.environment.lower() not in DEVELOPMENT_ENVIRONMENTS

    @property
    def exports_over_network(self) -> bool:
        return self.otlp_endpoint is not None and not self.sdk_disabled

    @classmethod
    def resolve(
        cls,
        service_name: str | None = None,
        *,
        service_version: str | None = None,
        environment: str | None = None,
        log_level: str | int | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        otlp_endpoint: str | None = None,
        otlp_protocol: str | None = None,
        otlp_headers: Mapping[str, str] | str | None = None,
        otlp_timeout_s: float | None = None,
        resource_attributes: Mapping[str, Any] | None = None,
        sdk_disabled: bool | None = None,
        metric_export_interval_ms: int | None = None,
        prometheus_port: int | None = None,
        prometheus_host: str | None = None,
        instrument_redis: bool = True,
        capture_uncaught_exceptions: bool = True,
        fast_export: bool | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """Resolve every setting: argument > environment variable > default."""
        env = os.environ if env is None else env

        def pick(argument: Any, name: str, variable: str | None, default: Any) -> tuple[Any, str]:
            source = _Source(name, variable)
            value, from_argument = _pick(argument, source, env, default)
            return value, source.name(from_argument)

        resource_env, where = pick(None, "resource_attributes", "OTEL_RESOURCE_ATTRIBUTES", "")
        resource = _parse_key_values(resource_env, where)
        if resource_attributes is not None:
            resource.update(_parse_mapping(resource_attributes, "argument 'resource_attributes'"))

        name, _ = pick(service_name, "service_name", "OTEL_SERVICE_NAME", None)
        name = name or resource.get("service.name") or _default_service_name()
        version = service_version or resource.get("service.version") or "unknown"

        environment_value, _ = pick(environment, "environment", "ENVIRONMENT", None)
        environment_value = environment_value or resource.get("deployment.environment.name") or "development"

        level, where = pick(log_level, "log_level", "LOG_LEVEL", "INFO")
        directory, _ = pick(log_dir, "log_dir", "LOG_DIR", "./logs")

        endpoint, where_endpoint = pick(otlp_endpoint, "otlp_endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT", None)
        protocol, where_protocol = pick(otlp_protocol, "otlp_protocol", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        protocol = str(protocol).strip().lower()
        if protocol not in OTLP_PROTOCOLS:
            raise ValueError(f"{where_protocol} must be one of {', '.join(OTLP_PROTOCOLS)}, got {protocol!r}")
        headers, where_headers = pick(otlp_headers, "otlp_headers", "OTEL_EXPORTER_OTLP_HEADERS", "")

        disabled, where_disabled = pick(sdk_disabled, "sdk_disabled", "OTEL_SDK_DISABLED", False)
        interval, where_interval = pick(
            metric_export_interval_ms, "metric_export_interval_ms", "OTEL_METRIC_EXPORT_INTERVAL", 60_000
        )
        port, where_port = pick(prometheus_port, "prometheus_port", "OTEL_EXPORTER_PROMETHEUS_PORT", None)
        host, _ = pick(prometheus_host, "prometheus_host", "OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
        fast, where_fast = pick(fast_export, "fast_export", "TELEMETRY_FAST_EXPORT", True)
        timeout = float(otlp_timeout_s) if otlp_timeout_s is not None else 10.0
        if timeout <= 0:
            raise ValueError(f"argument 'otlp_timeout_s' must be positive, got {otlp_timeout_s!r}")

        return cls(
            service_name=str(name),
            service_version=str(version),
            environment=str(environment_value).strip(),
            log_level=_parse_level(level, where),
            log_dir=os.fspath(directory),
            otlp_endpoint=_parse_endpoint(endpoint, where_endpoint) if endpoint else None,
            otlp_protocol=protocol,
            otlp_headers=_parse_mapping(headers, where_headers),
            otlp_timeout_s=timeout,
            resource_attributes=resource,
            sdk_disabled=_parse_bool(disabled, where_disabled),
            metric_export_interval_ms=_parse_positive_int(interval, where_interval),
            prometheus_port=_parse_port(port, where_port) if port is not None else None,
            prometheus_host=str(host),
            instrument_redis=instrument_redis,
            capture_uncaught_exceptions=capture_uncaught_exceptions,
            fast_export=_parse_bool(fast, where_fast),
        )
