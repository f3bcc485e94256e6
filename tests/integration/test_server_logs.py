"""Under real uvicorn and gunicorn the console is one JSON object per line, one access record a request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from servers import Server, command, running

import telemetry_infra.logs
from telemetry_infra.testing import free_port

pytestmark = pytest.mark.slow

REQUESTS = 20


def _json_lines(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"{path.name} line {number} is not JSON: {line!r}") from None
    return records


def _exercise(server: Server) -> None:
    for i in range(REQUESTS):
        assert server.get(f"/lookup/{i}").status_code == 200
    assert server.get("/boom").status_code == 500
    assert server.get("/metrics").status_code == 200


def _check_records(records: list[dict]) -> None:
    access = [r for r in records if r["logger_name"] in ("api.access", "uvicorn.access", "gunicorn.access")]
    lookups = [r for r in access if r.get("http_route") == "/lookup/{key}"]
    assert len(lookups) == REQUESTS and {r["logger_name"] for r in access} == {"api.access"}
    (boom,) = [r for r in access if r.get("http_route") == "/boom"]
    assert boom["level"] == "ERROR" and "RuntimeError: handler failed" in boom["exc_info"]
    assert not [r for r in access if r.get("http_route") == "/metrics"]
    assert any(r["logger_name"].startswith(("uvicorn", "gunicorn")) for r in records)  # the server's own


@pytest.mark.parametrize("server_kind", ["uvicorn", "gunicorn"])
def test_every_stdout_line_is_json_with_one_access_record_per_request(
    server_kind: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {"ENVIRONMENT": "production"}
    with running(command(server_kind, port, tmp_path, workers=1), port, tmp_path, env) as server:
        _exercise(server)
    _check_records(_json_lines(server.stdout))


@pytest.mark.parametrize(
    ("server_kind", "flag", "first_line"),
    [
        ("uvicorn", "--log-config", "Started parent process"),
        ("gunicorn", "--log-config-json", "Starting gunicorn"),
    ],
)
def test_server_log_config_makes_even_the_supervisor_lines_json(
    server_kind: str, flag: str, first_line: str, tmp_path: Path
) -> None:
    config = tmp_path / "log_config.json"
    config.write_text(json.dumps(telemetry_infra.logs.SERVER_LOG_CONFIG))
    port = free_port()
    argv = [*command(server_kind, port, tmp_path, workers=2), flag, str(config)]
    with running(argv, port, tmp_path, {"ENVIRONMENT": "production"}) as server:
        _exercise(server)
    records = _json_lines(server.stdout)
    _check_records(records)
    assert any(first_line in r["message"] for r in records)
    assert not server.stderr.read_text().strip()
