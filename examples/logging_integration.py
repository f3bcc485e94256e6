"""Logging with telemetry_infra: the seed's examples, runnable as they are.

    python examples/logging_integration.py [log_dir]

Shows request context tracking, execution time logging, exception logging,
structured metadata and batch processing. Logs go to the console (pretty text;
set ENVIRONMENT=production for JSON) and to app.log / error.log / api.log /
model.log in ``log_dir`` (default: a new temporary directory).
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import uuid

from opentelemetry import trace

import telemetry_infra as ti

logger = ti.get_logger(__name__)
api_logger = ti.get_logger("api.nyc_data_client")
model_logger = ti.get_logger("model.risk_scorer")
tracer = trace.get_tracer("examples.logging")


# -- 1. request context -------------------------------------------------------------
async def handle_request(user_id: str) -> None:
    """Every record made while handling the request carries its request id and user id."""
    async with ti.request_context(request_id=str(uuid.uuid4()), user_id=user_id):
        with tracer.start_as_current_span("handle_request"):  # adds trace_id / span_id too
            logger.info("Processing request")
            violations = await fetch_violations("1012340001")
            logger.info("Request completed", extra={"violations": len(violations)})


# -- 2. execution time --------------------------------------------------------------
@ti.log_execution_time(logger=api_logger)
async def fetch_violations(bbl: str) -> list[dict]:
    """Logs ``function`` and ``duration`` when it returns."""
    await asyncio.sleep(0.01)
    violations = [{"id": n, "bbl": bbl} for n in range(random.randint(1, 5))]
    api_logger.info("Violations retrieved", extra={"bbl": bbl, "count": len(violations)})
    return violations


# -- 3. exceptions ------------------------------------------------------------------
@ti.log_exceptions(reraise=False)
def parse_inspection(raw: str) -> int:
    """A failure is logged at ERROR with its traceback; reraise=False returns None."""
    return int(raw)


# -- 4. structured metadata ----------------------------------------------------------
def score_property(bbl: str) -> float:
    score = round(random.random(), 3)
    model_logger.info(
        "Risk scored",
        extra={"bbl": bbl, "score": score, "features": {"open_violations": 3}, "api_key": "never-printed"},
    )
    return score


# -- 5. batch processing -------------------------------------------------------------
@ti.log_execution_time
def process_batch(bbls: list[str]) -> dict[str, float]:
    logger.info("Batch started", extra={"batch_size": len(bbls)})
    scores = {}
    for position, bbl in enumerate(bbls, start=1):
        scores[bbl] = score_property(bbl)
        if position % 2 == 0:
            logger.debug("Batch progress", extra={"done": position, "total": len(bbls)})
    logger.info("Batch finished", extra={"scored": len(scores)})
    return scores


async def main(log_dir: str) -> None:
    # configure() calls setup_logging() and also sets up tracing, so records made in
    # a span carry its trace_id/span_id. With logging alone: ti.setup_logging(...)
    ti.configure(service_name="logging-example", log_level="DEBUG", log_dir=log_dir)
    logger.info("Application started", extra={"log_dir": log_dir})
    logger.warning("Configuration missing", extra={"config_key": "API_TOKEN"})

    await asyncio.gather(handle_request("user123"), handle_request("user456"))
    assert parse_inspection("not-a-number") is None
    process_batch([f"10123400{n:02d}" for n in range(6)])

    try:
        {}["missing"]
    except KeyError:
        logger.error("Request failed", exc_info=True)
    logger.info("Done: see the log files", extra={"log_dir": log_dir})
    ti.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="telemetry-logs-")))
