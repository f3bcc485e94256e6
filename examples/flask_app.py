"""A Flask app with the cache and telemetry, for gunicorn's sync workers.

    pip install "telemetry-infra[fastapi]" flask gunicorn
    export REDIS_URL=redis://localhost:6379/0 PROMETHEUS_MULTIPROC_DIR=/tmp/app-metrics
    mkdir -p $PROMETHEUS_MULTIPROC_DIR
    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 gunicorn -w 2 -b 127.0.0.1:8000 flask_app:app

Every request: a SERVER span named after its route (``GET /items/<int:item_id>``) with the
cache spans under it, an access record on ``api.access``, ``http.server.request.duration``;
``/metrics`` answers for both workers.
"""

from __future__ import annotations

import os

from flask import Flask

import telemetry_infra as ti
from telemetry_infra.integrations.wsgi import instrument_wsgi

ti.configure(service_name="flask-example")
log = ti.get_logger("api.items")
cache = ti.CacheManager(redis_url=os.environ.get("REDIS_URL"), name="items", namespace="flask-example")
ti.set_default_cache_manager(cache)  # what @cached functions use

app = Flask(__name__)
app.wsgi_app = instrument_wsgi(app.wsgi_app)  # type: ignore[method-assign]


@ti.cached(ttl=60)
def load_item(item_id: int) -> dict[str, object]:
    """Runs once per item a minute, whichever worker or thread asks."""
    log.info("loading item", extra={"item_id": item_id})
    return {"id": item_id, "name": f"item {item_id}"}


@app.get("/items/<int:item_id>")
def item(item_id: int) -> dict[str, object]:
    return load_item(item_id)


@app.post("/visits/<name>")
def visit(name: str) -> dict[str, object]:
    visits = cache.sync.get(f"visits:{name}", 0) + 1
    cache.sync.set(f"visits:{name}", visits, ttl=3600)
    return {"name": name, "visits": visits}


@app.get("/boom")
def boom() -> dict[str, object]:
    raise RuntimeError("handler failed")
