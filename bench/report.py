"""The report of a run: printed as text, written as ``bench/results/<UTC date>.json`` and as
``BENCHMARKS.md`` (tables, the targets, the plots) at the repository root. ``--quick`` writes both
under ``bench/results/quick/`` instead (ignored by git), so the published results stay.

A figure is printed as ``median (min-max)`` over the repeats of its cell; beside each row are the
load generators' CPU and everything else the machine did ("other"), as shares of one core (the
machine has two): a row with a high "other" was measured on a busy machine.
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

from bench.merge import run_of
from bench.overhead import COUNT_COLUMNS, OVERHEAD_COLUMNS, count_rows, overhead_rows
from bench.plans import Plan
from bench.roundtrips import RT_COLUMNS, round_trip_notes, round_trip_rows, runs_of
from bench.systems import SYSTEMS
from bench.tables import text_table
from bench.targets import evaluate
from bench.throughput import sustained_runs
from harness import procfs
from harness.processes import ROOT

RESULTS = ROOT / "bench" / "results"
BENCHMARKS = ROOT / "BENCHMARKS.md"
Table = Callable[[list[str], list[list[str]]], str]


def machine_facts(command: str) -> dict[str, Any]:
    import channels
    import daphne
    import django
    import djangochannelsrestframework
    import uvicorn
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
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    if commit and changed:
        commit += "+changes"  # tracked files differ from the commit: the figures are not its alone
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": command,
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "load_average_at_start": load_average(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "channels": channels.__version__,
        "daphne": daphne.__version__,
        "uvicorn": uvicorn.__version__,
        "websockets": websockets.__version__,
        "djangochannelsrestframework": getattr(djangochannelsrestframework, "__version__", "1.3.0"),
        "git_commit": commit or None,
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def new_report(plan: Plan, command: str, scenarios: list[str], systems: list[str] | None) -> dict[str, Any]:
    return {
        "plan": plan.name,
        "plan_detail": plan.__dict__,
        "scenarios": scenarios,
        "systems": systems,
        "machine": machine_facts(command),
        "machine_busy_at_start": procfs.machine_busy_seconds(),
        "latency": [],
        "fanout": [],
        "redis_distinct": None,
        "writes": None,
        "precision": {},
        "tracking": None,
        "profile": None,
        "roundtrips": None,
        "lag": None,
        "external": None,
        "problems": [],
        "notes": [],
        "seconds": {},
    }


def finish(report: dict[str, Any], keep_load: bool = False) -> None:
    if not keep_load:
        report["machine"]["load_average_at_end"] = load_average()
    report["targets"] = evaluate(report)


# -- formatting ------------------------------------------------------------------------------


def fig(s: dict[str, Any] | None, digits: int = 1, spread: bool = True) -> str:
    """``median (min-max)`` of a spread, or the median alone."""
    if not s:
        return "-"
    median = f"{s['median']:.{digits}f}"
    if not spread or s["n"] < 2:
        return median
    return f"{median} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def pct(s: dict[str, Any] | None) -> str:
    return "-" if not s else f"{s['median'] * 100:.0f}%"


def label(system: str, server: str | None = None) -> str:
    name = SYSTEMS[system].label if system in SYSTEMS else system
    return f"{name}, {server}" if server else name


def cell_state(cell: dict[str, Any]) -> str | None:
    if cell.get("skipped"):
        return "skipped: " + cell["skipped"]
    if not cell.get("windows"):
        return "failed"
    return None


# -- the tables of each scenario -------------------------------------------------------------

LATENCY_COLUMNS = [
    "system",
    "N",
    "writes done/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "last-recv p99 ms",
    "intended→recv p99 ms",
    "delivered",
    "re-runs/write",
    "server CPU µs/delivery",
    "load-gen CPU",
    "other CPU",
]


def latency_rows(cells: list[dict[str, Any]], rate: float) -> list[list[str]]:
    rows = []
    for cell in cells:
        if cell["rate"] != rate:
            continue
        head = [label(cell["system"], cell["server"]), str(cell["subscribers"])]
        state = cell_state(cell)
        if state:
            rows.append(head + [state[:90]] + [""] * (len(LATENCY_COLUMNS) - 3))
            continue
        s = cell["summary"]
        rows.append(
            [
                *head,
                fig(s.get("completed_rate"), 0, spread=False),
                fig(s["p50"], 2),
                fig(s["p95"], 2, spread=False),
                fig(s["p99"], 2),
                fig(s["last_p99"], 1, spread=False),
                fig(s["intended_p99"], 1, spread=False),
                pct(s["delivered"]) + (" *" if cell.get("saturated") else ""),
                fig(s["reruns_per_write"], 2, spread=False),
                fig(s["cpu_us_per_delivery"], 0),
                pct(s["load_share"]),
                pct(s["other_share"]),
            ]
        )
    return rows


OURS_BY_SERVER = {"daphne": ("reactive", "daphne"), "uvicorn": ("reactive", "uvicorn")}


def ratio_rows(cells: list[dict[str, Any]], metric: str) -> tuple[list[str], list[list[str]]]:
    """Each baseline's ``metric`` divided by ours (reactive, embedded, on the same ASGI server;
    Daphne for the systems that only run on it), per (N, rate)."""
    index = {(c["system"], c["server"], c["subscribers"], c["rate"]): c for c in cells if c.get("summary")}
    baselines = sorted(
        {(c["system"], c["server"]) for c in cells if c["system"] != "reactive"},
        key=lambda pair: (list(SYSTEMS).index(pair[0]), pair[1]),  # not set order: renders repeat
    )
    columns = ["N", "writes/s"] + [label(*pair) for pair in baselines]
    rows = []
    for n, rate in sorted({(c["subscribers"], c["rate"]) for c in cells}):
        row = [str(n), f"{rate:g}"]
        for system, server in baselines:
            ours = index.get(("reactive", server if server == "uvicorn" else "daphne", n, rate))
            theirs = index.get((system, server, n, rate))
            if ours and theirs and ours["summary"][metric] and theirs["summary"][metric]:
                value = theirs["summary"][metric]["median"] / ours["summary"][metric]["median"]
                row.append(f"{value:.2f}x" + (" *" if theirs.get("saturated") else ""))
            else:
                row.append("-")
        rows.append(row)
    return columns, rows


FANOUT_COLUMNS = [
    "system",
    "N",
    "first-recv p50 ms",
    "last-recv p50 ms",
    "last-recv p99 ms",
    "re-runs/write",
    "delivered",
    "server CPU µs/delivery",
    "load-gen CPU",
    "other CPU",
    "subscribe s",
]


def fanout_rows(cells: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for cell in cells:
        head = [label(cell["system"], cell["server"]), str(cell["subscribers"])]
        state = cell_state(cell)
        if state:
            rows.append(head + [state[:90]] + [""] * (len(FANOUT_COLUMNS) - 3))
            continue
        s = cell["summary"]
        rows.append(
            [
                *head,
                fig(s["first_p50"], 1, spread=False),
                fig(s["last_p50"], 1),
                fig(s["last_p99"], 1),
                fig(s["reruns_per_write"], 2, spread=False),
                pct(s["delivered"]) + (" *" if cell.get("saturated") else ""),
                fig(s["cpu_us_per_delivery"], 0),
                pct(s["load_share"]),
                pct(s["other_share"]),
                f"{cell.get('subscribe_seconds') or 0:.1f}",
            ]
        )
    return rows


FOOTPRINT_COLUMNS = [
    "system",
    "clients added",
    "KiB per idle connection",
    "KiB per subscription",
    "server RSS MiB",
]


def footprint_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for cell in report["fanout"]:
        footprint = cell.get("footprint_kib")
        if not footprint:
            continue
        idle, subscribed = footprint["per_idle_connection"], footprint["per_subscription"]
        servers = [k for k in idle if k != "redis"]
        rss = cell["memory"]["subscribed"]["rss_mib"]
        rows.append(
            [
                label(cell["system"], cell["server"]),
                f"{footprint['clients_added']} (to {cell['subscribers']})",
                " / ".join(f"{idle[k]:.1f}" for k in servers),
                " / ".join(f"{subscribed[k]:.2f}" for k in servers)
                + (f"; Redis {subscribed['redis']:.3f}" if "redis" in subscribed else ""),
                " / ".join(f"{rss[k]:.0f}" for k in servers),
            ]
        )
    distinct = report.get("redis_distinct")
    if distinct:
        # After the fan-out's 10,000 sockets closed, the servers reuse the memory they freed: only
        # Redis's figure means something here.
        rows.append(
            [
                "reactive (Redis), distinct instances",
                f"{distinct['subscriptions']} (after the fan-out)",
                "-",
                f"Redis {distinct['per_subscription'].get('redis', 0):.3f}",
                "-",
            ]
        )
    return rows


BANDWIDTH_COLUMNS = ["system", "N", "writes/s", "bytes in per update", "bytes out per update", "messages"]


def bandwidth_rows(cells: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for cell in cells:
        if not cell.get("summary") or cell["subscribers"] != max(
            c["subscribers"] for c in cells if c["subscribers"] <= 100
        ):
            continue
        s = cell["summary"]
        windows = cell["windows"]
        rows.append(
            [
                label(cell["system"], cell["server"]),
                str(cell["subscribers"]),
                f"{cell['rate']:g}",
                fig(s["bytes_in_per_delivery"], 0, spread=False),
                fig(s["bytes_out_per_delivery"], 0, spread=False),
                str(sum(w["messages"] for w in windows) or sum(w["polls"] for w in windows)),
            ]
        )
    return rows


WRITES_COLUMNS = [
    "variant",
    "writes/s",
    "÷ plain",
    "server CPU µs/write",
    "round trip p99 ms",
    "re-runs/write",
    "load-gen",
    "other",
]


def writes_rows(phase: dict[str, Any]) -> list[list[str]]:
    """A row per variant; "÷ plain" against the plain Django view under the same ASGI server."""
    rows = []
    plains = {
        row.get("server", "daphne"): row["writes_per_s"]
        for name, row in phase.items()
        if not name.startswith("_") and row["system"] == "plain"
    }
    for name, row in phase.items():
        if name.startswith("_"):
            continue
        plain = plains.get(row.get("server", "daphne"))
        ratio = (
            f"{row['writes_per_s']['median'] / plain['median']:.2f}" if plain and row["writes_per_s"] else "-"
        )
        rows.append(
            [
                name,
                fig(row["writes_per_s"], 0),
                ratio,
                fig(row["cpu_us_per_write"], 0),
                fig(row["round_trip_ms_p99"], 1, spread=False),
                fig(row["reruns_per_write"], 2, spread=False),
                pct(row["load_share"]),
                pct(row["other_share"]),
            ]
        )
    return rows


SUSTAINED_COLUMNS = [
    "target writes/s",
    "answered /s",
    "intended→recv p99 ms",
    "p50 ms",
    "p99 ms",
    "delivered",
    "server CPU µs/write",
    "load-gen",
    "other",
    "state",
]


def sustained_rows(sustained: dict[str, Any]) -> list[list[str]]:
    rows = []
    for step in sustained["steps"]:
        s = step["summary"]
        rows.append(
            [
                f"{step['rate']:g}",
                fig(s.get("completed_rate"), 0),
                fig(s["intended_p99"], 0, spread=False),
                fig(s["p50"], 1),
                fig(s["p99"], 1),
                pct(s["delivered"]),
                fig(s["cpu_us_per_write"], 0),
                pct(s["load_share"]),
                pct(s["other_share"]),
                step["saturated"] or ("sustained, p99 <= 50 ms" if step["met_p99"] else "not sustained"),
            ]
        )
    return rows


PRECISION_COLUMNS = [
    "read sets",
    "precision (changed / re-runs)",
    "re-runs per write",
    "changed per write",
    "pushes per write",
    "server CPU µs/write",
    "load-gen",
    "other",
]


def precision_rows(precision: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, result in precision.items():
        s = result["summary"]
        rows.append(
            [
                "rows (reactive)" if name == "reactive" else "tables (table-level)",
                fig(s["precision"], 3),
                fig(s["reruns_per_write"], 2),
                fig(s["changed_per_write"], 2, spread=False),
                fig(s["pushes_per_write"], 1),
                fig(s["cpu_us_per_write"], 0),
                pct(s.get("load_share")),
                pct(s.get("other_share")),
            ]
        )
    return rows


LAG_COLUMNS = [
    "writes (target/achieved /s)",
    "counters = subscribers",
    "lag p50 ms",
    "p99 ms",
    "max ms",
    "backlog p50 / max records",
    "worker passes / records per pass",
    "serving CPU",
    "writers CPU",
    "load-gen",
    "other",
]


def lag_row(lag: dict[str, Any]) -> list[str]:
    """The lag's figures, median (min-max) over its windows (a run before the repeats: its one)."""
    if "windows" not in lag:
        return lag_window_row(lag)
    s, first = lag["summary"], lag["windows"][0]
    return [
        f"{first['writes']} x {s['repeats']} in {lag['seconds']:g} s "
        f"({lag['target_rate']:g}/{fig(s['achieved_rate'], 0, spread=False)})",
        str(lag["counters"]),
        fig(s["p50"], 2),
        fig(s["p99"], 2),
        fig(s["max"], 2),
        f"{fig(s['backlog_p50'], 0)} / {fig(s['backlog_max'], 0)}",
        f"{fig(s['worker_passes'], 0)} / {fig(s['records_per_pass'], 2)}",
        pct(s["serving_share"]),
        pct(s["writers_share"]),
        pct(s["load_share"]),
        pct(s["other_share"]),
    ]


def lag_window_row(lag: dict[str, Any]) -> list[str]:
    latency, backlog, cpu = lag["latency_ms"], lag["backlog_records"], lag["cpu"]
    return [
        f"{lag['writes']} in {lag['seconds']:g} s ({lag['target_rate']:g}/{lag['achieved_rate']:g})",
        str(lag["counters"]),
        f"{latency['p50']:.2f}" if latency["p50"] is not None else "-",
        f"{latency['p99']:.2f}" if latency["p99"] is not None else "-",
        f"{latency['max']:.2f}" if latency["max"] is not None else "-",
        f"{backlog['p50']} / {backlog['max']}",
        f"{lag['worker_passes']} / {lag['records_per_pass']}",
        f"{cpu['serving_share'] * 100:.0f}%",
        f"{cpu['writers_share'] * 100:.0f}%",
        f"{cpu['load_share'] * 100:.0f}%",
        f"{cpu['other_share'] * 100:.0f}%",
    ]


EXTERNAL_COLUMNS = [
    "written from",
    "writes (target /s)",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "from intended p99 ms",
    "server CPU",
    "load-gen",
]


def external_rows(external: dict[str, Any]) -> list[list[str]]:
    rows = []
    for case, figures in external["cases"].items():
        s, first = figures["summary"], figures["windows"][0]
        rows.append(
            [
                case,
                f"{first['writes']} x {s['repeats']} ({first['target_rate']:g})",
                fig(s["p50"], 2),
                fig(s["p95"], 2),
                fig(s["p99"], 2),
                fig(s["max"], 2, spread=False),
                fig(s["intended_p99"], 2),
                pct(s["serving_share"]),
                pct(s["load_share"]),
            ]
        )
    return rows


TARGET_COLUMNS = ["target", "measured", "verdict", "what limits it", "run (date, commit)"]


def target_rows(report: dict[str, Any]) -> list[list[str]]:
    """A row per target, with the run its figures come from (``bench.merge.run_of``)."""
    return [
        [t["target"], t["measured"], t["verdict"], t["why"], run_of(report, t)]
        for t in report.get("targets", [])
    ]


# -- the whole report ------------------------------------------------------------------------


def sections(report: dict[str, Any], table: Table) -> list[tuple[str, str]]:
    """(title, body) of every section the run has results for."""
    out: list[tuple[str, str]] = []
    if report.get("targets"):
        out.append(("Targets", table(TARGET_COLUMNS, target_rows(report))))
    cells = report["latency"]
    for rate in sorted({c["rate"] for c in cells}):
        out.append(
            (
                f"1. Commit → client latency at {rate:g} writes/s",
                table(LATENCY_COLUMNS, latency_rows(cells, rate)),
            )
        )
    if cells:
        for metric, what in (
            ("p50", "p50"),
            ("p99", "p99"),
            ("cpu_us_per_delivery", "server CPU per delivery"),
        ):
            columns, rows = ratio_rows(cells, metric)
            out.append((f"1. Baselines ÷ reactive (embedded): {what}", table(columns, rows)))
    if report["fanout"]:
        out.append(
            (
                "2. Fan-out: one write, N subscribers of one instance",
                table(FANOUT_COLUMNS, fanout_rows(report["fanout"])),
            )
        )
    writes = report.get("writes")
    if writes:
        for rows in writes["phases"].values():
            count = rows.get("_subscriptions", 0)
            title = (
                f"3. Writes, closed loop, {count:,} live subscriptions (Daphne unless marked)"
                if count
                else "3. Writes, closed loop, no subscriptions (Daphne unless marked)"
            )
            out.append((title, table(WRITES_COLUMNS, writes_rows(rows))))
        for server, sustained in sustained_runs(writes):
            out.append(
                (
                    f"3. Sustained writes, {sustained['subscriptions']:,} distinct live subscriptions "
                    f"(open loop), reactive (embedded), {server}",
                    table(SUSTAINED_COLUMNS, sustained_rows(sustained)),
                )
            )
    if report.get("tracking"):
        out.append(
            (
                _tracking_title(report["tracking"]),
                table(OVERHEAD_COLUMNS, overhead_rows(report["tracking"])),
            )
        )
        counted = report["tracking"].get("instructions")
        if counted:
            out.append(
                (
                    f"3. The same writes in instructions (callgrind, {counted['iterations']:,} of each, "
                    "SQLite; runs of the same code agree within 0.5%)",
                    table(COUNT_COLUMNS, count_rows(counted)),
                )
            )
    if report["precision"]:
        out.append(
            (
                "4. Precision on the chat workload",
                table(PRECISION_COLUMNS, precision_rows(report["precision"])),
            )
        )
    if report.get("external"):
        out.append(
            (
                "Writes from other processes, embedded default (Daphne, SQLite): commit -> subscriber",
                table(EXTERNAL_COLUMNS, external_rows(report["external"])),
            )
        )
    footprint = footprint_rows(report)
    if footprint:
        out.append(("5. Footprint", table(FOOTPRINT_COLUMNS, footprint)))
    if cells:
        out.append(("6. Bytes on the wire per update", table(BANDWIDTH_COLUMNS, bandwidth_rows(cells))))
    if report.get("roundtrips") and runs_of(report["roundtrips"]):
        rt = report["roundtrips"]
        notes = "\n".join(f"- {note}" for note in round_trip_notes(rt))
        out.append(
            ("Redis: commands per committed write", table(RT_COLUMNS, round_trip_rows(rt)) + "\n\n" + notes)
        )
    if report.get("lag"):
        out.append(
            ("Redis: lag under writes from other processes", table(LAG_COLUMNS, [lag_row(report["lag"])]))
        )
    for profile in report.get("profile") or []:
        title = (
            f"Profile: fan-out to {profile['subscribers']:,} subscribers, {profile['server']} "
            f"({profile['samples']} samples; flame graph: bench/results/{profile['flame_graph']})"
        )
        rows = [
            [f"{share * 100:.1f}%", frame, f"{inclusive * 100:.1f}%" if inclusive is not None else "", under]
            for (frame, share), (under, inclusive) in zip(
                profile["self"], profile["inclusive"] + [["", None]] * len(profile["self"]), strict=False
            )
        ]
        out.append((title, table(["self", "function (file)", "inclusive", "function (file)"], rows)))
    return out


def render_text(report: dict[str, Any]) -> str:
    parts = []
    for title, body in sections(report, text_table):
        parts += [title, body, ""]
    if report["notes"]:
        parts += ["NOTES (baselines' limits, servers' logs: not failures):"] + [
            f"  {n[:300]}" for n in report["notes"]
        ]
    machine = report["machine"]
    parts.append(
        f"\nmachine load average at start {machine['load_average_at_start']}, "
        f"at end {machine.get('load_average_at_end')}; {report['seconds'].get('total')} s"
    )
    return "\n".join(parts)


def results_directory(quick: bool) -> Path:
    directory = RESULTS / "quick" if quick else RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")


def write(report: dict[str, Any], quick: bool, json_path: Path | None = None) -> list[Path]:
    """The JSON (at ``json_path``, else ``<UTC date>.json``), ``BENCHMARKS.md`` and the plots;
    returns their paths."""
    from bench import benchmarks_md, plots

    out_dir = results_directory(quick)
    if json_path is None:
        json_path = out_dir / f"{datetime.now(UTC).strftime('%Y-%m-%d')}.json"
    write_json(report, json_path)
    pictures = plots.draw(report, out_dir)
    md_path = out_dir / "BENCHMARKS.md" if quick else BENCHMARKS
    md_path.write_text(benchmarks_md.render(report, json_path, pictures, md_path.parent))
    return [json_path, md_path, *pictures]


def _tracking_title(tracking: dict[str, Any]) -> str:
    clock = tracking.get("clock", "wall time")  # runs before it named the clock used wall time
    ratios = tracking.get("ratio_of", "ratios of the medians")  # runs before it divided medians
    if "triplets" in tracking:  # slices side by side; runs before it timed rounds of every kind
        return (
            f"3. Tracking overhead on ORM writes (in-process, {clock}; slices of {tracking['slice']} "
            f"operations of one kind, plain / unwatched / watched in turn, {tracking['triplets']} "
            f"triplets; µs: median slice; {ratios})"
        )
    return (
        f"3. Tracking overhead on ORM writes (in-process, {clock}, median of {tracking['repeats']} rounds; "
        f"{ratios})"
    )
