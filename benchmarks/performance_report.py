"""Run the peer comparisons and write their tables and plots into docs/performance.md.

    pip install -e '.[bench]'
    python benchmarks/performance_report.py --runs 2          # run every script twice, then write
    python benchmarks/performance_report.py --from DIR        # write from <name>-<run>.json files

Scripts: ``peer_cache.py``, ``peer_logging.py``, ``peer_asgi.py`` and ``export_cost.py``,
each with ``--json``; ``peer_asgi.py`` and ``export_cost.py`` also with the process busy
half the time (``--load 0.5``). The page's text between ``<!-- peers:begin -->`` and
``<!-- peers:end -->`` is replaced: a summary table (ours, the best peer and the floor, in
µs and ratios; ranges over the runs), a table per hot path, a PNG plot per hot path under
``docs/assets/performance/``, and for each target not met in every run, why. Everything
else on the page is left as written.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "performance.md"
PLOTS = ROOT / "docs" / "assets" / "performance"
BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"

#: result name -> (script, its arguments); results are ``<name>-<run>.json``
SCRIPTS: dict[str, tuple[str, list[str]]] = {
    "peer_cache": ("peer_cache", []),
    "peer_logging": ("peer_logging", []),
    "peer_asgi": ("peer_asgi", []),
    "peer_asgi_half_load": ("peer_asgi", ["--load", "0.5"]),
    "export_cost": ("export_cost", ["--rounds", "3", "--requests", "2000"]),
    "export_cost_half_load": ("export_cost", ["--rounds", "3", "--requests", "2000", "--load", "0.5"]),
}

WHY_NOT_MET = {
    "near hit": (
        "A near hit is a lock, a dict look-up and a deadline check, the duration recorded (two "
        "clock reads and a bucket update) and a fresh copy decoded from the body prepared at the "
        "fill; the copy is most of the 1 KB case. cashews `client_side` hands out the object it "
        "stores (a caller that changes it changes the cache); ours never shares it."
    ),
    "memory-backend hit": (
        "The hit is one look-up and one `orjson.loads` of a fresh copy, as the floor's (the "
        "entry keeps a view of its body, prepared when it was written); what is left of ours "
        "is the coroutine the caller awaits and the key's namespace, about 0.2 µs. aiocache "
        "and cashews hand out the stored object (no copy) and are still slower."
    ),
    "one JSON record": (
        "Most of a record's cost is the standard library's, paid by the floor too: making the "
        "`LogRecord`, finding the call site, passing it through each handler's lock and filters, "
        "and one `write()`. What is ours (the correlation filter, about 0.5 µs; the JSON line, "
        "about 2 µs) leaves little to cut while keeping every field of the record. "
        "`setup_logging()` adds about 1 µs: the record also passes the `error.log`, `api.log` "
        "and `model.log` handlers, which skip it."
    ),
    "ASGI": (
        "The time is the whole process's CPU, the export thread's included. Ours makes its "
        "SERVER span in one pass over the headers and builds it when the request ends (a light "
        "span, no live SDK span); what is left is mostly the access record: formatted once, "
        "written to `app.log` and `api.log` and encoded for OTLP, about half of the added time. "
        "With requests back to back, those two writes a request also release the GIL while the "
        "export thread waits to take it back during a send, which makes its sends cost more (see "
        "OTLP export below); the peer stack writes no access record. With the process busy half "
        "of the time (the row below) that cost mostly goes. FastAPI's own telemetry is turned off "
        "under `instrument_app`, so it is never paid twice."
    ),
    "export CPU": (
        "Counted in instructions executed, all threads (`export_cost.py --instructions`, under "
        "callgrind), our export is 0.16x the stock stack's on gRPC and 0.20x on HTTP: spans and "
        "records are encoded where they are made, a sixth of the SDK encoder's cost, and the "
        "export thread only groups and sends the bytes. CPU time says more because of CPython's "
        "GIL: while the thread waits to take it back during a send, every `write()` of the "
        "request loop to its log files releases it and wakes the thread for nothing (1.1-1.7 "
        "wake-ups a request, 0.03 when the lines are not written: `export_cost.py --why`), and "
        "each wake-up costs both threads time in which nothing is executed. Getting below 0.25x "
        "in CPU time needs a send that never takes the GIL back while the application runs (a "
        "process of its own, or a transport in C); see OTLP export below."
    ),
}


# ------------------------------------------------------------------ running


def run_scripts(runs: int, directory: Path) -> None:
    for run in range(1, runs + 1):
        for name, (script, extra) in SCRIPTS.items():
            output = directory / f"{name}-{run}.json"
            print(f"run {run}: {script} {' '.join(extra)}", flush=True)
            subprocess.run(
                [sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--json", str(output), *extra],
                check=True,
                cwd=ROOT,
            )


def load(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """``{row name: [the row's result in each run]}``, in the scripts' order."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for name in SCRIPTS:
        for path in sorted(directory.glob(f"{name}-*.json")):
            for row in json.loads(path.read_text())["rows"]:
                rows.setdefault(row["row"], []).append(row)
    if not rows:
        raise SystemExit(f"no <script>-<run>.json results in {directory}")
    return rows


# ------------------------------------------------------------------ rendering


def span(values: Sequence[float], digits: int = 2) -> str:
    """``1.23`` for one run or equal values, ``1.23-1.45`` (an en dash) for a range."""
    low, high = min(values), max(values)
    if f"{low:.{digits}f}" == f"{high:.{digits}f}":
        return f"{low:.{digits}f}"
    return f"{low:.{digits}f}\u2013{high:.{digits}f}"


def us(values: Sequence[float]) -> str:
    return span(values, 0 if min(values) >= 100 else 2 if min(values) < 10 else 1) + " µs"


def case_values(runs: list[dict[str, Any]], name: str, key: str) -> list[float]:
    return [
        case[key] for run in runs for case in run["cases"] if case["name"] == name and case[key] is not None
    ]


def cost_of(run: dict[str, Any], name: str) -> float:
    """A case's figure: the overhead over the plain app where the row measures one."""
    if "overhead_us" in run and name in run["overhead_us"]:
        return float(run["overhead_us"][name])
    return float(next(case["median_us"] for case in run["cases"] if case["name"] == name))


def why(row_name: str) -> str:
    return next((text for prefix, text in WHY_NOT_MET.items() if prefix in row_name), "")


def summary_table(rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = [
        "| hot path | floor | best peer | ours | ours / reference | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in rows.items():
        first = runs[0]
        ours = next(case["name"] for case in first["cases"] if case["role"] == "ours")
        peer = first["best_peer"]
        floor = first["floor"] or ""
        floor_text = ""
        if floor and "subtracted" not in floor and case_values(runs, floor, "median_us"):
            floor_text = f"{floor}: {us(case_values(runs, floor, 'median_us'))}"
        elif "floor_us" in first:
            floor_text = f"{floor}: {us([run['floor_us'] for run in runs])}"
        added = "+" if "overhead_us" in first else ""  # a web row shows what a stack adds
        peer_text = f"{peer}: {added}{us([cost_of(run, peer) for run in runs])}" if peer else "—"
        ours_text = added + us([cost_of(run, ours) for run in runs])
        target = first["target"]
        if target is None:
            lines.append(f"| {name} | {floor_text} | {peer_text} | {ours_text} | | | |")
            continue
        ratios = [run["target"]["ratio"] for run in runs]
        met = [run["target"]["met"] for run in runs]
        verdict = "yes" if all(met) else "no" if not any(met) else f"{sum(met)} of {len(met)} runs"
        reference = "floor" if target["reference"] == floor else target["reference"]
        of = f" ({target['of']})" if target.get("of") else ""
        lines.append(
            f"| {name} | {floor_text} | {peer_text} | {ours_text} | {span(ratios)}x {reference}{of} "
            f"| <= {target['limit']}x | {verdict} |"
        )
    return lines


def row_table(runs: list[dict[str, Any]]) -> list[str]:
    first = runs[0]
    overhead = "overhead_us" in first
    header = "| case | µs per call (median of rounds) | x floor |"
    if overhead:
        header = "| case | µs per request | added over plain FastAPI |"
    lines = [header, "|---|---|---|"]
    for case in first["cases"]:
        name = case["name"]
        cost = us(case_values(runs, name, "median_us"))
        if overhead:
            added = "" if case["role"] == "floor" else "+" + us([run["overhead_us"][name] for run in runs])
            lines.append(f"| {name} | {cost} | {added} |")
            continue
        x_floor = case_values(runs, name, "x_floor")
        delivered = ""
        if "delivered" in case:
            delivered = (
                " (all delivered)" if all(c["delivered"] for c in _cases(runs, name)) else " (some lost)"
            )
        lines.append(f"| {name}{delivered} | {cost} | {span(x_floor) + 'x' if x_floor else ''} |")
    return lines


def _cases(runs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [case for run in runs for case in run["cases"] if case["name"] == name]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]


def plot(name: str, runs: list[dict[str, Any]]) -> str:
    """A horizontal bar per case (median over runs, the runs' range as the error bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = runs[0]
    labels, middles, lows, highs, colours = [], [], [], [], []
    palette = {"ours": "#2b8a3e", "peer": "#868e96", "floor": "#1c7ed6"}
    for case in first["cases"]:
        values = [cost_of(run, case["name"]) for run in runs]
        if "overhead_us" in first and case["role"] == "floor":
            continue
        middle = sorted(values)[len(values) // 2]
        labels.append(case["name"])
        middles.append(middle)
        lows.append(middle - min(values))
        highs.append(max(values) - middle)
        colours.append(palette.get(case["role"], "#74b816"))
    figure, axes = plt.subplots(figsize=(8, 0.5 * len(labels) + 1.2))
    positions = range(len(labels))
    axes.barh(positions, middles, xerr=[lows, highs], color=colours, capsize=3)
    axes.set_yticks(list(positions), labels, fontsize=8)
    axes.invert_yaxis()
    unit = "µs added per request" if "overhead_us" in first else "µs per call"
    axes.set_xlabel(f"{unit} (bar: median of {len(runs)} runs; line: their range)")
    axes.set_title(name, fontsize=10)
    figure.tight_layout()
    PLOTS.mkdir(parents=True, exist_ok=True)
    file_name = f"{slug(name)}.png"
    figure.savefig(PLOTS / file_name, dpi=90)
    plt.close(figure)
    return f"assets/performance/{file_name}"


def render(rows: dict[str, list[dict[str, Any]]]) -> str:
    counts = {len(runs) for runs in rows.values()}
    lines = [
        "## Against the peers",
        "",
        f"Generated by `python benchmarks/performance_report.py` from {'/'.join(map(str, sorted(counts)))} "
        f"run{'s' if max(counts) > 1 else ''} of each script (a range is the lowest and highest of "
        "the runs). Ratios compare the medians of interleaved rounds; the floor is named in each "
        "row. Peers as installed by the `bench` extra.",
        "",
        *summary_table(rows),
        "",
    ]
    for name, runs in rows.items():
        first = runs[0]
        lines += [f"### {name}", ""]
        if first.get("note"):
            lines += [f"{first['note'][0].upper()}{first['note'][1:]}.", ""]
        lines += [*row_table(runs), "", f"![{name}]({plot(name, runs)})", ""]
        target = first["target"]
        if target is not None and not all(run["target"]["met"] for run in runs):
            explanation = why(name)
            lines += [f"**Target not met** (<= {target['limit']}x). {explanation}".rstrip(), ""]
    return "\n".join(lines)


def replace_section(page: str, section: str) -> str:
    head, begin, rest = page.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"{PAGE} has no {BEGIN} ... {END} markers")
    return f"{head}{BEGIN}\n{section.rstrip()}\n{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="runs of each script (default %(default)s)")
    parser.add_argument("--from", dest="source", type=Path, help="read <name>-<run>.json from here")
    parser.add_argument("--keep", type=Path, help="keep the scripts' JSON results in this directory")
    args = parser.parse_args()
    if args.source is not None:
        rows = load(args.source)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            directory = args.keep or Path(scratch)
            directory.mkdir(parents=True, exist_ok=True)
            run_scripts(args.runs, directory)
            rows = load(directory)
    PAGE.write_text(replace_section(PAGE.read_text(), render(rows)))
    print(f"wrote {PAGE.relative_to(ROOT)} and {len(rows)} plots under {PLOTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
