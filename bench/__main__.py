"""The benchmark's command line: ``python -m bench [--parts ...] [--quick]`` from the repository root.

Runs the parts asked for, prints their report and writes it under ``bench/results/``. Timings
are never asserted; it exits 1 only when something is broken (a lost update, a failed write, a
dropped connection, a dead process), and 130 on Ctrl-C or SIGTERM, after stopping every process
it started and writing nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import Broken
from bench import report as reports
from bench.cluster import SETTINGS, Deployment
from bench.lag import lag_case
from bench.latency import embedded_row, redis_fanout_case, run_fanout
from bench.overhead import run_overhead
from bench.plans import PLANS, FanoutPlan, Plan
from bench.roundtrips import round_trip_case
from bench.servers import log_problems
from bench.tables import text_table
from bench.workload import close_all, raise_fd_limit
from harness.cluster import Cluster
from harness.processes import ROOT
from harness.services import scratch_parent

PARTS = {
    "latency": "commit -> subscriber latency on the embedded backend, N = 1, 100, 1,000",
    "overhead": "what write tracking adds to plain ORM writes",
    "redis-latency": "commit -> client latency on the Redis backend, beside the embedded backend",
    "roundtrips": "Redis commands per committed write (MONITOR)",
    "lag": "the invalidator's lag under 500 writes/s (Redis backend)",
}
EMBEDDED_PARTS = {"latency", "overhead"}
REDIS_PARTS = {"redis-latency", "roundtrips", "lag"}


def parse_parts(value: str) -> list[str]:
    parts = list(PARTS) if value == "all" else [part.strip() for part in value.split(",") if part.strip()]
    unknown = [part for part in parts if part not in PARTS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}"
        )
    return parts


def parser() -> argparse.ArgumentParser:
    described = "\n".join(f"  {name:14} {what}" for name, what in PARTS.items())
    result = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of django-reactive-queries (see bench/README.md).",
        epilog=f"parts:\n{described}\n\nThe Redis parts need redis-server and Postgres's server binaries.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    result.add_argument(
        "--parts",
        type=parse_parts,
        default=["latency", "overhead"],
        help="comma-separated parts to run, or 'all' (default: latency,overhead: the embedded backend)",
    )
    result.add_argument(
        "--quick",
        action="store_true",
        help="tiny counts, a few seconds a part: a smoke test; writes under bench/results/quick/",
    )
    result.add_argument("--only", help="comma-separated subscriber counts of the latency part (e.g. 1000)")
    return result


class EmbeddedRuns:
    """Embedded latency runs, each measured once per invocation: the Redis report's rows beside
    the Redis backend are the same plans as the latency part's."""

    def __init__(self, directory: Path, warmup: int) -> None:
        self.directory = directory
        self.warmup = warmup
        self.results: dict[FanoutPlan, dict[str, Any]] = {}

    def run(self, fanout: FanoutPlan, label: str = "") -> dict[str, Any]:
        if fanout not in self.results:
            workdir = self.directory / f"n{fanout.subscribers}-{len(self.results)}"
            workdir.mkdir()
            print(
                f"  {label}N={fanout.subscribers}: {fanout.writes} writes at {fanout.rate:g}/s ...",
                flush=True,
            )
            self.results[fanout] = run_fanout(fanout, self.warmup, workdir)
        return self.results[fanout]


def run_embedded_parts(plan: Plan, parts: list[str], runs: EmbeddedRuns, report: dict[str, Any]) -> None:
    if "latency" in parts:
        for fanout in plan.fanout:
            report["fanout"].append(runs.run(fanout))
    if "overhead" in parts:
        print(f"  write overhead: {plan.overhead_iterations} ops x {plan.overhead_repeats} ...", flush=True)
        try:
            report["overhead"] = run_overhead(plan, runs.directory)
        except Broken as exc:
            report["overhead_problems"] = [str(exc)]


def run_redis_parts(plan: Plan, parts: list[str], runs: EmbeddedRuns, report: dict[str, Any]) -> None:
    if "redis-latency" in parts:
        for fanout in (plan.redis_floor, plan.redis_fanout):
            report["latency"].append(embedded_row(runs.run(fanout, "embedded ")))

    directory = Path(tempfile.mkdtemp(prefix="reactive-bench-cluster-", dir=scratch_parent()))
    directory.chmod(0o755)  # as root, Postgres runs as another user inside it
    try:
        print("  starting redis, postgres, servers A and B, the worker ...", flush=True)
        try:
            cluster = Cluster.create(directory, SETTINGS, log_level="WARNING")
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:  # not installed, not up
            report["problems"].append(f"Redis and Postgres did not start: {type(exc).__name__}: {exc}")
            return
        try:
            deployment = Deployment.start(cluster)
            report["machine"].update(deployment.versions())
            asyncio.run(measure_redis(deployment, plan, parts, report))
            dead = cluster.dead()
            if dead:
                report["problems"].append(f"process(es) died during the run: {', '.join(dead)}")
        except Broken as exc:
            report["problems"].append(str(exc))
        finally:
            report["process_exit"] = cluster.stop()
            report["logs"] = {p.name: log_problems(p) for p in cluster.processes}
            for w in range(plan.lag_writers):
                log = directory / f"writer{w}.log"
                if log.exists() and log.read_text(errors="replace").strip():
                    report["logs"][f"writer {w}"] = log.read_text(errors="replace").splitlines()[:60]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def measure_redis(deployment: Deployment, plan: Plan, parts: list[str], report: dict[str, Any]) -> None:
    primers = await deployment.prime()
    try:
        if "redis-latency" in parts:
            half = plan.redis_fanout.subscribers // 2
            for fanout, split in (
                (plan.redis_floor, {"A": 0, "B": 1}),
                (plan.redis_fanout, {"A": half, "B": plan.redis_fanout.subscribers - half}),
            ):
                print(
                    f"  redis N={fanout.subscribers}: {fanout.writes} writes at {fanout.rate:g}/s ...",
                    flush=True,
                )
                try:
                    report["latency"].append(await redis_fanout_case(deployment, fanout, plan.warmup, split))
                except Broken as exc:
                    report["latency"].append(
                        {"backend": "redis", "subscribers": fanout.subscribers, "problems": [str(exc)]}
                    )
                await deployment.settle()
        if "roundtrips" in parts:
            print(f"  redis round trips: MONITOR windows of {plan.rt_writes} writes ...", flush=True)
            try:
                report["round_trips"] = await round_trip_case(deployment, plan)
            except Broken as exc:
                report["round_trips"] = {"problems": [str(exc)]}
            await deployment.settle()
        if "lag" in parts:
            print(
                f"  redis lag: {plan.lag_rate:g} writes/s for {plan.lag_seconds:g} s over "
                f"{plan.lag_counters} counters ...",
                flush=True,
            )
            try:
                report["lag"] = await lag_case(deployment, plan)
            except Broken as exc:
                report["lag"] = {"problems": [str(exc)]}
    finally:
        await close_all(primers)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    options = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    parts = options.parts
    plan = PLANS["quick" if options.quick else "full"]
    if options.only:
        wanted = {int(n) for n in options.only.split(",")}
        plan = dataclasses.replace(plan, fanout=tuple(f for f in plan.fanout if f.subscribers in wanted))
    exe = Path(sys.executable)
    if exe.is_relative_to(ROOT):
        exe = exe.relative_to(ROOT)
    command = shlex.join([str(exe), "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    fd_limit = list(raise_fd_limit())  # the subprocesses inherit it
    machine = reports.machine_facts(command)
    print(f"{command}  ({machine['date']}, nproc {machine['nproc']})", flush=True)
    written: list[tuple[str, dict[str, Any]]] = []  # (report name, report)

    with tempfile.TemporaryDirectory(prefix="reactive-bench-") as tmp:
        runs = EmbeddedRuns(Path(tmp), plan.warmup)
        if EMBEDDED_PARTS & set(parts):
            latency = {"plan": plan.name, "machine": dict(machine), "fd_limit": fd_limit, "fanout": []}
            run_embedded_parts(plan, parts, runs, latency)
            latency["machine"]["load_average_at_end"] = reports.load_average()
            written.append(("latency", latency))
        if REDIS_PARTS & set(parts):
            machine["load_average_at_start"] = reports.load_average()
            cluster = {
                "plan": plan.name,
                "machine": dict(machine),
                "fd_limit": fd_limit,
                "latency": [],
                "problems": [],
            }
            run_redis_parts(plan, parts, runs, cluster)
            cluster["machine"]["load_average_at_end"] = reports.load_average()
            written.append(("cluster", cluster))

    broken: list[str] = []
    for name, report in written:
        render, markdown, problems = {
            "latency": (reports.render_latency, reports.latency_markdown, reports.latency_problems),
            "cluster": (reports.render_cluster, reports.cluster_markdown, reports.cluster_problems),
        }[name]
        print()
        print(render(report, text_table))
        paths = reports.write_results(name, report, markdown(report), options.quick)
        print(f"\nwrote {' and '.join(str(path.relative_to(ROOT)) for path in paths)}")
        broken += problems(report)
    if broken:
        print(f"\nBROKEN: {len(broken)} problem(s), see above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; every process stopped, nothing written", file=sys.stderr)
        sys.exit(130)
