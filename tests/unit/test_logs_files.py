"""setup_logging(): which file gets what, formats, rotation, settings, idempotency."""

from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path

import pytest

import telemetry_infra as ti
from telemetry_infra.logs import installed_handlers, teardown_logging


@pytest.fixture(autouse=True)
def _clean_handlers():
    yield
    teardown_logging()


def _json_file(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _log_one_of_each() -> None:
    ti.get_logger("api.nyc_data_client").info("api call")
    ti.get_logger("api").warning("api root")
    ti.get_logger("apiary").info("not an api logger")
    ti.get_logger("model.training").info("model step")
    ti.get_logger("service").error("service failed")
    ti.get_logger("service").debug("below the level")


def test_each_file_gets_its_records(tmp_path):
    ti.setup_logging("INFO", log_dir=tmp_path, environment="production", stream=io.StringIO())
    _log_one_of_each()

    def messages(name):
        return [line["message"] for line in _json_file(tmp_path / name)]

    assert messages("app.log") == [
        "api call",
        "api root",
        "not an api logger",
        "model step",
        "service failed",
    ]
    assert messages("error.log") == ["service failed"]
    assert messages("api.log") == ["api call", "api root"]
    assert messages("model.log") == ["model step"]


def test_development_files_are_text(tmp_path):
    ti.setup_logging("INFO", log_dir=tmp_path, environment="development", stream=io.StringIO())
    ti.get_logger("api.client").info("hello", extra={"records": 3})
    (line,) = (tmp_path / "api.log").read_text().splitlines()
    assert " | INFO     | api.client " in line and line.endswith("| hello | records=3")
    assert "\033[" not in line


def test_environment_variables_are_the_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "warning")
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("ENVIRONMENT", "production")
    ti.setup_logging(stream=io.StringIO())
    ti.get_logger("t").info("dropped: below WARNING")
    ti.get_logger("t").warning("kept")
    assert [line["message"] for line in _json_file(tmp_path / "from-env" / "app.log")] == ["kept"]

    ti.setup_logging(log_level="DEBUG", log_dir=tmp_path / "from-arg", stream=io.StringIO())
    ti.get_logger("t").debug("arguments win")
    assert _json_file(tmp_path / "from-arg" / "app.log")[0]["message"] == "arguments win"


def test_defaults_are_info_logs_and_development(tmp_path, monkeypatch):
    for name in ("LOG_LEVEL", "LOG_DIR", "ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    ti.setup_logging(stream=io.StringIO())
    ti.get_logger("t").debug("dropped")
    ti.get_logger("t").info("kept")
    (line,) = (tmp_path / "logs" / "app.log").read_text().splitlines()
    assert line.endswith("| kept")  # development: text


def test_unknown_level_raises_listing_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="DEBUG, INFO, WARNING, ERROR, CRITICAL"):
        ti.setup_logging("LOUD", log_dir=tmp_path)


def test_calling_again_never_duplicates_and_keeps_user_handlers(tmp_path):
    user_stream = io.StringIO()
    user_handler = logging.StreamHandler(user_stream)
    logging.getLogger().addHandler(user_handler)
    console = io.StringIO()
    try:
        for _ in range(3):
            ti.setup_logging("INFO", log_dir=tmp_path, environment="production", stream=console)
        ti.get_logger("t").info("once")
    finally:
        logging.getLogger().removeHandler(user_handler)

    assert len(console.getvalue().splitlines()) == 1
    assert len((tmp_path / "app.log").read_text().splitlines()) == 1
    assert user_stream.getvalue() == "once\n"
    assert len(installed_handlers()) == 5


def test_unwritable_log_dir_warns_once_and_console_continues(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    console = io.StringIO()
    ti.setup_logging("INFO", log_dir=blocker / "logs", environment="production", stream=console)
    ti.get_logger("t").info("still logging")

    warning, line = (json.loads(text) for text in console.getvalue().splitlines())
    assert warning["level"] == "WARNING" and str(blocker / "logs") in warning["message"]
    assert "console only" in warning["message"]
    assert line["message"] == "still logging"


def test_console_is_coloured_only_on_a_terminal(tmp_path):
    primary, secondary = os.openpty()
    with os.fdopen(secondary, "w") as terminal:
        ti.setup_logging("INFO", environment="development", log_files=False, stream=terminal)
        ti.get_logger("t").error("red")
        terminal.flush()
        output = os.read(primary, 4096).decode()
    os.close(primary)
    assert "\033[31mERROR" in output


def _emit_at(logger: logging.Logger, message: str, created: float) -> None:
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, (), None)
    record.created = created
    logger.handle(record)


def test_files_rotate_on_period_boundaries_keeping_backup_count(tmp_path):
    ti.setup_logging(
        "INFO",
        log_dir=tmp_path,
        environment="production",
        console=False,
        rotate_every=60,
        backup_count=2,
    )
    logger = ti.get_logger("t")
    start = (time.time() // 60 + 1) * 60  # the start of the next minute
    for minute in range(4):
        _emit_at(logger, f"minute {minute}", start + minute * 60 + 1)

    def name(minute):
        return "app.log." + time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(start + minute * 60))

    assert sorted(path.name for path in tmp_path.glob("app.log.*")) == [name(1), name(2)]  # minute 0 deleted
    assert [line["message"] for line in _json_file(tmp_path / name(2))] == ["minute 2"]
    assert [line["message"] for line in _json_file(tmp_path / "app.log")] == ["minute 3"]


def test_daily_rotation_names_files_by_utc_date(tmp_path):
    ti.setup_logging("INFO", log_dir=tmp_path, environment="production", console=False)
    logger = ti.get_logger("t")
    tomorrow = (time.time() // 86_400 + 1) * 86_400
    _emit_at(logger, "today", time.time())
    _emit_at(logger, "just after midnight UTC", tomorrow + 0.5)

    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert [line["message"] for line in _json_file(tmp_path / f"app.log.{today}")] == ["today"]
    assert [line["message"] for line in _json_file(tmp_path / "app.log")] == ["just after midnight UTC"]


def test_per_process_files_carry_the_pid(tmp_path):
    ti.setup_logging(
        "INFO", log_dir=tmp_path, environment="production", console=False, per_process_files=True
    )
    ti.get_logger("t").info("mine")
    assert _json_file(tmp_path / f"app.{os.getpid()}.log")[0]["message"] == "mine"
    assert not (tmp_path / "app.log").exists()


def test_the_file_handler_applies_its_filters_and_writes_the_formatters_line(tmp_path):
    """Its own handle() (no per-record lock and filter calls) keeps the stdlib's contract:
    callable filters and filter objects can drop a record; a JsonFormatter subclass's
    line is what is written, a plain one's is the shared line, one record a line."""
    from telemetry_infra.logs import JsonFormatter, SharedRotatingFileHandler

    class Tagged(JsonFormatter):
        def format_line(self, record: logging.LogRecord) -> str:
            return super().format_line(record)[:-1] + ',"tag":"t"}'

    plain = SharedRotatingFileHandler(tmp_path / "plain.log")
    plain.setFormatter(JsonFormatter())
    plain.addFilter(lambda record: "secret" not in record.getMessage())
    tagged = SharedRotatingFileHandler(tmp_path / "tagged.log")
    tagged.setFormatter(Tagged())
    tagged.addFilter(logging.Filter("orders"))
    logger = logging.getLogger("orders.files_test")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(plain)
    logger.addHandler(tagged)
    try:
        logger.info("kept \u2028 é")
        logger.info("a secret line")
    finally:
        for handler in (plain, tagged):
            logger.removeHandler(handler)
            handler.close()

    (kept,) = _json_file(tmp_path / "plain.log")
    assert kept["message"] == "kept \u2028 é"
    assert "\\u2028" in (tmp_path / "plain.log").read_text(encoding="utf-8")
    assert [line["message"] for line in _json_file(tmp_path / "tagged.log")] == [
        "kept \u2028 é",
        "a secret line",
    ]
    assert {line["tag"] for line in _json_file(tmp_path / "tagged.log")} == {"t"}
