"""The two reports: printed as text, and written to ``bench/results/`` as JSON and Markdown.

``latency`` (parts ``latency`` and ``overhead``): the embedded backend, in
``latency-<UTC date>.json`` and ``latency-latest.md``. ``cluster`` (parts ``redis-latency``,
``roundtrips`` and ``lag``): the Redis backend, in ``cluster-<UTC date>.json`` and
``cluster-latest.md``. A ``--quick`` run writes under ``results/quick/`` (ignored by git).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.lag import LAG_COLUMNS, LAG_CPU_COLUMNS, lag_rows
from bench.latency import (
    EXTRA_COLUMNS,
    FANOUT_COLUMNS,
    LATENCY_COLUMNS,
    LATENCY_EXTRA_COLUMNS,
    extra_row,
    fanout_row,
    latency_extra_row,
    latency_row,
)
from bench.overhead import OVERHEAD_COLUMNS, overhead_rows
from bench.roundtrips import RT_COLUMNS, round_trip_notes, round_trip_rows
from bench.tables import md_table, number
from harness.processes import ROOT

RESULTS = ROOT / "bench" / "results"
Table = Callable[[list[str], list[list[str]]], str]


def machine_facts(command: str) -> dict[str, Any]:
    import daphne
    import django
    import websockets

    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": command,
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "daphne": daphne.__version__,
        "websockets": websockets.__version__,
        "git_commit": commit or None,
        "event_loop": "asyncio (default selector loop)",
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _facts(m: dict[str, Any], load: list[str], extra: list[list[str]]) -> str:
    rows = [
        ["date", m["date"]],
        ["command", f"`{m['command']}`"],
        ["nproc", str(m["nproc"])],
        ["CPU", str(m["cpu_model"])],
        load,
        [
            "Python / Django / Daphne / websockets",
            f"{m['python']} / {m['django']} / {m['daphne']} / {m['websockets']}",
        ],
        *extra,
        ["kernel", m["kernel"]],
        ["git commit", str(m["git_commit"])],
    ]
    return md_table(["fact", "value"], rows)


def write_results(name: str, report: dict[str, Any], markdown: str, quick: bool) -> list[Path]:
    """``<name>-<UTC date>.json`` and ``<name>-latest.md``; returns their paths."""
    out_dir = RESULTS / "quick" if quick else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    json_path = out_dir / f"{name}-{day}.json"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md_path = out_dir / f"{name}-latest.md"
    md_path.write_text(markdown)
    return [json_path, md_path]


# -- the latency report (embedded backend) -------------------------------------------------


def latency_notes(r: dict[str, Any]) -> list[str]:
    notes = []
    if r.get("bump_retries_total"):
        notes.append(
            f"benchapp.bump retried {r['bump_retries_total']} time(s) on SQLite 'database is locked' "
            f"({r.get('bump_retries', 0)} in the measured phase)"
        )
    log = [line for line in r.get("server_log", []) if not line.startswith("... ")]
    if log:
        errors = sorted({line for line in log if line and not line[0].isspace() and "Traceback" not in line})
        notes.append(f"the server logged {len(r['server_log'])} line(s), e.g.: " + " | ".join(errors[:3]))
    return notes


def latency_problems(report: dict[str, Any]) -> list[str]:
    return [p for r in report["fanout"] for p in r["problems"]] + report.get("overhead_problems", [])


def render_latency(report: dict[str, Any], table: Table) -> str:
    parts = []
    if report["fanout"]:
        parts += [
            "Commit -> subscriber latency (embedded backend, Daphne, SQLite WAL; t0 just before COMMIT)",
            table(FANOUT_COLUMNS, [fanout_row(r) for r in report["fanout"]]),
            "",
            "More per N (first receiver, latency from the intended send time, writer round trip)",
            table(EXTRA_COLUMNS, [extra_row(r) for r in report["fanout"]]),
        ]
    if report.get("overhead"):
        o = report["overhead"]
        parts += [
            "",
            f"Write-tracking overhead on plain ORM writes, {o.get('database', 'sqlite')} "
            f"(median of {o['repeats']} rounds' means, "
            f"{o['iterations']} ops per round, atomic: {max(1, o['iterations'] // 10)} blocks; "
            "rounds alternate between the variants)",
            table(OVERHEAD_COLUMNS, overhead_rows(o)),
        ]
    notes = [f"  N={r['subscribers']}: {note}" for r in report["fanout"] for note in latency_notes(r)]
    if notes:
        parts += ["", "NOTES (not failures):", *notes]
    problems = [(r["subscribers"], p) for r in report["fanout"] for p in r["problems"]]
    problems += [("overhead", p) for p in report.get("overhead_problems", [])]
    if problems:
        parts += ["", "PROBLEMS:"] + [f"  N={n}: {p}" if n != "overhead" else f"  {p}" for n, p in problems]
    return "\n".join(parts)


def latency_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    load = ["load average at start", " ".join(map(str, m["load_average_at_start"]))]
    text = [
        "# Latency benchmark: latest results",
        "",
        "Written by `python -m bench` (parts `latency` and `overhead`); the method and what each number",
        "means are in `bench/README.md`.",
        "The load generator runs on the same cores as the server: fan-out tails are pessimistic.",
        "",
        _facts(m, load, []),
    ]
    if report["fanout"]:
        text += [
            "",
            "## Commit → subscriber latency (embedded backend, Daphne, SQLite WAL)",
            "",
            md_table(FANOUT_COLUMNS, [fanout_row(r) for r in report["fanout"]]),
            "",
            md_table(EXTRA_COLUMNS, [extra_row(r) for r in report["fanout"]]),
        ]
    if report.get("overhead"):
        o = report["overhead"]
        text += [
            "",
            "## Write-tracking overhead on plain ORM writes",
            "",
            f"Database: {o.get('database', 'sqlite')}. Median of {o['repeats']} rounds' means, "
            f"{o['iterations']} operations per round "
            f"({max(1, o['iterations'] // 10)} blocks for the atomic row); rounds alternate between "
            "the plain and the reactive process and between the variants.",
            "",
            md_table(OVERHEAD_COLUMNS, overhead_rows(o)),
        ]
    notes = [f"N={r['subscribers']}: {note}" for r in report["fanout"] for note in latency_notes(r)]
    if notes:
        text += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    problems = latency_problems(report)
    if problems:
        text += ["", "## Problems", ""] + [f"- {p}" for p in problems]
    return "\n".join(text) + "\n"


# -- the cluster report (Redis backend) ----------------------------------------------------


def cluster_notes(report: dict[str, Any]) -> list[str]:
    notes = []
    for name, lines in report.get("logs", {}).items():
        lines = [line for line in lines if line and not line.startswith("... ")]
        if lines:
            firsts = sorted({line for line in lines if not line[0].isspace() and "Traceback" not in line})
            notes.append(f"{name} logged {len(lines)} line(s), e.g.: " + " | ".join(firsts[:3]))
    for r in report.get("latency", []):
        if r["backend"] == "embedded" and r.get("server_log"):
            notes.append(f"embedded N={r['subscribers']}: the server logged {len(r['server_log'])} line(s)")
    return notes


def cluster_problems(report: dict[str, Any]) -> list[str]:
    problems = [
        f"{r['backend']} N={r['subscribers']}: {p}" for r in report.get("latency", []) for p in r["problems"]
    ]
    for part in ("round_trips", "lag"):
        problems += report.get(part, {}).get("problems", [])
    return problems + report.get("problems", [])


def render_cluster(report: dict[str, Any], table: Table) -> str:
    parts: list[str] = []
    rows = report.get("latency", [])
    if rows:
        parts += [
            "1. Commit -> client latency: Redis backend (Daphne A + B, one worker, Postgres; writes "
            "through A)"
            " beside the embedded backend (one Daphne, SQLite WAL); t0 just before COMMIT",
            table(LATENCY_COLUMNS, [latency_row(r) for r in rows]),
            "",
            table(LATENCY_EXTRA_COLUMNS, [latency_extra_row(r) for r in rows]),
        ]
    rt = report.get("round_trips")
    if rt and "windows" in rt:
        parts += [
            "",
            f"2. Redis commands (MONITOR) per committed write: {rt['writes_per_window']} bumps per window "
            f"through A (spaced {rt['spacing_s'] * 1000:.0f} ms, or all at once), one subscriber on B; "
            "idle: per second",
            table(RT_COLUMNS, round_trip_rows(rt)),
            *[f"  {note}" for note in round_trip_notes(rt)],
        ]
    lag = report.get("lag")
    if lag:
        main_rows, cpu_rows = lag_rows(lag)
        parts += [
            "",
            f"3. Invalidator lag under load: {lag['writers']} direct ORM writer processes "
            "(autocommit UPDATE), "
            f"{lag['counters']} counters, one subscriber each (half on A, half on B); lag = receipt - commit",
            table(LAG_COLUMNS, main_rows),
            "",
            "CPU over the measured window, share of one core (2 cores):",
            table(LAG_CPU_COLUMNS, cpu_rows),
        ]
        if "lag_from_intended_send_ms" in lag:
            parts.append(
                f"  intended-send→recv p50/p99 {number(lag['lag_from_intended_send_ms']['p50'], 2)}/"
                f"{number(lag['lag_from_intended_send_ms']['p99'], 2)} ms; writer lateness p50/p99 "
                f"{number(lag['sent_late_ms']['p50'], 2)}/{number(lag['sent_late_ms']['p99'], 2)} ms; "
                f"ORM write (UPDATE + append) p50/p99 {number(lag['write_time_ms']['p50'], 2)}/"
                f"{number(lag['write_time_ms']['p99'], 2)} ms; log XLEN max {lag['log_xlen_max']}; "
                f"all delivered {lag['drain_seconds_after_last_write']} s after the last write"
            )
    notes = cluster_notes(report)
    if notes:
        parts += ["", "NOTES (not failures):", *[f"  {n}" for n in notes]]
    problems = cluster_problems(report)
    if problems:
        parts += ["", "PROBLEMS:", *[f"  {p}" for p in problems]]
    return "\n".join(parts)


def cluster_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    load = [
        "load average at start / end",
        f"{' '.join(map(str, m['load_average_at_start']))} / "
        f"{' '.join(map(str, m.get('load_average_at_end', [])))}",
    ]
    services = [
        [
            "channels_redis / redis-py / redis-server / PostgreSQL",
            " / ".join(str(m.get(key)) for key in ("channels_redis", "redis_py", "redis_server", "postgres")),
        ],
        ["Postgres options", "fsync=off, synchronous_commit=off, full_page_writes=off (harness/services.py)"],
    ]
    text = [
        "# Redis backend benchmark: latest results",
        "",
        "Written by `python -m bench` (parts `redis-latency`, `roundtrips` and `lag`); the method and",
        'what each number means are in `bench/README.md` (section "Redis backend"). Everything, load',
        "generator included, shares the same cores.",
        "",
        _facts(m, load, services),
    ]
    rows = report.get("latency", [])
    if rows:
        text += [
            "",
            "## 1. Commit → client latency, Redis beside embedded",
            "",
            md_table(LATENCY_COLUMNS, [latency_row(r) for r in rows]),
            "",
            md_table(LATENCY_EXTRA_COLUMNS, [latency_extra_row(r) for r in rows]),
        ]
    rt = report.get("round_trips")
    if rt and "windows" in rt:
        text += [
            "",
            "## 2. Redis commands per committed write (MONITOR)",
            "",
            f"{rt['writes_per_window']} `benchapp.bump` per window through A "
            f"(spaced {rt['spacing_s'] * 1000:.0f} ms, "
            "or all at once), one subscriber on B. The idle column is per second.",
            "",
            md_table(RT_COLUMNS, round_trip_rows(rt)),
            "",
            *[f"- {note}" for note in round_trip_notes(rt)],
        ]
    lag = report.get("lag")
    if lag:
        main_rows, cpu_rows = lag_rows(lag)
        text += [
            "",
            "## 3. Invalidator lag under load",
            "",
            f"{lag['writers']} direct ORM writer processes (autocommit UPDATE), "
            f"{lag['counters']} counters, one "
            "subscriber each (half on A, half on B).",
            "",
            md_table(LAG_COLUMNS, main_rows),
            "",
            "CPU over the measured window (share of one core):",
            "",
            md_table(LAG_CPU_COLUMNS, cpu_rows),
        ]
    notes = cluster_notes(report)
    if notes:
        text += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    problems = cluster_problems(report)
    if problems:
        text += ["", "## Problems", "", *[f"- {p}" for p in problems]]
    return "\n".join(text) + "\n"
