"""Settings: argument > environment variable > default, and clear errors."""

from __future__ import annotations

import pytest

from telemetry_infra.settings import Settings, configuration_warnings, unsupported_variables


def test_defaults_without_environment() -> None:
    settings = Settings.resolve(env={})
    assert settings.service_name.startswith("unknown_service:")
    assert (settings.log_level, settings.log_dir, settings.environment) == ("INFO", "./logs", "development")
    assert settings.otlp_endpoint is None
    assert settings.otlp_protocol == "grpc"
    assert settings.metric_export_interval_ms == 60_000
    assert not settings.exports_over_network
    assert not settings.json_logs


def test_environment_variables_are_read() -> None:
    env = {
        "OTEL_SERVICE_NAME": "billing",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=abc%3D,x-team=core",
        "OTEL_RESOURCE_ATTRIBUTES": "service.version=1.2.3,team=payments",
        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        "LOG_LEVEL": "debug",
        "LOG_DIR": "/var/log/app",
        "ENVIRONMENT": "production",
    }
    settings = Settings.resolve(env=env)
    assert settings.service_name == "billing"
    assert settings.otlp_endpoint == "http://collector:4318"
    assert settings.otlp_protocol == "http/protobuf"
    assert settings.otlp_headers == {"api-key": "abc=", "x-team": "core"}
    assert settings.service_version == "1.2.3"
    assert settings.resource_attributes["team"] == "payments"
    assert settings.metric_export_interval_ms == 5000
    assert (settings.log_level, settings.log_dir, settings.environment) == (
        "DEBUG",
        "/var/log/app",
        "production",
    )
    assert settings.json_logs


def test_arguments_win_over_environment() -> None:
    env = {"OTEL_SERVICE_NAME": "from-env", "LOG_LEVEL": "DEBUG", "OTEL_RESOURCE_ATTRIBUTES": "team=env"}
    settings = Settings.resolve("from-arg", log_level="error", resource_attributes={"team": "arg"}, env=env)
    assert settings.service_name == "from-arg"
    assert settings.log_level == "ERROR"
    assert settings.resource_attributes["team"] == "arg"


@pytest.mark.parametrize(
    ("kwargs", "env", "names"),
    [
        ({"otlp_protocol": "thrift"}, {}, ["argument 'otlp_protocol'", "grpc", "http/protobuf"]),
        ({}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, ["OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"]),
        ({"otlp_endpoint": "localhost:4317"}, {}, ["argument 'otlp_endpoint'", "http://"]),
        ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://:4317"}, ["OTEL_EXPORTER_OTLP_ENDPOINT"]),
        ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://host:notaport"}, ["OTEL_EXPORTER_OTLP_ENDPOINT"]),
        ({}, {"OTEL_RESOURCE_ATTRIBUTES": "team=core,broken"}, ["OTEL_RESOURCE_ATTRIBUTES", "key=value"]),
        ({}, {"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, ["OTEL_EXPORTER_OTLP_HEADERS"]),
        ({"log_level": "LOUD"}, {}, ["argument 'log_level'", "DEBUG", "CRITICAL"]),
        ({}, {"LOG_LEVEL": "verbose"}, ["LOG_LEVEL", "WARNING"]),
        ({}, {"OTEL_SDK_DISABLED": "maybe"}, ["OTEL_SDK_DISABLED", "true/false"]),
        ({}, {"OTEL_METRIC_EXPORT_INTERVAL": "-5"}, ["OTEL_METRIC_EXPORT_INTERVAL", "positive"]),
        ({"prometheus_port": 70000}, {}, ["argument 'prometheus_port'", "0-65535"]),
    ],
)
def test_bad_configuration_names_its_source(kwargs: dict, env: dict, names: list[str]) -> None:
    with pytest.raises(ValueError) as excinfo:
        Settings.resolve(env=env, **kwargs)
    for name in names:
        assert name in str(excinfo.value)


def test_sdk_disabled_and_levels_are_parsed() -> None:
    assert Settings.resolve(env={"OTEL_SDK_DISABLED": "TRUE"}).sdk_disabled
    assert Settings.resolve(log_level=30, env={}).log_level == "WARNING"
    assert Settings.resolve(log_level="warn", env={}).log_level == "WARNING"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, ["OTEL_EXPORTER_OTLP_TIMEOUT", "milliseconds"]),
        ({"OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "-1"}, ["OTEL_EXPORTER_OTLP_LOGS_TIMEOUT"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4318"}, ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]),
        ({"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/json"}, ["OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"]),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, ["OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"]),
        ({"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem"}, ["OTEL_EXPORTER_OTLP_CERTIFICATE"]),
        ({"OTEL_EXPORTER_OTLP_INSECURE": "sometimes"}, ["OTEL_EXPORTER_OTLP_INSECURE"]),
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, ["OTEL_TRACES_EXPORTER", "otlp, console, none"]),
        ({"OTEL_LOGS_EXPORTER": "none,console"}, ["OTEL_LOGS_EXPORTER", "none"]),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, ["OTEL_BSP_MAX_QUEUE_SIZE"]),
        ({"OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "4096"}, ["OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "MAX_QUEUE_SIZE"]),
        ({"OTEL_METRIC_EXPORT_TIMEOUT": "0"}, ["OTEL_METRIC_EXPORT_TIMEOUT"]),
        ({"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "-3"}, ["OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"]),
        ({"OTEL_METRICS_EXEMPLAR_FILTER": "sometimes"}, ["OTEL_METRICS_EXEMPLAR_FILTER", "trace_based"]),
        (
            {"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "deltas"},
            ["OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "cumulative"],
        ),
        ({"OTEL_TRACES_SAMPLER": "bogus"}, ["OTEL_TRACES_SAMPLER", "parentbased_always_on"]),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
            ["OTEL_TRACES_SAMPLER_ARG"],
        ),
    ],
)
def test_bad_otel_variables_name_the_variable(env: dict, names: list[str]) -> None:
    with pytest.raises(ValueError) as excinfo:
        Settings.resolve(env=env)
    for name in names:
        assert name in str(excinfo.value)


def test_otlp_settings_per_signal_follow_the_spec() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_HEADERS": "team=core",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "https://logs.example:443/custom/path",
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS": "team=logs",
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "100",
    }
    settings = Settings.resolve(env=env)
    traces, metrics, logs = (settings.otlp[s] for s in ("traces", "metrics", "logs"))
    assert traces.endpoint == "http://collector:4318/v1/traces"
    assert logs.endpoint == "https://logs.example:443/custom/path" and logs.tls
    assert (traces.timeout_s, metrics.timeout_s) == (2.5, 0.1)
    assert (traces.headers, logs.headers) == ({"team": "core"}, {"team": "logs"})
    # the argument wins over every variable, per-signal ones included
    argued = Settings.resolve(otlp_endpoint="http://arg:4318", otlp_timeout_s=3, env=env)
    assert argued.otlp["logs"].endpoint == "http://arg:4318/v1/logs"
    assert argued.otlp["metrics"].timeout_s == 3


def test_exporter_selection() -> None:
    only_traces = Settings.resolve(env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317"})
    assert set(only_traces.otlp) == {"traces"}
    spec_default = Settings.resolve(env={"OTEL_METRICS_EXPORTER": "otlp"})
    assert spec_default.otlp["metrics"].endpoint == "http://localhost:4317"
    both = Settings.resolve(env={"OTEL_TRACES_EXPORTER": "console,otlp"})
    assert both.exports("traces", "console") and both.exports("traces", "otlp")
    assert not Settings.resolve(env={}).otlp


def test_unsupported_variables_are_named() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "1",
        "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "/health",
        "OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://z",
        "OTEL_TRACE_EXPORTER": "otlp",
    }
    assert unsupported_variables(env) == ["OTEL_EXPORTER_ZIPKIN_ENDPOINT", "OTEL_TRACE_EXPORTER"]


def test_a_timeout_that_looks_like_seconds_is_warned_about() -> None:
    warnings = configuration_warnings(
        {"OTEL_EXPORTER_OTLP_TIMEOUT": "10", "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "5000"}
    )
    assert list(warnings) == ["OTEL_EXPORTER_OTLP_TIMEOUT"]
    assert (
        "milliseconds" in warnings["OTEL_EXPORTER_OTLP_TIMEOUT"]
        and "10000" in warnings["OTEL_EXPORTER_OTLP_TIMEOUT"]
    )
