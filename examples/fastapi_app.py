"""A FastAPI service with telemetry_infra: middleware, a cached endpoint, /metrics, /health.

Serve it:       uvicorn examples.fastapi_app:app --port 8000
Run it once:    python examples/fastapi_app.py   (calls every endpoint in-process, then exits)

REDIS_URL picks the Redis (memory otherwise); OTEL_EXPORTER_OTLP_ENDPOINT the collector.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException

import telemetry_infra as ti
from telemetry_infra.integrations.fastapi import instrument_app

ti.configure(service_name="property-api", environment=os.environ.get("ENVIRONMENT", "production"))
log = ti.get_logger("api.properties")
cache = ti.CacheManager(redis_url=os.environ.get("REDIS_URL"), name="property-api", namespace="property-api")
ti.set_default_cache_manager(cache)


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    await cache.initialize()
    yield
    await cache.close()
    ti.shutdown()


app = FastAPI(title="property-api", lifespan=lifespan)
instrument_app(
    app, user_id_getter=lambda scope: dict(scope["headers"]).get(b"x-user-id", b"").decode() or None
)


@ti.cached(ttl=60, key_prefix="property")
async def load_property(bbl: str) -> dict[str, object]:
    """Pretend to call a slow upstream API; cached for a minute."""
    await asyncio.sleep(0.02)
    log.info("loaded from upstream", extra={"bbl": bbl})
    return {"bbl": bbl, "violations": len(bbl) % 7}


@app.get("/properties/{bbl}")
async def get_property(bbl: str) -> dict[str, object]:
    if not bbl.isdigit():
        raise HTTPException(status_code=422, detail="a BBL is digits only")
    return await load_property(bbl)


@app.get("/health")
async def health() -> dict[str, object]:
    return await cache.health_check()


async def _call_every_endpoint() -> None:
    import httpx

    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://property-api") as client:
            for path in ("/properties/1000120001", "/properties/1000120001", "/properties/abc", "/health"):
                response = await client.get(path, headers={"X-User-ID": "user-7"})
                print(response.status_code, path, "request id:", response.headers["x-request-id"])
            metrics = await client.get("/metrics")
            hits = [line for line in metrics.text.splitlines() if line.startswith("cache_hits_total")]
            print("/metrics:", hits or "no cache hits yet")


if __name__ == "__main__":
    asyncio.run(_call_every_endpoint())
