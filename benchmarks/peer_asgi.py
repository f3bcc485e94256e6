"""CPU per request that the web instrumentation adds to a FastAPI app, ours against the peer stack.

    python benchmarks/peer_asgi.py [--rounds 7] [--per-round 1000] [--load 1.0] [--json PATH] [--markdown]

Four copies of one FastAPI app (``GET /items/{item_id}`` returning a small dict) are
called in-process through the ASGI interface (no server, no sockets), all under one
``configure()`` exporting to an OTLP receiver in another process: plain, with FastAPI's
own telemetry turned off (the floor); ours (``instrument_app``: a SERVER span, the
request context, ``http.server.request.duration``, one access record written to
``app.log`` and ``api.log`` and exported); the peer stack of the target (the OTel
contrib ``FastAPIInstrumentor`` + ``prometheus-fastapi-instrumentator``); and FastAPI's
own OpenTelemetry support, which recent FastAPI versions turn on by default with the
global providers. The time is the CPU time of the whole process per request, from the
first request of a round to the end of a flush after its last: under the GIL what an
export thread does is taken from the requests as surely as what the handler does, so it
is counted. The overhead of a stack is its time minus the plain app's in the same round.

By default requests run back to back (the process always busy, the worst case for an
export thread that must take the GIL back to send); ``--load 0.5`` runs them 4 at a
time and then lets the loop idle as long as they took, as a server below its capacity
does.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from typing import Any

from peer_rounds import (
    PACED_GROUP,
    Case,
    Measure,
    Row,
    add_load_argument,
    arguments,
    idle_after,
    load_label,
    report,
    run_rows,
)
from receiver_process import Receiver

import telemetry_infra as ti
from telemetry_infra.integrations.fastapi import instrument_app

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/items/7",
    "raw_path": b"/items/7",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"bench.local"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}
REQUEST = {"type": "http.request", "body": b"", "more_body": False}


def make_app(native_telemetry: bool = True) -> Any:
    """The app; FastAPI's own OpenTelemetry support (on by default, global providers) optional."""
    from fastapi import FastAPI

    off = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI() if native_telemetry else FastAPI(telemetry=off)  # type: ignore[arg-type]

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return {"id": item_id, "name": "widget", "tags": ["a", "b"]}

    return app


def called(loop: asyncio.AbstractEventLoop, app: Any, telemetry: Any, load: float = 1.0) -> Measure:
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return REQUEST

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def requests(count: int) -> None:
        for _ in range(count):
            await app(dict(SCOPE), receive, send)

    async def run(n: int) -> float:
        started = time.process_time()
        if load >= 1:
            await requests(n)
        else:
            for first in range(0, n, PACED_GROUP):
                busy_since = time.perf_counter()
                await requests(min(PACED_GROUP, n - first))
                # the loop idles in its selector meanwhile, as a server's does between requests
                await asyncio.sleep(idle_after(time.perf_counter() - busy_since, load))
        telemetry.force_flush()  # what the round made is exported within the round
        elapsed = time.process_time() - started
        if statuses.count(200) != len(statuses):
            raise RuntimeError(f"the app answered {set(statuses)}")
        statuses.clear()
        return elapsed

    return lambda n: loop.run_until_complete(run(n))


def peer_app() -> Any:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from prometheus_fastapi_instrumentator import Instrumentator

    app = make_app()
    FastAPIInstrumentor.instrument_app(app)
    Instrumentator().instrument(app).expose(app)
    return app


def overheads(row: Row) -> dict[str, Any]:
    """Each stack's CPU per request minus the plain app's, per round (median and range)."""
    plain = row.case("floor").times_us
    extra: dict[str, Any] = {}
    for case in row.cases:
        if case.role != "floor":
            per_round = sorted(c - p for c, p in zip(case.times_us, plain, strict=True))
            extra[case.name] = per_round
    return extra


def main() -> None:
    import statistics

    parser = arguments(__doc__.splitlines()[0], rounds=7, per_round=1000)
    add_load_argument(parser)
    args = parser.parse_args()
    load = args.load
    loop = asyncio.new_event_loop()
    with Receiver() as receiver, tempfile.TemporaryDirectory() as log_dir:
        telemetry = ti.configure(
            service_name="peer-asgi",
            otlp_endpoint=receiver.endpoints["grpc"],
            environment="production",
            log_dir=log_dir,
            console_logs=False,
            instrument_redis=False,
            capture_uncaught_exceptions=False,
        )
        ours = instrument_app(make_app())
        row = Row(
            f"ASGI: CPU per request, FastAPI{load_label(load)}",
            [
                Case(
                    "plain FastAPI (its own telemetry off)",
                    "floor",
                    called(loop, make_app(False), telemetry, load),
                ),
                Case(
                    "ours: instrument_app (span, metrics, access record)",
                    "ours",
                    called(loop, ours, telemetry, load),
                ),
                Case(
                    "FastAPIInstrumentor + prometheus-fastapi-instrumentator",
                    "peer",
                    called(loop, peer_app(), telemetry, load),
                ),
                Case(
                    "FastAPI's own telemetry (on the same providers)",
                    "peer",
                    called(loop, make_app(), telemetry, load),
                ),
            ],
            note="target applies to the overhead over the plain app",
        )
        run_rows([row], args.rounds, args.per_round, warmup=300)
        ti.shutdown()
    added = overheads(row)
    result = report("peer_asgi", [row], args)[0]
    ours_added = statistics.median(added[row.case("ours").name])
    peer_added = statistics.median(added[row.case("peer").name])  # the contrib stack: the target's peer
    ratio = ours_added / peer_added
    print(
        f"overhead over plain FastAPI: ours +{ours_added:.0f} µs, peer +{peer_added:.0f} µs "
        f"-> {ratio:.2f}x the peer's (target <= 0.4: {'met' if ratio <= 0.4 else 'NOT met'})"
    )
    if args.json:  # the overhead row replaces the raw one: the target is about the overhead
        import json

        result["overhead_us"] = {name: statistics.median(v) for name, v in added.items()}
        result["overhead_range_us"] = {name: [v[0], v[-1]] for name, v in added.items()}
        result["target"] = {
            "reference": row.case("peer").name,
            "limit": 0.4,
            "ratio": ratio,
            "paired_ratio": ratio,
            "met": ratio <= 0.4,
            "of": "overhead over the plain app",
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"script": "peer_asgi", "rows": [result]}, out, indent=1)
    logging.shutdown()


if __name__ == "__main__":
    main()
