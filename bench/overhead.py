"""Part: what write tracking adds to plain ORM writes, and the rows of its table.

Two ``bench.overhead_worker`` subprocesses on fresh databases, no server: SQLite files, or
Postgres databases when ``DATABASE_URL`` names a server (``python -m harness.services run --
python -m bench --parts overhead``); one with
``bench.settings_plain`` (no ``reactive``), one with ``bench.settings`` (``reactive`` capturing
every write, with the table unwatched and then watched). Short slices of one kind of operation
alternate between the variants, the order rotated each triplet, so whatever else the machine does
drifts over all three alike; each variant's slice is divided by the plain slice of its triplet.
Rounds of every kind, hundreds of operations each, were too coarse for a shared machine, whose
CPU time per round swings widely: creates unwatched and watched (the same work) came out well
apart. In short slices they agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench import Broken
from bench.overhead_worker import OPERATION_LABELS, OPERATIONS, slice_summary
from bench.plans import Plan
from bench.servers import embedded_env
from bench.tables import number
from harness.processes import ROOT, django_env

OVERHEAD_ROUND_TIMEOUT_S = 300.0


class OverheadWorker:
    """A ``bench.overhead_worker`` subprocess, driven one round at a time over stdin/stdout."""

    def __init__(self, settings: str, variants: str, iterations: int, workdir: Path) -> None:
        name = f"overhead-{settings.rsplit('.', 1)[-1]}"
        self.settings = settings
        self.stderr = (workdir / f"{name}.log").open("w+")
        server = os.environ.get("DATABASE_URL")
        if server:
            env = django_env(
                settings,
                BENCH_DATABASE_URL=fresh_database(server, name.replace("-", "_")),
                REDIS_URL=None,
                REACTIVE_LOG_LEVEL="WARNING",
            )
        else:
            env = embedded_env(settings, workdir / f"{name}.sqlite3")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.overhead_worker",
                "--variants",
                variants,
                "--iterations",
                str(iterations),
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            start_new_session=True,
        )
        self.hello = self.read()  # {"ready": true, "clock": ...} once migrated

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], OVERHEAD_ROUND_TIMEOUT_S)
        if not ready:
            raise Broken(f"overhead worker ({self.settings}) gave no answer in {OVERHEAD_ROUND_TIMEOUT_S} s")
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.stderr.seek(0)
            raise Broken(f"overhead worker ({self.settings}) exited:\n{self.stderr.read()[-2000:]}")
        return json.loads(line)

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.process.poll() is None:
                assert self.process.stdin is not None
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
                self.process.wait(timeout=10)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stderr.close()


COUNT_VARIANTS = (
    ("plain", "bench.settings_plain"),
    ("unwatched", "bench.settings"),
    ("watched", "bench.settings"),
)
COUNT_TIMEOUT_S = 1800.0


def count_instructions(iterations: int, workdir: Path) -> dict[str, Any]:
    """Each variant's round once more, under callgrind: instructions per operation, which do not
    depend on what else the machine does (CPU time here swings by tens of percent between rounds).
    What they leave out is time outside the process's instructions (system calls, cache misses).
    """
    workers = {
        variant: (settings, ["-m", "bench.overhead_worker", "--variants", variant, "--count"])
        for variant, settings in COUNT_VARIANTS
    }
    per_operation = count_rounds(workers, iterations, workdir)
    return {
        "iterations": iterations,
        "per_operation": per_operation,
        "ratio": {
            name: {op: per_operation[name][op] / per_operation["plain"][op] for op in OPERATIONS}
            for name in ("unwatched", "watched")
        },
    }


def count_rounds(
    workers: dict[str, tuple[str, list[str]]], iterations: int, workdir: Path
) -> dict[str, dict[str, float]]:
    """Instructions per operation of each of ``workers`` (name: settings module, ``python``
    arguments of a worker that runs one round with ``overhead_worker.callgrind_marker`` around each
    loop, given ``--iterations``), counted under callgrind.

    They run at once, each in its own process on a fresh SQLite database, with
    ``PYTHONHASHSEED=0`` (hash order decides some work in dicts and sets).
    """
    processes = []
    for name, (settings, args) in workers.items():
        out_file = workdir / f"callgrind-{name}.out"
        for old in workdir.glob(f"{out_file.name}*"):
            old.unlink()
        env = embedded_env(settings, workdir / f"count-{name}.sqlite3", PYTHONHASHSEED="0")
        command = _callgrind_command(out_file, *args, "--iterations", str(iterations))
        log = (workdir / f"callgrind-{name}.log").open("w")
        processes.append(
            (name, out_file, log, subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log))
        )
    per_operation: dict[str, dict[str, float]] = {}
    try:
        for name, out_file, log, process in processes:
            try:
                code = process.wait(timeout=COUNT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise Broken(f"callgrind ({name}) still ran after {COUNT_TIMEOUT_S:.0f} s") from None
            if code != 0:
                raise Broken(f"callgrind ({name}) exited with {code}: see {log.name}")
            per_operation[name] = _loop_instructions(out_file, iterations)
    finally:
        for _, _, log, process in processes:  # none left behind when one fails
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    return per_operation


def _callgrind_command(out_file: Path, *args: str) -> list[str]:
    """``python *args`` under callgrind, its profile (``out_file``) cut into parts at each call
    of ``zlib.crc32`` (``overhead_worker.callgrind_marker``)."""
    return [
        "valgrind",
        "--tool=callgrind",
        "--dump-before=zlib_crc32",
        f"--callgrind-out-file={out_file}",
        sys.executable,
        *args,
    ]


def _loop_instructions(out_file: Path, iterations: int) -> dict[str, float]:
    """Instructions per operation from the parts of one counted round: part 1 is everything
    before the first loop; then each loop, and what ran between two loops, in turn."""
    totals = []
    part = 1
    while (path := Path(f"{out_file}.{part}")).exists():
        text = path.read_text()
        totals.append(int(text.split("\ntotals:", 1)[1].split()[0]))
        part += 1
    loops = totals[1::2]
    if len(loops) < len(OPERATIONS):
        raise Broken(f"callgrind wrote {len(totals)} parts, not the {2 * len(OPERATIONS)} of a round")
    counts = {op: iterations for op in OPERATIONS} | {"atomic10": max(1, iterations // 10)}
    return {op: loops[index] / counts[op] for index, op in enumerate(OPERATIONS)}


def fresh_database(server_url: str, name: str) -> str:
    """The URL of an empty database ``name`` on the Postgres server of ``server_url``."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


WARMUP_TRIPLETS = 2  # per operation, before the measured ones: discarded


def run_overhead(plan: Plan, workdir: Path) -> dict[str, Any]:
    """Per operation, slices of ``plan.overhead_slice`` operations of that kind alternate plain /
    unwatched / watched, across the two worker processes, ``plan.overhead_slices`` triplets of
    them, the order rotated each triplet."""
    size, triplets = plan.overhead_slice, plan.overhead_slices
    out: dict[str, Any] = {
        "slice": size,
        "triplets": triplets,
        "warmup_triplets": WARMUP_TRIPLETS,
        "floor_iterations": plan.overhead_iterations,
        "floor_repeats": plan.overhead_repeats,
        "database": "postgresql" if os.environ.get("DATABASE_URL") else "sqlite",
    }
    workers: list[OverheadWorker] = []
    try:
        plain = OverheadWorker("bench.settings_plain", "plain", plan.overhead_iterations, workdir)
        workers.append(plain)
        reactive = OverheadWorker("bench.settings", "unwatched,watched", plan.overhead_iterations, workdir)
        workers.append(reactive)
        order = [("plain", plain), ("unwatched", reactive), ("watched", reactive)]
        slices: dict[str, dict[str, list[float]]] = {
            variant: {op: [] for op in OPERATIONS} for variant, _ in order
        }
        for op in OPERATIONS:
            # The first triplets warm up (imports, statement caches, first pages): discarded.
            for triplet in range(-WARMUP_TRIPLETS, triplets):
                # Rotate the order each triplet so no variant always runs right after another one.
                shift = triplet % 3
                for variant, worker in order[shift:] + order[:shift]:
                    us = worker.ask(f"slice {variant} {op} {size}")["us"]
                    if triplet >= 0:
                        slices[variant][op].append(us)
        out["clock"] = "CPU time" if reactive.hello["clock"] == "process_time_ns" else "wall time"
        floors = [reactive.ask("floor") for _ in range(plan.overhead_repeats)]
        out["database_floor_us"] = {
            part: statistics.median(floor[part] for floor in floors)
            for part in ("insert", "insert_and_record")
        }
        out["checks"] = {"plain": plain.ask("check"), "reactive": reactive.ask("check")}
    finally:
        for worker in workers:
            worker.close()
    plain_check = out["checks"]["plain"]
    if (
        plain_check["reactive_modules"]
        or plain_check["bench_functions_imported"]
        or plain_check["compilers_patched"]
    ):
        raise Broken(f"the plain overhead run loaded reactive: {plain_check}")
    out.update(slice_summary(slices))
    out["ratio_of"] = "median of the triplets' ratios"
    return out


COUNT_COLUMNS = [
    "operation",
    "plain",
    "reactive unwatched",
    "reactive watched",
    "unwatched / plain",
    "watched / plain",
]


def count_rows(counted: dict[str, Any]) -> list[list[str]]:
    """Instructions per operation (thousands), from ``count_instructions``."""
    return _variant_rows(counted["per_operation"], counted["ratio"], lambda value: f"{value / 1000:,.1f}k")


def _variant_rows(
    values: dict[str, dict[str, float]], ratio: dict[str, dict[str, float]], shown: Callable[[float], str]
) -> list[list[str]]:
    """One row per operation: each variant's value, as ``shown``, then the two ratios to plain."""
    return [
        [
            OPERATION_LABELS[op],
            *(shown(values[variant][op]) for variant in ("plain", "unwatched", "watched")),
            f"{ratio['unwatched'][op]:.2f}x",
            f"{ratio['watched'][op]:.2f}x",
        ]
        for op in OPERATIONS
    ]


OVERHEAD_COLUMNS = [
    "operation",
    "plain µs",
    "reactive unwatched µs",
    "reactive watched µs",
    "unwatched / plain",
    "watched / plain",
]


def overhead_rows(o: dict[str, Any]) -> list[list[str]]:
    return _variant_rows(o["median_us"], o["ratio"], number) + _floor_rows(o)


def _floor_rows(o: dict[str, Any]) -> list[list[str]]:
    """The database's share of the change record: a plain INSERT straight on the DB-API
    connection, and the same INSERT with a create's log row in one transaction."""
    floor = o.get("database_floor_us")  # runs before it measured none
    if not floor:
        return []
    plain, recorded = floor["insert"], floor["insert_and_record"]
    return [
        [
            "database alone: INSERT; with a log row",
            number(plain),
            number(recorded),
            "-",
            f"{recorded / plain:.2f}x",
            "-",
        ]
    ]
