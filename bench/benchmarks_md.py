"""``BENCHMARKS.md``: the run's tables, targets and plots, with the facts of the machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.merge import runs_rows
from bench.report import sections
from bench.servers import without_machine_paths
from bench.tables import md_table

METHOD = """\
Every scenario runs each system on this machine's loopback, one system at a time, on fresh
servers, in the same run. Systems: **reactive (embedded)** (one server process: SQLite in WAL
mode, the change log table tailed in-process, the index and invalidator), **reactive (Redis)**
(servers A and B, one `reactive_worker`, Redis and Postgres, clients split between A and B), and
the baselines: **table-level** (our engine with `REACTIVE["READ_SETS"] = "tables"`), **DCRF
observer** (djangochannelsrestframework's `@model_observer` with a group per counter, Channels'
in-memory layer), **polling 1 s / 100 ms** (`POST /reactive/api/query` on that period, per
client) and, for writes, **plain Django**. Both our backends run under Daphne and under uvicorn
(the Redis deployment's two servers alike), in latency, fan-out and writes (plain Django beside
them on each server); DCRF under both; table-level and polling under Daphne. Precision, the
external writes and the Redis diagnostics (round trips, lag) run under Daphne only: what they
measure (re-runs per write, how soon a server hears of another process's commit, Redis commands
and the worker's lag) is the engine's, and the ASGI server's part of a push is what latency and
fan-out show under both.

- **The write** is the same everywhere: `POST /bench/bump?key=K&intended=NS`, a plain Django
  view that increments a counter with `save()` in a transaction (what a signal-based observer
  sees), writing in the same row `stamp` (`time.monotonic_ns()` just before its UPDATE) and
  `intended` (the writer's scheduled send time). Every pushed or polled value carries both:
  **commit → client** is receipt - stamp (one host, one monotonic clock), **intended → client**
  adds the queueing in the writer and the server.
- **Open loop**: writes go out at fixed slots whatever the answers (no coordinated omission);
  the achieved rate is checked. **Warm-up** writes at the same rate precede each window and
  are not recorded. Each cell has `repeats` windows; a figure is the **median (min-max)** over
  them. So do the Redis diagnostics: the lag's window and the round trips' four windows run
  `repeats` times on one deployment, on fresh subscriptions (and writer processes).
- **Receivers**: several load-generator processes hold the sockets (a raw asyncio WebSocket
  client: the handshake, then each received chunk timestamped and kept; frames are decoded
  after the window), so the receipt of a fan-out is not serialised in one Python process.
  Their CPU (**load-gen**) and the rest of the machine's (**other**: other users' work; the
  machine is shared) are shown beside every row, as shares of one core.
- **Server CPU** is utime + stime of the serving processes from `/proc/<pid>/stat` over the
  window (Redis backend: both servers, the worker, Redis and Postgres), divided by deliveries.
- **Delivered** counts (subscriber, write) pairs pushed; ours may coalesce a value replaced
  within one invalidator pass (every push is a full value), a baseline may drop. A subscriber
  whose last value is not its counter's final value is **lost**: for our systems that fails the
  run. `*` marks a cell where the system did not keep up (named in its row); larger N are then
  skipped for that rate.
- **Targets** are judged on the medians of their cells; each row names the run (date, git
  commit) its figures come from, so a page merged from several runs (`--merge`) says which.
"""


def _facts(report: dict[str, Any]) -> str:
    m = report["machine"]
    rows = [
        ["date", m["date"]],
        ["command", f"`{m['command']}`"],
        ["CPU", f"{m['cpu_model']} ({m['nproc']} cores, shared with other work)"],
        ["load average at start / end", f"{m['load_average_at_start']} / {m.get('load_average_at_end')}"],
        ["Python / Django / Channels", f"{m['python']} / {m['django']} / {m['channels']}"],
        ["Daphne / uvicorn / websockets", f"{m['daphne']} / {m['uvicorn']} / {m['websockets']}"],
        ["djangochannelsrestframework", str(m["djangochannelsrestframework"])],
        ["kernel / git commit", f"{m['kernel']} / {m['git_commit']}"],
        ["plan", f"{report['plan']} ({report['plan_detail']['repeats']} repeats per cell)"],
        ["wall time", f"{report['seconds'].get('total', 0):.0f} s"],
    ]
    backend = m.get("redis_backend")
    if backend:
        rows.insert(
            6,
            [
                "Redis / Postgres / channels_redis",
                " / ".join(str(backend.get(k)) for k in ("redis_server", "postgres", "channels_redis")),
            ],
        )
    return md_table(["fact", "value"], rows)


def _runs(report: dict[str, Any]) -> list[str]:
    """For a merged report: which run and commit each scenario's figures come from."""
    if len(report.get("sources") or []) < 2:
        return []
    return [
        "## Runs",
        "",
        "This page merges runs: the facts above are the first run's; each scenario comes from",
        "the run below (a later run replaced the figures of the systems it names).",
        "",
        md_table(["scenario", "from the run of"], runs_rows(report)),
        "",
    ]


def render(report: dict[str, Any], json_path: Path, pictures: list[Path], directory: Path) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Live queries against the alternatives, in one run of `make bench` (`python -m bench`; the",
        "method, the code and how to run one scenario: [bench/README.md](bench/README.md)).",
        f"Full data: [`{os.path.relpath(json_path, directory)}`]({os.path.relpath(json_path, directory)}).",
        "",
        _facts(report),
        "",
        *_runs(report),
        "## Method",
        "",
        METHOD,
    ]
    for title, body in sections(report, md_table):
        lines += [f"## {title}", "", body, ""]
    if pictures:
        lines += ["## Plots", ""]
        for picture in pictures:
            relative = os.path.relpath(picture, directory)
            lines += [f"![{picture.stem}]({relative})", ""]
    flame_graphs: dict[int, list[str]] = {}
    for profile in report.get("profile") or []:
        path = os.path.relpath(json_path.parent / profile["flame_graph"], directory)
        flame_graphs.setdefault(profile["subscribers"], []).append(f"[{profile['server']}]({path})")
    for n, links in sorted(flame_graphs.items()):
        lines += [f"Flame graphs of the fan-out to {n:,} subscribers (py-spy): {', '.join(links)}.", ""]
    if report["notes"]:
        lines += ["## Notes", "", "Baselines' limits and servers' warnings (not failures):", ""]
        lines += [f"- {without_machine_paths(note)[:500]}" for note in report["notes"]]
        lines.append("")
    if report["problems"]:
        problems = [f"- {without_machine_paths(problem)[:500]}" for problem in report["problems"]]
        lines += ["## Problems", "", *problems, ""]
    return "\n".join(lines)
