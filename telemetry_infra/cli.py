"""The ``telemetry-infra`` command: ``demo``, ``check`` and ``--version``."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["main"]


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    configured: bool = True

    def line(self) -> str:
        status = "-" if not self.configured else ("ok" if self.ok else "FAIL")
        return f"{self.name:<8} {status:<5} {self.detail}"


def check_otlp(endpoint: str | None, timeout_s: float = 1.0) -> CheckResult:
    if not endpoint:
        return CheckResult(
            "otlp", True, "no endpoint configured: nothing is exported (embedded default)", False
        )
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 4317)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return CheckResult("otlp", True, f"{endpoint} accepts connections")
    except OSError as exc:
        return CheckResult("otlp", False, f"{endpoint} unreachable: {exc}")


def check_redis(url: str | None, timeout_s: float = 1.0) -> CheckResult:
    if not url:
        return CheckResult("redis", True, "REDIS_URL not set: the cache would run in memory", False)
    import redis

    from telemetry_infra.settings import url_without_password

    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.ping()
        return CheckResult("redis", True, f"{url_without_password(url)} answers PING")
    except redis.RedisError as exc:
        return CheckResult("redis", False, f"{url_without_password(url)} does not answer PING: {exc}")
    finally:
        client.close()


def check_log_dir(log_dir: str) -> CheckResult:
    path = Path(log_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
        return CheckResult("logs", True, f"{path.resolve()} is writable")
    except OSError as exc:
        return CheckResult("logs", False, f"{path} is not writable: {exc}")


def run_check(args: argparse.Namespace) -> int:
    from telemetry_infra.settings import Settings

    settings = Settings.resolve(otlp_endpoint=args.otlp_endpoint, log_dir=args.log_dir)
    results = [
        check_otlp(settings.otlp_endpoint),
        check_redis(args.redis_url or os.environ.get("REDIS_URL")),
        check_log_dir(settings.log_dir),
    ]
    for result in results:
        print(result.line())
    return 0 if all(result.ok for result in results) else 1


def _parser() -> argparse.ArgumentParser:
    from telemetry_infra import __version__

    parser = argparse.ArgumentParser(prog="telemetry-infra", description=__doc__)
    parser.add_argument("--version", action="version", version=f"telemetry-infra {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser("check", help="check the OTLP endpoint, Redis and the log directory")
    check.add_argument("--otlp-endpoint", help="default: OTEL_EXPORTER_OTLP_ENDPOINT")
    check.add_argument("--redis-url", help="default: REDIS_URL")
    check.add_argument("--log-dir", help="default: LOG_DIR or ./logs")
    check.set_defaults(run=run_check)

    demo = commands.add_parser(
        "demo", help="run a small simulated service that emits logs, traces and metrics"
    )
    demo.add_argument("--requests", type=_positive_int, default=50, help="how many requests (default: 50)")
    demo.add_argument("--redis-url", help="default: REDIS_URL; without it the cache runs in memory")
    demo.add_argument("--forever", action="store_true", help="keep serving until interrupted (for compose)")
    demo.add_argument("--interval", type=float, default=None, help="seconds between requests")
    demo.add_argument("--log-dir", help="default: LOG_DIR or ./logs")
    demo.add_argument("--verbose", action="store_true", help="also print every log record to the console")
    demo.set_defaults(run=run_demo)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run_demo(args: argparse.Namespace) -> int:
    from telemetry_infra.demo import main as demo_main

    return demo_main(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except ValueError as exc:  # bad configuration: say which value, no traceback
        print(f"telemetry-infra: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
