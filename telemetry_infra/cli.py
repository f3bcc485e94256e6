"""The ``telemetry-infra`` command: ``demo``, ``check`` and ``--version``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telemetry_infra.settings import (
    SIGNALS,
    Settings,
    configuration_warnings,
    unsupported_variables,
    url_without_password,
)

__all__ = ["main"]

DESCRIPTION = (
    "Trace-correlated logs, an instrumented Redis cache and Prometheus metrics for a Python service."
)
EXIT_CODES = """\
exit codes:
  0  {zero}
  1  {one}
  2  a setting is malformed (the message names it), or no command was given"""
CHECK_EXIT_CODES = EXIT_CODES.format(
    zero="everything configured answers as it should (warnings do not count)",
    one="something configured failed (a FAIL line says what, where and why)",
)
DEMO_EXIT_CODES = EXIT_CODES.format(
    zero="the demo ran and every export reached its OTLP endpoint (or none is set)",
    one="an export failed: the endpoint is down or is not an OTLP receiver",
)
COMMAND_EXIT_CODES = EXIT_CODES.format(
    zero="the command did what it says (see each command's --help)",
    one="check: something failed; demo: an export failed",
)
EPILOG = f"""\
examples:
  telemetry-infra demo      a simulated service: its logs, a trace tree, a summary
  telemetry-infra check     is the OTLP endpoint, Redis and the log directory usable?
  telemetry-infra check --redis-url redis://localhost:6379/0

Settings come from arguments, then environment variables (OTEL_EXPORTER_OTLP_ENDPOINT,
REDIS_URL, LOG_DIR, ...): see docs/configuration.md.

{COMMAND_EXIT_CODES}"""
MAX_LINE = 160
"""No line ``check`` or ``demo`` prints is longer."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    configured: bool = True
    warning: bool = False  # worth a look, not a failure

    def line(self) -> str:
        """What ``check`` prints: a line per line of ``detail`` (one per failing node), none too long."""
        status = "-" if not self.configured else ("FAIL" if not self.ok else "WARN" if self.warning else "ok")
        head = f"{self.name:<8} {status:<5} "
        first, *more = self.detail.splitlines() or [""]
        lines = [head + first, *(" " * len(head) + part for part in more)]
        return "\n".join(line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…" for line in lines)


def check_otlp(settings: Settings, timeout_s: float = 3.0) -> list[CheckResult]:
    """One result per OTLP endpoint: does it answer an empty export as an OTLP receiver does?"""
    from telemetry_infra.otel.otlp_probe import probe_all

    if settings.sdk_disabled:
        return [CheckResult("otlp", True, "OTEL_SDK_DISABLED=true: nothing is exported", False)]
    if not settings.otlp:
        console = [signal for signal in SIGNALS if settings.exports(signal, "console")]
        where = f"{', '.join(console)} printed to the console" if console else "nothing is exported"
        return [CheckResult("otlp", True, f"no endpoint configured: {where} (embedded default)", False)]
    outcomes: dict[tuple[str, str, str | None], list[str]] = {}
    for signal, error in probe_all(settings.otlp, timeout_s).items():
        export = settings.otlp[signal]
        outcomes.setdefault((export.base_endpoint, export.protocol, error), []).append(signal)
    results = []
    for (where, protocol, error), signals in outcomes.items():
        name = f"{url_without_password(where)} ({protocol}; {', '.join(signals)})"
        if error is None:
            results.append(CheckResult("otlp", True, f"{name} answers OTLP exports"))
        else:
            results.append(CheckResult("otlp", False, f"{name} is not an OTLP receiver here: {error}"))
    return results


def check_variables(env: Mapping[str, str] | None = None) -> list[CheckResult]:
    """Variables that are set but have no effect, or whose value looks mistaken."""
    warnings = configuration_warnings(env)
    unsupported = unsupported_variables(env)
    results = [
        CheckResult("config", True, text, warning=True)
        for name, text in warnings.items()
        if name not in unsupported
    ]
    if unsupported:
        detail = f"set but not supported (no effect): {', '.join(unsupported)}"
        results.append(CheckResult("config", True, detail, warning=True))
    return results


def check_redis(url: str | None, timeout_s: float = 1.0, where: str = "REDIS_URL") -> CheckResult:
    """One node, a Cluster (every seed) or a Sentinel set (every Sentinel, then the primary they name)."""
    if not url:
        return CheckResult("redis", True, "REDIS_URL not set: the cache would run in memory", False)
    from telemetry_infra.cache.redis.check import probe_redis_target
    from telemetry_infra.cache.redis.urls import parse_redis_url

    try:
        target = parse_redis_url(url)
        if target.topology == "redis":
            import redis

            redis.connection.parse_url(url)  # type: ignore[no-untyped-call]  # unannotated in redis-py; what it rejects
    except ValueError as exc:  # malformed: exit 2, naming where it came from
        raise ValueError(f"{where} is not a Redis URL ({url_without_password(url)!r}): {exc}") from None
    ok, detail = probe_redis_target(target, timeout_s)
    return CheckResult("redis", ok, detail)


def check_log_dir(log_dir: str) -> CheckResult:
    """Whether the log files can be written, without creating anything."""
    path = Path(log_dir).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        return CheckResult("logs", False, f"{path} cannot be a directory: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        return CheckResult("logs", False, f"{path} is not writable: no write permission on {existing}")
    if existing == path:
        return CheckResult("logs", True, f"{path} is writable")
    return CheckResult(
        "logs", True, f"{path} does not exist yet; it will be created ({existing} is writable)"
    )


def check_metrics_dir(env: Mapping[str, str] | None = None) -> list[CheckResult]:
    """Whether ``PROMETHEUS_MULTIPROC_DIR``, when set, can hold the workers' metrics files."""
    from telemetry_infra.otel.prometheus_multiprocess import ENV_VAR, directory_problem

    directory = (os.environ if env is None else env).get(ENV_VAR)
    if not directory:
        return []
    problem = directory_problem(directory)
    if problem is not None:
        return [CheckResult("metrics", False, f"{ENV_VAR}={directory} cannot be used:\n{problem}")]
    return [CheckResult("metrics", True, f"{ENV_VAR}={directory} is usable by the workers")]


def run_check(args: argparse.Namespace) -> int:
    settings = Settings.resolve(otlp_endpoint=args.otlp_endpoint, log_dir=args.log_dir)  # exit 2 if malformed
    results = [
        *check_otlp(settings, args.timeout),
        check_redis(
            args.redis_url or os.environ.get("REDIS_URL"),
            args.timeout,
            "--redis-url" if args.redis_url else "environment variable REDIS_URL",
        ),
        check_log_dir(settings.log_dir),
        *check_metrics_dir(),
    ]
    results += check_variables()
    for result in results:
        print(result.line())
    return 0 if all(result.ok for result in results) else 1


def _parser() -> argparse.ArgumentParser:
    from telemetry_infra import __version__

    parser = argparse.ArgumentParser(
        prog="telemetry-infra",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"telemetry-infra {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check",
        help="check the OTLP endpoint, Redis and the log directory",
        description="Check the OTLP endpoint, Redis and the log directory; nothing is written.",
        epilog=CHECK_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--otlp-endpoint", help="default: OTEL_EXPORTER_OTLP_ENDPOINT")
    check.add_argument("--redis-url", help="default: REDIS_URL")
    check.add_argument("--log-dir", help="default: LOG_DIR or ./logs")
    check.add_argument(
        "--timeout",
        type=_at_least(float, 0, exclusive=True),
        default=3.0,
        help="seconds to wait for each answer (default: 3)",
    )
    check.set_defaults(run=run_check)

    demo = commands.add_parser(
        "demo",
        help="run a small simulated service that emits logs, traces and metrics",
        description="Run a small simulated service that emits logs, traces and metrics.",
        epilog=DEMO_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--requests", type=_at_least(int, 1), default=50, help="how many requests (default: 50)"
    )
    demo.add_argument("--redis-url", help="default: REDIS_URL; without it the cache runs in memory")
    demo.add_argument("--forever", action="store_true", help="keep serving until interrupted (for compose)")
    demo.add_argument("--interval", type=float, default=None, help="seconds between requests")
    demo.add_argument("--log-dir", help="default: LOG_DIR or ./logs")
    demo.add_argument("--verbose", action="store_true", help="also print every log record to the console")
    demo.add_argument(
        "--traces",
        type=_at_least(int, 0),
        default=None,
        help="print the first N traces as trees (default: 1 when nothing is exported over OTLP, else 0)",
    )
    demo.set_defaults(run=run_demo)
    return parser


def _at_least(kind: Callable[[str], Any], minimum: float, *, exclusive: bool = False) -> Callable[[str], Any]:
    """An argparse ``type``: a number of ``kind`` from ``minimum`` (above it when ``exclusive``)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if value < minimum or (exclusive and value == minimum):
            bound = f"more than {minimum}" if exclusive else f"at least {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text!r}")
        return value

    return parse


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
