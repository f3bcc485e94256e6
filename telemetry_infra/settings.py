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
from typing import Any, TypedDict, Unpack
from urllib.parse import unquote, urlsplit

__all__ = [
    "EXPORTERS",
    "LOG_LEVELS",
    "OTLP_PROTOCOLS",
    "SIGNALS",
    "BatchSettings",
    "OTLPExport",
    "Settings",
    "SettingsArguments",
    "check_arguments",
    "configuration_warnings",
    "unsupported_variables",
    "url_without_password",
]

OTLP_PROTOCOLS = ("grpc", "http/protobuf")
OTLP_COMPRESSIONS = ("none", "gzip", "deflate")
SIGNALS = ("traces", "metrics", "logs")
EXPORTERS = ("otlp", "console", "none")
#: Where an OTLP exporter sends when its signal is selected (OTEL_*_EXPORTER=otlp) but no
#: endpoint is set, as the spec says; without either, the signal is not exported.
DEFAULT_ENDPOINTS = {"grpc": "http://localhost:4317", "http/protobuf": "http://localhost:4318"}
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


def short_url(url: str, max_length: int = 80) -> str:
    """``url`` without its password; when longer than ``max_length``, hosts after the first are counted.

    ``redis+cluster://a:1,b:2,c:3`` -> ``redis+cluster://a:1,...(+2 more)``: printed lines stay short.
    """
    text = url_without_password(url)
    if len(text) <= max_length or "," not in text:
        return text
    scheme, _, rest = text.partition("://")
    hosts, slash, path = rest.partition("/")
    first, *others = hosts.split(",")
    return f"{scheme}://{first},...(+{len(others)} more){slash}{path}"


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


def _parse_non_negative_int(value: Any, where: str) -> int:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a non-negative integer, got {value!r}") from None
    if number < 0:
        raise ValueError(f"{where} must be a non-negative integer, got {value!r}")
    return number


def _parse_choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise ValueError(f"{where} must be one of {', '.join(choices)}, got {value!r}")
    return text


def _parse_exporters(value: Any, where: str) -> tuple[str, ...]:
    """``otlp``, ``console``, ``none`` or a comma-separated list of the first two."""
    names = [part.strip().lower() for part in str(value).split(",") if part.strip()]
    unknown = [name for name in names if name not in EXPORTERS]
    if not names or unknown:
        raise ValueError(
            f"{where} must be one of {', '.join(EXPORTERS)} (or a comma-separated list), got {value!r}"
        )
    if "none" in names:
        if len(names) > 1:
            raise ValueError(f"{where}: 'none' cannot be combined with other exporters, got {value!r}")
        return ()
    return tuple(dict.fromkeys(names))


def _parse_file(value: str | os.PathLike[str], where: str) -> str:
    path = os.fspath(value).strip()
    if not os.path.isfile(path):
        raise ValueError(f"{where} must name a readable PEM file, got {path!r} (no such file)")
    return path


#: Samplers the SDK's TracerProvider builds from OTEL_TRACES_SAMPLER, and which take a ratio.
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")

#: Attribute and span limits: validated here, applied by the SDK (SpanLimits, LogLimits).
LIMIT_VARIABLES = (
    "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT",
)


#: Variables the SDK reads itself, and the values it accepts: validated here so that a typo
#: fails ``configure()`` and ``telemetry-infra check`` instead of being logged and ignored.
SDK_CHOICES = {
    "OTEL_METRICS_EXEMPLAR_FILTER": ("always_on", "always_off", "trace_based"),
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": ("cumulative", "delta", "lowmemory"),
    "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": (
        "explicit_bucket_histogram",
        "base2_exponential_bucket_histogram",
    ),
}


def _validate_sdk_variables(env: Mapping[str, str]) -> None:
    for variable in LIMIT_VARIABLES:
        if env.get(variable, "").strip():
            _parse_non_negative_int(env[variable], f"environment variable {variable}")
    for variable, choices in SDK_CHOICES.items():
        if env.get(variable, "").strip():
            _parse_choice(env[variable], f"environment variable {variable}", choices)


@dataclass(frozen=True)
class OTLPExport:
    """Where and how one signal is exported over OTLP, resolved for that signal."""

    signal: str
    #: gRPC: ``scheme://host:port``; HTTP: the full URL, ``/v1/<signal>`` included.
    endpoint: str
    protocol: str = "grpc"
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    compression: str = "none"
    #: PEM files: the CA that signs the collector's certificate, and the client's for mTLS.
    certificate: str | None = None
    client_key: str | None = None
    client_certificate: str | None = None

    @property
    def tls(self) -> bool:
        return self.endpoint.startswith("https://")

    @property
    def base_endpoint(self) -> str:
        """The endpoint without the ``/v1/<signal>`` path, for messages."""
        return self.endpoint.removesuffix(f"/v1/{self.signal}")


@dataclass(frozen=True)
class BatchSettings:
    """A batch processor's settings (``OTEL_BSP_*`` for spans, ``OTEL_BLRP_*`` for logs)."""

    schedule_delay_ms: int
    export_timeout_ms: int
    max_queue_size: int
    max_export_batch_size: int


_BATCH_DEFAULTS = {
    "OTEL_BSP": BatchSettings(5000, 30_000, 2048, 512),
    "OTEL_BLRP": BatchSettings(1000, 30_000, 2048, 512),
}


class SettingsArguments(TypedDict, total=False):
    """The keyword arguments of ``configure()`` and ``Settings.resolve()`` that become settings,
    typed once. An argument left out (or ``None``) falls back to its environment variable,
    then to its default (see docs/configuration.md); ``instrument_redis`` and
    ``capture_uncaught_exceptions`` default to True and have no variable."""

    service_version: str | None
    environment: str | None
    log_level: str | int | None
    log_dir: str | os.PathLike[str] | None
    otlp_endpoint: str | None
    otlp_protocol: str | None
    otlp_headers: Mapping[str, str] | str | None
    otlp_timeout_s: float | None
    otlp_compression: str | None
    otlp_certificate: str | os.PathLike[str] | None
    otlp_client_key: str | os.PathLike[str] | None
    otlp_client_certificate: str | os.PathLike[str] | None
    traces_exporter: str | None
    metrics_exporter: str | None
    logs_exporter: str | None
    resource_attributes: Mapping[str, Any] | None
    sdk_disabled: bool | None
    metric_export_interval_ms: int | None
    prometheus_port: int | None
    prometheus_host: str | None
    instrument_redis: bool
    capture_uncaught_exceptions: bool
    fast_export: bool | None


_ARGUMENT_NAMES = frozenset(SettingsArguments.__annotations__)
#: ``OTEL_EXPORTER_OTLP_[<SIGNAL>_]<KEY>`` -> the argument that overrides it
_OTLP_ARGUMENTS = {
    "ENDPOINT": "otlp_endpoint",
    "PROTOCOL": "otlp_protocol",
    "HEADERS": "otlp_headers",
    "TIMEOUT": "otlp_timeout_s",
    "COMPRESSION": "otlp_compression",
    "CERTIFICATE": "otlp_certificate",
    "CLIENT_KEY": "otlp_client_key",
    "CLIENT_CERTIFICATE": "otlp_client_certificate",
}


def check_arguments(arguments: Mapping[str, object], function: str) -> None:
    """``TypeError`` naming the first keyword of ``arguments`` that is no setting, worded as
    Python words it for ``function`` (the callers take the settings as ``**arguments``)."""
    for name in arguments:
        if name not in _ARGUMENT_NAMES:
            raise TypeError(f"{function} got an unexpected keyword argument {name!r}")


@dataclass(frozen=True)
class Settings:
    """Everything ``configure()`` and ``setup_logging()`` need, resolved and validated."""

    service_name: str
    service_version: str = "unknown"
    environment: str = "development"
    log_level: str = "INFO"
    log_dir: str = "./logs"
    #: The general endpoint (argument or OTEL_EXPORTER_OTLP_ENDPOINT); see :attr:`otlp`.
    otlp_endpoint: str | None = None
    otlp_protocol: str = "grpc"
    otlp_headers: Mapping[str, str] = field(default_factory=dict)
    otlp_timeout_s: float = 10.0
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    sdk_disabled: bool = False
    metric_export_interval_ms: int = 60_000
    metric_export_timeout_ms: int = 30_000
    prometheus_port: int | None = None
    prometheus_host: str = "127.0.0.1"
    instrument_redis: bool = True
    capture_uncaught_exceptions: bool = True
    #: Per signal: the exporters selected (``otlp``, ``console``), empty for none.
    exporters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Per signal that exports over OTLP: where and how.
    otlp: Mapping[str, OTLPExport] = field(default_factory=dict)
    span_batch: BatchSettings = _BATCH_DEFAULTS["OTEL_BSP"]
    log_batch: BatchSettings = _BATCH_DEFAULTS["OTEL_BLRP"]
    sampler: str = "parentbased_always_on"
    sampler_arg: float | None = None
    fast_export: bool = True

    @property
    def json_logs(self) -> bool:
        """JSON output everywhere but in a development environment."""
        return self.environment.lower() not in DEVELOPMENT_ENVIRONMENTS

    @property
    def exports_over_network(self) -> bool:
        return bool(self.otlp) and not self.sdk_disabled

    def exports(self, signal: str, exporter: str = "otlp") -> bool:
        """Whether ``signal`` (traces, metrics, logs) goes to ``exporter`` (otlp, console)."""
        return not self.sdk_disabled and exporter in self.exporters.get(signal, ())

    @classmethod
    def resolve(
        cls,
        service_name: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **arguments: Unpack[SettingsArguments],
    ) -> Settings:
        """Resolve every setting: argument (``SettingsArguments``) > environment variable
        (read from ``env``, ``os.environ`` by default) > default."""
        check_arguments(arguments, "Settings.resolve()")
        env = os.environ if env is None else env
        given: Mapping[str, Any] = arguments
        argument = given.get

        def pick(argument: Any, name: str, variable: str | None, default: Any) -> tuple[Any, str]:
            source = _Source(name, variable)
            value, from_argument = _pick(argument, source, env, default)
            return value, source.name(from_argument)

        resource_env, where = pick(None, "resource_attributes", "OTEL_RESOURCE_ATTRIBUTES", "")
        resource = _parse_key_values(resource_env, where)
        resource_attributes = argument("resource_attributes")
        if resource_attributes is not None:
            resource.update(_parse_mapping(resource_attributes, "argument 'resource_attributes'"))

        name, _ = pick(service_name, "service_name", "OTEL_SERVICE_NAME", None)
        name = name or resource.get("service.name") or _default_service_name()
        version = argument("service_version") or resource.get("service.version") or "unknown"

        environment_value, _ = pick(argument("environment"), "environment", "ENVIRONMENT", None)
        environment_value = environment_value or resource.get("deployment.environment.name") or "development"

        level, where_level = pick(argument("log_level"), "log_level", "LOG_LEVEL", "INFO")
        directory, _ = pick(argument("log_dir"), "log_dir", "LOG_DIR", "./logs")

        otlp_arguments = {variable: (name, argument(name)) for variable, name in _OTLP_ARGUMENTS.items()}
        general = _resolve_otlp(None, otlp_arguments, env)
        disabled, where_disabled = pick(argument("sdk_disabled"), "sdk_disabled", "OTEL_SDK_DISABLED", False)
        selected = {signal: argument(f"{signal}_exporter") for signal in SIGNALS}
        exporters: dict[str, tuple[str, ...]] = {}
        otlp: dict[str, OTLPExport] = {}
        for signal in SIGNALS:
            resolved = _resolve_otlp(signal, otlp_arguments, env)
            names, where = pick(
                selected[signal], f"{signal}_exporter", f"OTEL_{signal.upper()}_EXPORTER", None
            )
            chosen = _parse_exporters(names, where) if names else (("otlp",) if resolved.endpoint else ())
            exporters[signal] = chosen
            if "otlp" in chosen:
                otlp[signal] = resolved.export(signal)

        interval, where_interval = pick(
            argument("metric_export_interval_ms"),
            "metric_export_interval_ms",
            "OTEL_METRIC_EXPORT_INTERVAL",
            60_000,
        )
        metric_timeout, where_metric_timeout = pick(
            None, "metric_export_timeout", "OTEL_METRIC_EXPORT_TIMEOUT", 30_000
        )
        port, where_port = pick(
            argument("prometheus_port"), "prometheus_port", "OTEL_EXPORTER_PROMETHEUS_PORT", None
        )
        host, _ = pick(
            argument("prometheus_host"), "prometheus_host", "OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1"
        )
        sampler, sampler_arg = _resolve_sampler(env)
        _validate_sdk_variables(env)
        fast, where_fast = pick(argument("fast_export"), "fast_export", "TELEMETRY_FAST_EXPORT", True)

        return cls(
            service_name=str(name),
            service_version=str(version),
            environment=str(environment_value).strip(),
            log_level=_parse_level(level, where_level),
            log_dir=os.fspath(directory),
            otlp_endpoint=general.endpoint,
            otlp_protocol=general.protocol,
            otlp_headers=general.headers,
            otlp_timeout_s=general.timeout_s,
            resource_attributes=resource,
            sdk_disabled=_parse_bool(disabled, where_disabled),
            metric_export_interval_ms=_parse_positive_int(interval, where_interval),
            metric_export_timeout_ms=_parse_positive_int(metric_timeout, where_metric_timeout),
            prometheus_port=_parse_port(port, where_port) if port is not None else None,
            prometheus_host=str(host),
            instrument_redis=argument("instrument_redis", True),
            capture_uncaught_exceptions=argument("capture_uncaught_exceptions", True),
            exporters=exporters,
            otlp=otlp,
            span_batch=_resolve_batch("OTEL_BSP", env),
            log_batch=_resolve_batch("OTEL_BLRP", env),
            sampler=sampler,
            sampler_arg=sampler_arg,
            fast_export=_parse_bool(fast, where_fast),
        )


@dataclass(frozen=True)
class _ResolvedOTLP:
    """One signal's (or the general) OTLP options before the exporter is chosen."""

    endpoint: str | None
    endpoint_is_general: bool
    protocol: str
    headers: Mapping[str, str]
    timeout_s: float
    compression: str
    certificate: str | None
    client_key: str | None
    client_certificate: str | None

    def export(self, signal: str) -> OTLPExport:
        endpoint = self.endpoint or DEFAULT_ENDPOINTS[self.protocol]
        if self.protocol != "grpc" and (self.endpoint_is_general or not self.endpoint):
            endpoint = f"{endpoint}/v1/{signal}"  # the spec: only the general endpoint gets the path
        return OTLPExport(
            signal=signal,
            endpoint=endpoint,
            protocol=self.protocol,
            headers=self.headers,
            timeout_s=self.timeout_s,
            compression=self.compression,
            certificate=self.certificate,
            client_key=self.client_key,
            client_certificate=self.client_certificate,
        )


def _resolve_otlp(
    signal: str | None, arguments: Mapping[str, tuple[str, Any]], env: Mapping[str, str]
) -> _ResolvedOTLP:
    """argument > ``OTEL_EXPORTER_OTLP_<SIGNAL>_<KEY>`` > ``OTEL_EXPORTER_OTLP_<KEY>`` > default."""

    def pick(key: str) -> tuple[Any, str, bool]:
        """``(value, where, general)``; ``general`` is False only for a per-signal variable."""
        name, argument = arguments[key]
        if argument is not None:
            return argument, f"argument {name!r}", True
        variables = [f"OTEL_EXPORTER_OTLP_{key}"]
        if signal:
            variables.insert(0, f"OTEL_EXPORTER_OTLP_{signal.upper()}_{key}")
        for variable in variables:
            if env.get(variable, "").strip():
                return env[variable].strip(), f"environment variable {variable}", variable == variables[-1]
        return None, "", True

    protocol, where, _ = pick("PROTOCOL")
    protocol = _parse_choice(protocol, where, OTLP_PROTOCOLS) if protocol is not None else "grpc"
    endpoint, where, general = pick("ENDPOINT")
    headers, where_headers, _ = pick("HEADERS")
    timeout, where_timeout, _ = pick("TIMEOUT")
    compression, where_compression, _ = pick("COMPRESSION")
    files = {key: pick(key) for key in ("CERTIFICATE", "CLIENT_KEY", "CLIENT_CERTIFICATE")}
    paths = {key: _parse_file(value, where) if value else None for key, (value, where, _) in files.items()}
    if bool(paths["CLIENT_KEY"]) != bool(paths["CLIENT_CERTIFICATE"]):
        raise ValueError(
            "OTLP client TLS needs both a client key and a client certificate "
            "(OTEL_EXPORTER_OTLP_CLIENT_KEY and OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE), got only one"
        )
    insecure = _resolve_insecure(signal, env)
    return _ResolvedOTLP(
        endpoint=_parse_endpoint(endpoint, where) if endpoint else None,
        endpoint_is_general=general,
        protocol=protocol,
        headers=_parse_mapping(headers, where_headers) if headers else {},
        timeout_s=_parse_timeout(timeout, where_timeout) if timeout is not None else 10.0,
        compression=_parse_choice(compression, where_compression, OTLP_COMPRESSIONS)
        if compression
        else "none",
        certificate=None if insecure else paths["CERTIFICATE"],
        client_key=None if insecure else paths["CLIENT_KEY"],
        client_certificate=None if insecure else paths["CLIENT_CERTIFICATE"],
    )


def _resolve_insecure(signal: str | None, env: Mapping[str, str]) -> bool:
    """``OTEL_EXPORTER_OTLP_[<SIGNAL>_]INSECURE``: validated; the URL scheme decides.

    The spec applies it only to endpoints given without a scheme, and ours always have
    one (``http://`` is plaintext, ``https://`` is TLS). ``true`` drops the certificates.
    """
    variables = ["OTEL_EXPORTER_OTLP_INSECURE"]
    if signal:
        variables.insert(0, f"OTEL_EXPORTER_OTLP_{signal.upper()}_INSECURE")
    for variable in variables:
        if env.get(variable, "").strip():
            return _parse_bool(env[variable], f"environment variable {variable}")
    return False


def _parse_timeout(value: Any, where: str) -> float:
    """The argument is in seconds; the OTEL_* variables in milliseconds, as the spec says."""
    in_milliseconds = where.startswith("environment")
    unit = "milliseconds" if in_milliseconds else "seconds"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a positive number of {unit}, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise ValueError(f"{where} must be a positive number of {unit}, got {value!r}")
    return number / 1000 if in_milliseconds else number


def _resolve_batch(prefix: str, env: Mapping[str, str]) -> BatchSettings:
    default = _BATCH_DEFAULTS[prefix]
    values: dict[str, int] = {}
    for name, key in (
        ("schedule_delay_ms", "SCHEDULE_DELAY"),
        ("export_timeout_ms", "EXPORT_TIMEOUT"),
        ("max_queue_size", "MAX_QUEUE_SIZE"),
        ("max_export_batch_size", "MAX_EXPORT_BATCH_SIZE"),
    ):
        variable = f"{prefix}_{key}"
        text = env.get(variable, "").strip()
        values[name] = (
            _parse_positive_int(text, f"environment variable {variable}") if text else getattr(default, name)
        )
    if values["max_export_batch_size"] > values["max_queue_size"]:
        raise ValueError(
            f"environment variable {prefix}_MAX_EXPORT_BATCH_SIZE ({values['max_export_batch_size']}) "
            f"must not exceed {prefix}_MAX_QUEUE_SIZE ({values['max_queue_size']})"
        )
    return BatchSettings(**values)


def _resolve_sampler(env: Mapping[str, str]) -> tuple[str, float | None]:
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if name not in SAMPLERS:
        raise ValueError(
            f"environment variable OTEL_TRACES_SAMPLER must be one of {', '.join(SAMPLERS)}, "
            f"got {env['OTEL_TRACES_SAMPLER']!r}"
        )
    text = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if name not in _RATIO_SAMPLERS or not text:
        return name, 1.0 if name in _RATIO_SAMPLERS else None
    try:
        ratio = float(text)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(
            f"environment variable OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1, got {text!r}"
        )
    return name, ratio


# ------------------------------------------------------------- unsupported variables

_OTLP_KEYS = (
    "ENDPOINT",
    "PROTOCOL",
    "HEADERS",
    "TIMEOUT",
    "COMPRESSION",
    "CERTIFICATE",
    "CLIENT_KEY",
    "CLIENT_CERTIFICATE",
    "INSECURE",
)

#: Every OTEL_* variable that configure() reads, or that the SDK parts it builds read.
HONOURED_VARIABLES = frozenset(
    {
        *(f"OTEL_EXPORTER_OTLP_{key}" for key in _OTLP_KEYS),
        *(f"OTEL_EXPORTER_OTLP_{s.upper()}_{key}" for s in SIGNALS for key in _OTLP_KEYS),
        *(f"OTEL_{s.upper()}_EXPORTER" for s in SIGNALS),
        *(
            f"{prefix}_{key}"
            for prefix in _BATCH_DEFAULTS
            for key in ("SCHEDULE_DELAY", "EXPORT_TIMEOUT", "MAX_QUEUE_SIZE", "MAX_EXPORT_BATCH_SIZE")
        ),
        *LIMIT_VARIABLES,
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_METRIC_EXPORT_INTERVAL",
        "OTEL_METRIC_EXPORT_TIMEOUT",
        "OTEL_EXPORTER_PROMETHEUS_PORT",
        "OTEL_EXPORTER_PROMETHEUS_HOST",
        # read by the SDK pieces configure() builds
        "OTEL_PROPAGATORS",
        "OTEL_METRICS_EXEMPLAR_FILTER",
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
        "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
    }
)

#: Prefixes that belong to instrumentations and the auto-instrumentation agent: theirs to judge.
_FOREIGN_PREFIXES = ("OTEL_PYTHON_", "OTEL_INSTRUMENTATION_", "OTEL_SEMCONV_")


def unsupported_variables(env: Mapping[str, str] | None = None) -> list[str]:
    """OTEL_* variables set in ``env`` that neither configure() nor the SDK parts it builds read."""
    env = os.environ if env is None else env
    return sorted(
        name
        for name, value in env.items()
        if name.startswith("OTEL_")
        and value.strip()
        and name not in HONOURED_VARIABLES
        and not name.startswith(_FOREIGN_PREFIXES)
    )


#: Below this, an OTLP timeout from the environment was most likely meant in seconds.
_SUSPICIOUS_TIMEOUT_MS = 100


def configuration_warnings(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{variable: warning}`` for variables that are set but have no effect, or look mistaken."""
    env = os.environ if env is None else env
    warnings = {
        name: f"{name} is set but not supported by telemetry_infra.configure(); it has no effect"
        for name in unsupported_variables(env)
    }
    timeouts = ["OTEL_EXPORTER_OTLP_TIMEOUT", *(f"OTEL_EXPORTER_OTLP_{s.upper()}_TIMEOUT" for s in SIGNALS)]
    for name in timeouts:
        try:
            value = float(env.get(name, "").strip() or "inf")
        except ValueError:
            continue  # Settings.resolve() rejects it
        if value < _SUSPICIOUS_TIMEOUT_MS:
            warnings[name] = (
                f"{name}={env[name].strip()} is read as milliseconds, as the OpenTelemetry spec says "
                f"(the Python SDK's own exporters read seconds); for {env[name].strip()} s set "
                f"{value * 1000:g}"
            )
    return warnings
