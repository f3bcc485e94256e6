"""What a record looks like on the console: JSON in production, text in development."""

from __future__ import annotations

import io
import json
import logging
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from design_contracts import log_field_groups

import telemetry_infra as ti
from telemetry_infra.logs import REDACTED, installed_handlers, set_secret_keys, teardown_logging
from telemetry_infra.logs.redaction import DEFAULT_SECRET_KEYS

FIXED_FIELDS = log_field_groups()["record"]  # docs/design.md, "Log records"


@pytest.fixture
def text_output():
    stream = io.StringIO()
    ti.setup_logging("DEBUG", environment="development", log_files=False, stream=stream)
    yield stream.getvalue
    teardown_logging()


def test_json_record_has_the_design_fields_in_order(json_lines):
    ti.get_logger("api.nyc_data_client").info(
        "API request successful", extra={"duration": 0.456, "records": 10}
    )
    (line,) = json_lines()

    assert list(line)[:7] == FIXED_FIELDS
    assert line["level"] == "INFO"
    assert line["logger_name"] == "api.nyc_data_client"
    assert line["module"] == "test_logs_output"
    assert line["function_name"] == "test_json_record_has_the_design_fields_in_order"
    assert isinstance(line["line_number"], int) and line["line_number"] > 0
    assert line["message"] == "API request successful"
    assert (line["duration"], line["records"]) == (0.456, 10)
    assert "trace_id" not in line and "request_id" not in line and "trace_flags" not in line


def test_each_record_keeps_its_own_extra_fields_whatever_came_before(json_lines):
    log = ti.get_logger("svc")
    extras = [{"a": 1, "b": 2}, {"c": 3, "d": 4}, {"b": 5, "a": 6}, {"a": 7}, {}, {"password": "p", "e": 8}]
    for extra in extras * 2:  # same sizes, other keys, other order, secrets: in turn, twice
        log.info("extras", extra=extra)
    lines = json_lines()

    written = [{key: line[key] for key in line if key not in FIXED_FIELDS} for line in lines]
    expected = [{key: REDACTED if key == "password" else value for key, value in e.items()} for e in extras]
    assert written == expected * 2


def test_extra_fields_are_written_however_many_distinct_keys_came_before(json_lines):
    # a service logging per-tenant or per-item keys sees thousands of field names
    log = ti.get_logger("svc")
    for n in range(5000):
        log.info("extras", extra={f"field_{n}": n, "secret_token": "s"})
    lines = json_lines()

    assert [line[f"field_{n}"] for n, line in enumerate(lines)] == list(range(5000))
    assert {line["secret_token"] for line in lines} == {REDACTED}


def test_timestamp_is_utc_with_microseconds(json_lines):
    before = datetime.now(UTC)
    ti.get_logger("t").info("now")
    after = datetime.now(UTC)
    stamp = json_lines()[0]["timestamp"]

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before.replace(microsecond=0) <= parsed <= after


def test_values_json_cannot_encode_become_strings(json_lines):
    class Opaque:
        def __str__(self) -> str:
            return "opaque-object"

    ti.get_logger("t").info(
        "odd values", extra={"obj": Opaque(), "huge": 2**80, "amount": Decimal("1.10"), "raw": b"\x00\xff"}
    )
    (line,) = json_lines()

    assert line["obj"] == "opaque-object"
    assert line["huge"] == str(2**80)
    assert line["amount"] == "1.10"
    assert isinstance(line["raw"], str)


def test_colliding_extra_keys_are_kept_under_a_prefix(json_lines):
    log = ti.get_logger("t")
    log.info("real message", extra={"message": "fake", "name": "n", "args": [1], "level": "fake-level"})
    (line,) = json_lines()

    assert line["message"] == "real message"
    assert line["level"] == "INFO"
    assert line["logger_name"] == "t"
    assert (line["extra_message"], line["extra_name"], line["extra_args"]) == ("fake", "n", [1])
    assert line["extra_level"] == "fake-level"


def test_get_logger_is_the_stdlib_logger_and_fixes_earlier_instances(json_lines):
    plain = logging.getLogger("made.before.get_logger")
    assert ti.get_logger("made.before.get_logger") is plain

    plain.warning("from stdlib API", extra={"message": "would raise KeyError in stdlib"})
    (line,) = json_lines()
    assert line["extra_message"] == "would raise KeyError in stdlib"


FORGED = 'ok\n{"level": "CRITICAL", "message": "forged"}\u2028second\u2029third\x85'


def test_newlines_never_split_a_json_record(json_lines):
    ti.get_logger("t").info(FORGED, extra={"note": "a\nb"})
    (line,) = json_lines()
    assert (line["message"], line["note"]) == (FORGED, "a\nb")


def test_newlines_never_split_a_text_record(text_output):
    ti.get_logger("t").info(FORGED, extra={"note": "a\nb"})
    assert len(text_output().splitlines()) == 1


def test_exception_carries_the_full_traceback(json_lines):
    def failing() -> None:
        raise ValueError("bad value")

    try:
        failing()
    except ValueError:
        ti.get_logger("t").error("Request failed", exc_info=True)
    (line,) = json_lines()

    assert line["exc_info"].startswith("Traceback (most recent call last)")
    assert "in failing" in line["exc_info"] and "ValueError: bad value" in line["exc_info"]


@pytest.mark.parametrize("environment", ["production", "development"])
def test_bad_format_arguments_do_not_lose_the_record(environment):
    # Formatted directly: pytest's own capture handler re-raises the TypeError.
    ti.setup_logging(environment=environment, log_files=False, stream=io.StringIO())
    (handler,) = installed_handlers()
    record = ti.get_logger("t").makeRecord("t", logging.INFO, "f.py", 1, "two %s %s", ("only-one",), None)
    try:
        output = handler.format(record)
    finally:
        teardown_logging()
    assert "two %s %s" in output and "only-one" in output


def test_secrets_are_redacted_at_any_depth(json_lines):
    ti.get_logger("t").info(
        "login",
        extra={
            "Password": "hunter2",
            "x-api-key": "k-123",
            "request": {"headers": {"Authorization": "Bearer abc", "accept": "json"}},
            "attempts": [{"access_token": "t-1"}],
            "max_tokens": 512,
        },
    )
    (line,) = json_lines()

    assert line["Password"] == REDACTED and line["x-api-key"] == REDACTED
    assert line["request"] == {"headers": {"Authorization": REDACTED, "accept": "json"}}
    assert line["attempts"] == [{"access_token": REDACTED}]
    assert line["max_tokens"] == 512
    assert "hunter2" not in json.dumps(line)


def test_secret_key_list_is_configurable(json_lines):
    set_secret_keys(["ssn"])
    try:
        ti.get_logger("t").info("x", extra={"ssn": "123-45", "password": "visible now"})
    finally:
        set_secret_keys(DEFAULT_SECRET_KEYS)
    (line,) = json_lines()
    assert (line["ssn"], line["password"]) == (REDACTED, "visible now")


def test_development_line_matches_the_design(text_output):
    with ti.request_context(request_id="abc-123"):
        ti.get_logger("api.nyc_data_client").info("API request successful", extra={"token": "s3cr3t"})
    line = text_output().rstrip("\n")

    pattern = (
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \| INFO     \| api\.nyc_data_client  \| "
        r"test_logs_output\.py:\d+ +\[abc-123\] \| API request successful \| token=\[REDACTED\]"
    )
    assert re.fullmatch(pattern, line), line


def test_development_console_has_no_colour_codes_off_a_terminal(text_output):
    ti.get_logger("t").error("plain")
    assert "\033[" not in text_output()


def test_development_traceback_follows_the_line(text_output):
    try:
        raise KeyError("missing")
    except KeyError:
        ti.get_logger("t").exception("lookup failed")
    first, *rest = text_output().splitlines()
    assert first.endswith("| lookup failed")
    assert rest[0].startswith("Traceback") and rest[-1] == "KeyError: 'missing'"
