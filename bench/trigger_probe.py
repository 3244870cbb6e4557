"""Probe (not shipped): what the change log would cost SQLite writes if triggers appended it.

Today the capture appends one change record per transaction from Python: in autocommit mode
that is a ``BEGIN``, the record's ``INSERT`` and a ``COMMIT`` of its own around the write, three
statements more than plain Django runs, besides the Python that builds the record. This probe
measures the other design on the ORM writes of the tracking part (``bench/overhead_worker.py``),
with ``reactive`` not installed: ``TEMP`` triggers on ``benchapp_item`` append each row's image,
built by SQLite (``json_object`` of ``NEW``/``OLD``, values as typed text), to a log table inside
the write's own statement. What it leaves out, and a real design would need: one record per
transaction rather than per row, every field type's canonical text, the origin, the watched
columns of an update.

    python -m bench.trigger_probe             # instructions (callgrind) and CPU time
    python -m bench.trigger_probe --no-count  # CPU time only (no valgrind)

Instructions: plain, trigger and reactive's unwatched capture, each counted under callgrind as
``bench.overhead.count_instructions`` does. CPU time: rounds in one process, alternating with and
without the triggers (created and dropped between rounds); each ratio is the median of the
rounds' ratios. Prints a table and writes ``bench/results/<date>-trigger-probe.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.overhead import count_rounds
from bench.overhead_worker import OPERATION_LABELS, OPERATIONS, callgrind_marker, one_round
from bench.servers import embedded_env
from bench.tables import md_table
from harness.processes import ROOT

LOG = "probe_changelog"
TABLE = "benchapp_item"
COLUMNS = ("id", "group", "value")


def _image(row: str) -> str:
    """SQL for the typed-text image of ``row`` (``NEW`` or ``OLD``) of an item."""
    return "json_object(" + ", ".join(f"'{c}', 'i' || {row}.\"{c}\"" for c in COLUMNS) + ")"


def _trigger(event: str, old: str, new: str) -> str:
    return (
        f"CREATE TEMP TRIGGER IF NOT EXISTS probe_{event.lower()} AFTER {event} ON main.{TABLE} BEGIN "
        f"INSERT INTO {LOG} (created, changes) VALUES (unixepoch(), "
        f"json_object('rows', json_array(json_array('{TABLE}', {old}, {new})))); END"
    )


TRIGGERS = {
    "insert": _trigger("INSERT", "NULL", _image("NEW")),
    "update": _trigger("UPDATE", _image("OLD"), _image("NEW")),
    "delete": _trigger("DELETE", _image("OLD"), "NULL"),
}


def _set_up_plain() -> Any:
    """Django with ``bench.settings_plain`` on a fresh database, and the probe's log table."""
    from bench.overhead_worker import _set_up

    _set_up(["plain"])
    from django.db import connection

    connection.ensure_connection()
    raw = connection.connection
    raw.execute(
        f"CREATE TABLE IF NOT EXISTS {LOG} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "created INTEGER NOT NULL, changes TEXT NOT NULL)"
    )
    return raw


def _triggers(raw: Any, on: bool) -> None:
    for name, sql in TRIGGERS.items():
        raw.execute(sql if on else f"DROP TRIGGER IF EXISTS temp.probe_{name}")


def worker_count(variant: str, iterations: int) -> None:
    """One round under callgrind, as ``overhead_worker.count_round``: a warm-up round, then the
    round with ``callgrind_marker`` around each loop."""
    raw = _set_up_plain()
    _triggers(raw, variant == "trigger")
    one_round(max(10, iterations // 10))
    one_round(iterations, callgrind_marker)
    if variant == "trigger":
        _check_appended(raw)


def _check_appended(raw: Any) -> None:
    """The triggers did append (one record per row written): the probe measured what it says."""
    (logged,) = raw.execute(f"SELECT count(*) FROM {LOG}").fetchone()
    if not logged:
        raise SystemExit("the triggers appended nothing")


def worker_cpu(rounds: int, iterations: int) -> None:
    """Rounds alternating without and with the triggers, in this process: CPU time per operation
    (µs) of each, and the median of each pair's ratio; one JSON line on stdout."""
    raw = _set_up_plain()
    one_round(max(10, iterations // 10))
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "trigger": []}
    for repeat in range(rounds):
        order = ("plain", "trigger") if repeat % 2 == 0 else ("trigger", "plain")
        for variant in order:
            _triggers(raw, variant == "trigger")
            gc.collect()
            runs[variant].append(one_round(iterations, time.process_time_ns))
    _triggers(raw, False)
    _check_appended(raw)
    result = {
        "rounds": rounds,
        "iterations": iterations,
        "median_us": {
            v: {op: statistics.median(r[op] for r in rows) for op in OPERATIONS} for v, rows in runs.items()
        },
        "ratio": {
            op: statistics.median(t[op] / p[op] for t, p in zip(runs["trigger"], runs["plain"], strict=True))
            for op in OPERATIONS
        },
    }
    sys.stdout.write(json.dumps(result) + "\n")


def _count(iterations: int, workdir: Path) -> dict[str, dict[str, float]]:
    """Instructions per operation of plain, trigger and reactive's unwatched capture, at once."""
    workers = {
        "plain": ("bench.settings_plain", ["-m", "bench.trigger_probe", "--worker-count", "plain"]),
        "trigger": ("bench.settings_plain", ["-m", "bench.trigger_probe", "--worker-count", "trigger"]),
        "unwatched": (
            "bench.settings",
            ["-m", "bench.overhead_worker", "--variants", "unwatched", "--count"],
        ),
    }
    return count_rounds(workers, iterations, workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=35, help="CPU-time rounds of each variant")
    parser.add_argument("--cpu-iterations", type=int, default=300)
    parser.add_argument("--no-count", action="store_true", help="skip the callgrind count")
    parser.add_argument(
        "--results", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes"
    )
    parser.add_argument("--worker-count", choices=("plain", "trigger"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-cpu", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_count:
        return worker_count(args.worker_count, args.iterations)
    if args.worker_cpu:
        return worker_cpu(args.rounds, args.cpu_iterations)

    started = datetime.now(UTC)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    changed = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT).returncode != 0
    result: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "git_commit": commit.stdout.strip() + ("+changes" if changed else ""),
    }
    with tempfile.TemporaryDirectory(prefix="trigger-probe-") as directory:
        workdir = Path(directory)
        cpu = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.trigger_probe",
                "--worker-cpu",
                "--rounds",
                str(args.rounds),
                "--cpu-iterations",
                str(args.cpu_iterations),
            ],
            cwd=ROOT,
            env=embedded_env("bench.settings_plain", workdir / "cpu.sqlite3"),
            capture_output=True,
            text=True,
            check=True,
        )
        result["cpu"] = json.loads(cpu.stdout.splitlines()[-1])
        if not args.no_count:
            result["instructions"] = {
                "iterations": args.iterations,
                "per_operation": _count(args.iterations, workdir),
            }

    rows = []
    for op in OPERATIONS:
        row = [OPERATION_LABELS[op], f"{result['cpu']['ratio'][op]:.2f}x"]
        if "instructions" in result:
            counted = result["instructions"]["per_operation"]
            plain = counted["plain"][op]
            row += [
                f"{plain / 1000:,.1f}k",
                f"{counted['trigger'][op] / 1000:,.1f}k ({counted['trigger'][op] / plain:.2f}x)",
                f"{counted['unwatched'][op] / 1000:,.1f}k ({counted['unwatched'][op] / plain:.2f}x)",
            ]
        rows.append(row)
    columns = ["operation", "trigger / plain, CPU time"]
    if "instructions" in result:
        columns += ["plain, instructions", "trigger", "reactive unwatched (today)"]
    print(md_table(columns, rows))
    out = args.results / f"{started:%Y-%m-%d}-trigger-probe.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
