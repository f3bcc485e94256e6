"""The "Sync code" recipes run as users run them: the Flask example under real gunicorn sync
workers (``-w 2``, ``PROMETHEUS_MULTIPROC_DIR``), the Django site under gunicorn, and the
Celery worker (prefork), against a real redis-server, telemetry checked on the wire."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from servers import CLIENT, started, wait_for_answer

from telemetry_infra.testing import OTLPReceiver, RedisServer, free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def environment(redis: RedisServer, receiver: OTLPReceiver, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROMETHEUS_"))}
    return {
        **clean,
        "REDIS_URL": redis.url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


@contextmanager
def gunicorn(app: str, env: dict[str, str], tmp_path: Path, workers: int = 2) -> Iterator[str]:
    """``gunicorn -w N`` (sync workers) serving ``app``; yields its base URL."""
    port, log = free_port(), tmp_path / "gunicorn.log"
    argv = [sys.executable, "-m", "gunicorn", app, "-w", str(workers), "-b", f"127.0.0.1:{port}"]
    with started(argv, env, EXAMPLES, log, log) as process:
        url = f"http://127.0.0.1:{port}"
        wait_for_answer(f"{url}/metrics", process, log)
        yield url


def get(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> httpx.Response:
    return CLIENT.request(method, url, headers=headers)  # a new connection each time


def route_counts(exposition: str) -> dict[tuple[str, str], float]:
    """``{(route, status): count}`` of http_server_request_duration_seconds."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "http_server_request_duration_seconds_count":
                key = (sample.labels.get("http_route", ""), sample.labels["http_response_status_code"])
                counts[key] = counts.get(key, 0) + sample.value
    return counts


def test_flask_recipe_under_gunicorn_sync_workers(tmp_path, redis_restartable, otlp_receiver):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = environment(redis_restartable, otlp_receiver, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    with gunicorn("flask_app:app", env, tmp_path) as url:
        answers = [get(f"{url}/items/7") for _ in range(6)]
        visits = [get(f"{url}/visits/ada", "POST").json()["visits"] for _ in range(4)]
        boom = get(f"{url}/boom", headers={"X-Request-ID": "req-boom-1"})
        exposition = get(f"{url}/metrics").text
    assert [a.json() for a in answers] == [{"id": 7, "name": "item 7"}] * 6
    assert visits == [1, 2, 3, 4], "both workers read and write the same Redis entry"
    assert boom.status_code == 500 and boom.headers["X-Request-ID"] == "req-boom-1"
    assert all(len(a.headers["X-Request-ID"]) == 32 for a in answers)  # the trace id

    counts = route_counts(exposition)  # one scrape counts both workers' requests
    assert counts[("/items/<int:item_id>", "200")] == 6
    assert counts[("/visits/<name>", "200")] == 4
    assert counts[("/boom", "500")] == 1

    servers = otlp_receiver.wait_for_spans(lambda s: s.kind == "SERVER", count=11, timeout=20)
    names = sorted({s.name for s in servers})
    assert names == ["GET /boom", "GET /items/<int:item_id>", "POST /visits/<name>"]
    (failed,) = [s for s in servers if s.name == "GET /boom"]
    assert failed.attributes["error.type"] == "RuntimeError"
    assert failed.attributes["http.response.status_code"] == 500
    assert [name for name, _ in failed.events] == ["exception"]
    item_spans = {s.span_id for s in servers if s.name == "GET /items/<int:item_id>"}
    cache_gets = otlp_receiver.wait_for_spans(lambda s: s.name == "cache.get", count=6)
    assert {s.parent_span_id for s in cache_gets} & item_spans, "cache spans sit under the request span"

    access = otlp_receiver.wait_for_logs(lambda r: r.attributes.get("http_route") is not None, count=11)
    assert len({(r.attributes["http_route"], r.trace_id) for r in access}) == 11, "one record per request"
    (boom_record,) = [r for r in access if r.attributes["http_route"] == "/boom"]
    assert boom_record.severity_text == "ERROR" and boom_record.trace_id == failed.trace_id
    loads = otlp_receiver.wait_for_logs(lambda r: r.body == "loading item")
    assert len(loads) == 1, "@cached ran the loader once for both workers"


def test_django_recipe_under_gunicorn(tmp_path, redis_restartable, otlp_receiver):
    env = environment(redis_restartable, otlp_receiver, DJANGO_SETTINGS_MODULE="django_site.settings")
    with gunicorn("django_site.wsgi:application", env, tmp_path, workers=1) as url:
        first = get(f"{url}/items/3/")
        second = get(f"{url}/items/3/")
        missing = get(f"{url}/nowhere/")
        boom = get(f"{url}/boom/")
    assert first.json() == second.json() == {"id": 3, "name": "item 3"}
    assert (missing.status_code, boom.status_code) == (404, 500)
    servers = otlp_receiver.wait_for_spans(lambda s: s.kind == "SERVER", count=4, timeout=20)
    assert sorted(s.name for s in servers) == [
        "GET /boom/",
        "GET /items/<int:item_id>/",
        "GET /items/<int:item_id>/",
        "GET /nowhere/",
    ]
    (failed,) = [s for s in servers if s.name == "GET /boom/"]
    assert failed.attributes["error.type"] == "RuntimeError", "Django's 500 page still records the exception"
    assert [name for name, _ in failed.events] == ["exception"]
    loads = otlp_receiver.wait_for_logs(lambda r: r.body == "loading item")
    assert len(loads) == 1


def test_celery_recipe_with_a_prefork_worker(tmp_path, redis_restartable, otlp_receiver):
    env = environment(redis_restartable, otlp_receiver)
    argv = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool=prefork", "-c", "2"]
    log = tmp_path / "celery.log"
    with started([*argv, "-l", "WARNING"], env, EXAMPLES, log, log):
        script = (
            "import celery_app\n"
            "first = [celery_app.price.delay(sku) for sku in ['a', 'b']]\n"
            "first = [r.get(timeout=60) for r in first]\n"
            "# once those are cached, any pool process answers from Redis\n"
            "again = [celery_app.price.delay(sku) for sku in ['a', 'a', 'b']]\n"
            "print(first + [r.get(timeout=60) for r in again])\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, cwd=EXAMPLES, capture_output=True, text=True, timeout=90
        )
        assert done.returncode == 0, done.stderr + log.read_text()
        # while the worker runs, as a user watching the collector sees them
        computed = otlp_receiver.wait_for_logs(lambda r: r.body == "computing price", count=2, timeout=20)
    assert done.stdout.strip() == "[10.0, 20.0, 10.0, 10.0, 20.0]"
    skus = sorted(r.attributes["sku"] for r in computed)
    assert skus == ["a", "b"], "a price cached by one pool process was computed again"
