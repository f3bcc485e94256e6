"""Settings: argument > environment variable > default, and clear errors."""

from __future__ import annotations

import pytest

from telemetry_infra.settings import Settings


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
