"""Fixtures of the unit tests."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator

import pytest

import telemetry_infra as ti
from telemetry_infra.logs import teardown_logging


@pytest.fixture
def json_lines() -> Iterator[Callable[[], list[dict]]]:
    """Production logging into a string; returns a function giving the records written so far."""
    stream = io.StringIO()
    ti.setup_logging("INFO", environment="production", log_files=False, stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    teardown_logging()
