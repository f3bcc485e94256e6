"""Interleaved rounds and the result format shared by the peer comparison scripts.

Each script measures *rows* (one hot path each). A row has a named floor, our
case and the peers' cases; every round runs all of them once, alternating the
order, and records the calling thread's CPU time per operation. A row reports the
best round and the median round of each case, ratios to the floor and to the best
peer, and whether its target is met. ``--json`` writes these rows for
``performance_report.py``; ``--markdown`` prints them as a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Measure = Callable[[int], float]
"""Runs ``n`` operations and returns the CPU seconds they took (the caller's thread)."""


def timed(operation: Callable[[], object]) -> Measure:
    """A :data:`Measure` calling ``operation`` ``n`` times in a plain loop."""

    def measure(n: int) -> float:
        started = time.thread_time()
        for _ in range(n):
            operation()
        return time.thread_time() - started

    return measure


@dataclass
class Case:
    """One way of doing the row's work: ``role`` is ``floor``, ``ours`` or ``peer``."""

    name: str
    role: str
    measure: Measure
    times_us: list[float] = field(default_factory=list)

    @property
    def best_us(self) -> float:
        return min(self.times_us)

    @property
    def median_us(self) -> float:
        return statistics.median(self.times_us)


@dataclass
class Row:
    """A hot path: its floor, ours and peers, and the target (``ours <= limit x reference``)."""

    name: str
    cases: list[Case]
    target_limit: float | None = None
    target_reference: str = "peer"  # "peer" (the best peer) or "floor"
    note: str = ""

    def case(self, role: str) -> Case:
        return next(case for case in self.cases if case.role == role)

    def best_peer(self) -> Case | None:
        peers = [case for case in self.cases if case.role == "peer"]
        return min(peers, key=lambda case: case.median_us) if peers else None

    def result(self) -> dict[str, Any]:
        floor = next((case for case in self.cases if case.role == "floor"), None)
        ours = self.case("ours")
        peer = self.best_peer()
        reference = floor if self.target_reference == "floor" else peer
        ratio = ours.median_us / reference.median_us if reference is not None else None
        paired = None
        if reference is not None:
            paired = statistics.median(o / r for o, r in zip(ours.times_us, reference.times_us, strict=True))
        return {
            "row": self.name,
            "note": self.note,
            "rounds": len(ours.times_us),
            "floor": floor.name if floor else None,
            "cases": [
                {
                    "name": case.name,
                    "role": case.role,
                    "best_us": case.best_us,
                    "median_us": case.median_us,
                    "x_floor": case.median_us / floor.median_us if floor else None,
                }
                for case in self.cases
            ],
            "best_peer": peer.name if peer else None,
            "target": None
            if self.target_limit is None
            else {
                "reference": reference.name if reference else None,
                "limit": self.target_limit,
                "ratio": ratio,
                "paired_ratio": paired,
                "met": ratio is not None and ratio <= self.target_limit,
            },
        }


def run_rows(rows: Sequence[Row], rounds: int, per_round: int, warmup: int = 200) -> None:
    """Measure every case of every row, ``rounds`` times, alternating the order each round."""
    for row in rows:
        for case in row.cases:
            case.measure(warmup)
    for round_number in range(rounds):
        for row in rows:
            order = row.cases if round_number % 2 == 0 else list(reversed(row.cases))
            for case in order:
                case.times_us.append(case.measure(per_round) / per_round * 1e6)


def arguments(description: str, rounds: int, per_round: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds, help="interleaved rounds (default %(default)s)")
    parser.add_argument("--per-round", type=int, default=per_round, help="operations per case and round")
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON for performance_report.py")
    parser.add_argument("--markdown", action="store_true", help="print the rows as a Markdown table")
    return parser


PACED_GROUP = 4
"""Below full load, the requests run this many at a time, then the process waits."""


def add_load_argument(parser: argparse.ArgumentParser) -> None:
    """``--load``: the share of the time the process is busy (1, the default: back to back)."""
    parser.add_argument(
        "--load",
        type=_load,
        default=1.0,
        help="share of the time the process is busy, in (0, 1]; below 1, after every "
        f"{PACED_GROUP} requests it waits (default 1: requests back to back)",
    )


def _load(text: str) -> float:
    load = float(text)
    if not 0 < load <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return load


def idle_after(busy_s: float, load: float) -> float:
    """How long to wait after ``busy_s`` of work so the process is busy ``load`` of the time."""
    return busy_s * (1 / load - 1)


def load_label(load: float) -> str:
    """What a row's name adds below full load."""
    return "" if load >= 1 else f", the process busy {load:.0%} of the time"


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| hot path | case | µs (median / best) | x floor | target |", "|---|---|---|---|---|"]
    for result in results:
        target = result["target"]
        verdict = ""
        if target is not None:
            met = "met" if target["met"] else "NOT met"
            verdict = f"{target['ratio']:.2f}x {target['reference']} (<= {target['limit']}): {met}"
        for index, case in enumerate(result["cases"]):
            x_floor = f"{case['x_floor']:.2f}" if case["x_floor"] is not None else ""
            row, row_verdict = (result["row"], verdict) if index == 0 else ("", "")
            lines.append(
                f"| {row} | {case['name']} ({case['role']}) | "
                f"{case['median_us']:.2f} / {case['best_us']:.2f} | {x_floor} | {row_verdict} |"
            )
    return "\n".join(lines)


def report(script: str, rows: Sequence[Row], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Print the table and the one-line summary; write ``--json`` if asked."""
    results = [row.result() for row in rows]
    if args.markdown:
        print(markdown(results))
    else:
        print(f"\n{'row / case':<58}{'median µs':>10}{'best µs':>9}{'x floor':>9}")
        for result in results:
            print(f"{result['row']}  (floor: {result['floor']})")
            for case in result["cases"]:
                x_floor = f"{case['x_floor']:.2f}" if case["x_floor"] is not None else ""
                label = f"  {case['name']} [{case['role']}]"
                print(f"{label:<58}{case['median_us']:>10.2f}{case['best_us']:>9.2f}{x_floor:>9}")
    if summary(results):
        print(summary(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"script": script, "python": sys.version.split()[0], "rows": results}, out, indent=1)
    return results


def summary(results: list[dict[str, Any]]) -> str:
    """One line: each row's ratio against its target reference."""
    parts = []
    for result in results:
        target = result["target"]
        if target is None:
            continue
        mark = "ok" if target["met"] else "MISSED"
        parts.append(
            f"{result['row']}: {target['ratio']:.2f}x {target['reference']} (<= {target['limit']}, {mark})"
        )
    return "summary: " + "; ".join(parts) if parts else ""
