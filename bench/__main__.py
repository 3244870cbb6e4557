"""The benchmark's command line: ``python -m bench [--quick] [--scenarios ...] [--systems ...]
[--merge JSON]``.

Runs the scenarios on our two backends and the baselines, prints every figure, writes
``bench/results/<UTC date>.json``, ``BENCHMARKS.md`` and the plots (``--quick``: under
``bench/results/quick/``, ignored by git). A full-plan run of some scenarios or systems writes
only its JSON; ``--merge`` folds it into an earlier run's report first (``bench.merge``).
Timings are never asserted: it exits 1 only when something is broken (a lost update or a failed
write on our systems, a server of ours that died or could not start, a scenario that could not
run), and 130 on Ctrl-C or SIGTERM, after stopping every process it started and writing nothing.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import merge as merging
from bench import report as reports
from bench.plans import PLANS
from bench.suite import SCENARIOS, Suite
from bench.systems import SYSTEMS
from harness.processes import ROOT
from harness.services import scratch_parent

DESCRIPTIONS = {
    "latency": "1. commit -> client latency, 1 to 5,000 subscribers over 100 instances, 10 and 200 writes/s",
    "fanout": "2. one write to N subscribers of one instance (N up to 10,000); 5. memory per connection",
    "external": "commit -> client latency of writes from another server and a plain Django process",
    "writes": "3. writes/s with 0 and 10,000 subscriptions against plain Django; sustained rate",
    "precision": "4. re-runs that changed a result, chat workload, rows against tables",
    "tracking": "tracking overhead on ORM writes, in-process (plain, unwatched, watched)",
    "profile": "py-spy flame graph of the server during a fan-out to 1,000 subscribers (full plan only)",
    "roundtrips": "Redis diagnostic: Redis commands per committed write, per process (MONITOR)",
    "lag": "Redis diagnostic: the invalidator's lag under writes from other processes",
}


def parse_list(choices: list[str]):
    def parse(value: str) -> list[str]:
        items = [item.strip() for item in value.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown: {', '.join(unknown)}; choose from {', '.join(choices)}"
            )
        return items

    return parse


def parser() -> argparse.ArgumentParser:
    scenarios = "\n".join(f"  {name:10} {what}" for name, what in DESCRIPTIONS.items())
    systems = "\n".join(f"  {name:15} {system.label}" for name, system in SYSTEMS.items())
    result = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of django-reactive-queries against the alternatives (see bench/README.md).",
        epilog=f"scenarios:\n{scenarios}\n\nsystems:\n{systems}\n\n"
        "The Redis backend needs redis-server and Postgres's server binaries.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    result.add_argument(
        "--quick", action="store_true", help="tiny counts, one repeat (CI); under results/quick/"
    )
    result.add_argument("--scenarios", type=parse_list(list(SCENARIOS)), default=list(SCENARIOS))
    result.add_argument("--systems", type=parse_list(list(SYSTEMS)), default=None, help="default: all")
    result.add_argument(
        "--merge",
        metavar="JSON",
        type=Path,
        help="a run of some scenarios or systems: write BENCHMARKS.md and the plots from this earlier "
        "run's JSON with what this run measured in place of its figures (results/<date>-merged.json; "
        "each scenario labelled with its run and commit)",
    )
    result.add_argument(
        "--render",
        metavar="JSON",
        type=Path,
        help="run nothing: write BENCHMARKS.md and the plots again from a run's JSON (after a change "
        "to the report or the targets)",
    )
    return result


def render_again(path: Path) -> int:
    path = path.resolve()
    report = json.loads(path.read_text())
    reports.finish(report, keep_load=True)
    print(reports.render_text(report))
    quick = report["plan"] == "quick"
    written = reports.write(report, quick, json_path=path)
    print("\nwrote " + ", ".join(str(p.relative_to(ROOT)) for p in written))
    return 0


def write_results(report: dict[str, Any], options: argparse.Namespace) -> list[Path]:
    """A whole run (or any quick one): its JSON, BENCHMARKS.md and the plots. A full-plan run of
    some scenarios or systems: its JSON under a name of its own, and BENCHMARKS.md only merged
    into an earlier run (``--merge``), never from a part alone."""
    if options.quick or not merging.is_partial(report["scenarios"], report["systems"]):
        return reports.write(report, options.quick)
    date = report["machine"]["date"][:10]
    name = "+".join(report["scenarios"]) + ("-" + "+".join(report["systems"]) if report["systems"] else "")
    path = reports.results_directory(False) / f"{date}-{name}.json"
    reports.write_json(report, path)
    if options.merge is None:
        print("\na partial run: BENCHMARKS.md left as it was (--merge <earlier run's JSON> folds it in)")
        return [path]
    base = options.merge.resolve()
    merged = merging.merge(json.loads(base.read_text()), report, base.name, path.name)
    reports.finish(merged, keep_load=True)
    return [
        path,
        *reports.write(merged, False, json_path=reports.results_directory(False) / f"{date}-merged.json"),
    ]


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    options = parser().parse_args(argv)
    if options.render:
        return render_again(options.render)
    if options.merge is not None:
        if options.quick or not merging.is_partial(options.scenarios, options.systems):
            parser().error("--merge folds a full-plan run of some scenarios or systems into an earlier run")
        if not options.merge.is_file():
            parser().error(f"--merge: no such file {options.merge}")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    plan = PLANS["quick" if options.quick else "full"]
    exe = Path(sys.executable)
    if exe.is_relative_to(ROOT):
        exe = exe.relative_to(ROOT)
    command = shlex.join([str(exe), "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    report = reports.new_report(plan, command, options.scenarios, options.systems)
    print(f"{command}  ({report['machine']['date']}, nproc {report['machine']['nproc']})", flush=True)
    began = time.monotonic()
    results = reports.results_directory(options.quick)
    with tempfile.TemporaryDirectory(prefix="reactive-bench-", dir=scratch_parent()) as tmp:
        systems = set(options.systems) if options.systems else None
        Suite(plan, Path(tmp), results, report, systems).run(options.scenarios)
    report["seconds"]["total"] = round(time.monotonic() - began, 1)
    reports.finish(report)
    print()
    print(reports.render_text(report))
    paths = write_results(report, options)
    print("\nwrote " + ", ".join(str(path.relative_to(ROOT)) for path in paths))
    if report["problems"]:
        print(f"\nBROKEN: {len(report['problems'])} problem(s):", file=sys.stderr)
        for problem in report["problems"]:
            print(f"  {problem[:600]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; every process stopped, nothing written", file=sys.stderr)
        sys.exit(130)
