"""Views calling the cache synchronously: ``cache.sync`` and ``@cached`` on plain functions."""

from __future__ import annotations

import os

from django.http import HttpRequest, JsonResponse

import telemetry_infra as ti

log = ti.get_logger("api.items")
cache = ti.CacheManager(redis_url=os.environ.get("REDIS_URL"), name="items", namespace="django-example")
ti.set_default_cache_manager(cache)


@ti.cached(ttl=60)
def load_item(item_id: int) -> dict[str, object]:
    log.info("loading item", extra={"item_id": item_id})
    return {"id": item_id, "name": f"item {item_id}"}


def item(request: HttpRequest, item_id: int) -> JsonResponse:
    return JsonResponse(load_item(item_id))


def visit(request: HttpRequest, name: str) -> JsonResponse:
    visits = cache.sync.get(f"visits:{name}", 0) + 1
    cache.sync.set(f"visits:{name}", visits, ttl=3600)
    return JsonResponse({"name": name, "visits": visits})


def boom(request: HttpRequest) -> JsonResponse:
    raise RuntimeError("handler failed")
