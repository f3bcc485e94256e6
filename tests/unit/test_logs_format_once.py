"""A record is formatted once and written by every handler with the same format (issue 25)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import telemetry_infra as ti
from telemetry_infra.logs import JsonFormatter, installed_handlers, teardown_logging


class CountsItsText:
    """An ``extra`` value whose text the formatter asks for: the count shows how often a line was made."""

    def __init__(self) -> None:
        self.made = 0

    def __str__(self) -> str:
        self.made += 1
        return "order-42"


@pytest.fixture
def production(tmp_path: Path) -> Iterator[tuple[Path, io.StringIO]]:
    console = io.StringIO()
    ti.setup_logging("INFO", log_dir=tmp_path, environment="production", stream=console)
    yield tmp_path, console
    teardown_logging()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_an_access_record_is_formatted_once_for_the_console_app_log_and_api_log(production):
    log_dir, console = production
    value = CountsItsText()

    logging.getLogger("api").info("GET /orders 200", extra={"order": value, "status": 200})

    (app_line,) = lines(log_dir / "app.log")
    assert lines(log_dir / "api.log") == [app_line]
    assert console.getvalue().splitlines() == [app_line]
    assert json.loads(app_line)["order"] == "order-42"
    assert value.made == 1


def test_a_filter_that_adds_a_field_on_one_handler_gets_a_line_with_it(production):
    log_dir, _ = production
    (api_handler,) = [h for h in installed_handlers() if getattr(h, "path", "").endswith("api.log")]

    def tag(record: logging.LogRecord) -> bool:
        record.audited = True
        return True

    api_handler.addFilter(tag)
    logging.getLogger("api").info("GET /orders 200")

    assert "audited" not in json.loads(lines(log_dir / "app.log")[0])
    assert json.loads(lines(log_dir / "api.log")[0])["audited"] is True


def test_a_filter_that_rewrites_the_message_on_one_handler_gets_its_own_line(production):
    log_dir, _ = production
    (api_handler,) = [h for h in installed_handlers() if getattr(h, "path", "").endswith("api.log")]

    def mask(record: logging.LogRecord) -> bool:
        record.msg, record.args = "GET /orders/<id> %s", (200,)
        return True

    api_handler.addFilter(mask)
    logging.getLogger("api").info("GET /orders/%s %s", 17, 200)

    assert json.loads(lines(log_dir / "app.log")[0])["message"] == "GET /orders/17 200"
    assert json.loads(lines(log_dir / "api.log")[0])["message"] == "GET /orders/<id> 200"


def test_a_subclass_with_its_own_output_never_borrows_another_formatters_line():
    class Tagged(JsonFormatter):
        def __init__(self, tag: str) -> None:
            super().__init__()
            self.tag = tag

        def format_line(self, record: logging.LogRecord) -> str:
            return super().format_line(record)[:-1] + f',"tag":"{self.tag}"}}'

    streams = [io.StringIO() for _ in range(3)]
    logger = logging.getLogger("format-once-subclass")
    logger.propagate = False
    for stream, formatter in zip(streams, (JsonFormatter(), Tagged("a"), Tagged("b")), strict=True):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    try:
        logger.warning("hello")
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)

    plain, tagged_a, tagged_b = (json.loads(stream.getvalue()) for stream in streams)
    assert "tag" not in plain
    assert (tagged_a["tag"], tagged_b["tag"]) == ("a", "b")


def test_development_text_is_shared_by_the_files_and_kept_apart_from_a_colour_console(tmp_path: Path):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    console = Terminal()
    ti.setup_logging("INFO", log_dir=tmp_path, environment="development", stream=console)
    try:
        logging.getLogger("api").warning("slow upstream")
    finally:
        teardown_logging()

    (app_line,) = lines(tmp_path / "app.log")
    assert lines(tmp_path / "api.log") == [app_line]
    assert "\033[" not in app_line and "slow upstream" in app_line
    assert "\033[33m" in console.getvalue()


def test_a_handler_exporting_every_record_attribute_beside_ours_sees_only_the_records_fields(production):
    """The stock SDK ``LoggingHandler`` exports a record's attributes: no formatter state among them."""
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    exported = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exported))
    stock = LoggingHandler(logger_provider=provider)
    logging.getLogger().addHandler(stock)
    try:
        logging.getLogger("api").info("GET /orders 200", extra={"status": 200})
    finally:
        logging.getLogger().removeHandler(stock)

    (record,) = exported.get_finished_logs()
    attributes = dict(record.log_record.attributes)
    assert attributes["status"] == 200
    assert not [value for value in attributes.values() if "GET /orders 200" in str(value)]
