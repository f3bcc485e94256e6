"""A Celery worker (prefork) sharing the cache with the web processes.

    export REDIS_URL=redis://localhost:6379/0
    celery -A celery_app worker --pool=prefork -c 4

Each child process of the pool gets its own connections (``cache.sync`` starts its loop
thread in the child on first use); ``@cached`` computes a price once per pool process however
many of its tasks ask for it at the same time (two processes missing at the same instant may
both compute it), and every process reads what any of them stored; task logs carry the trace
of their cache calls.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

import telemetry_infra as ti

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")

app = Celery("celery_app", broker=REDIS_URL, backend=REDIS_URL)
cache = ti.CacheManager(redis_url=REDIS_URL, name="prices", namespace="celery-example")
ti.set_default_cache_manager(cache)
log = ti.get_logger("api.prices")


@worker_process_init.connect
def start_telemetry(**_: object) -> None:
    """In each pool process: exporters are threads, which do not survive the fork."""
    ti.configure(service_name="celery-example")


@worker_process_shutdown.connect
def flush_telemetry(**_: object) -> None:
    """A pool process ends without running atexit hooks: send what it still holds."""
    ti.shutdown(timeout_s=5.0)


@ti.cached(ttl=300)
def compute_price(sku: str) -> float:
    log.info("computing price", extra={"sku": sku})
    return {"a": 10.0, "b": 20.0}.get(sku, 0.0)


@app.task
def price(sku: str) -> float:
    with ti.request_context(request_id=price.request.id):
        return compute_price(sku)
