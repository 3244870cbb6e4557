#!/usr/bin/env python
"""Commit -> subscriber latency of the embedded default, and the write-tracking overhead.

Run from the repository root (after ``make install``)::

    .venv/bin/python bench/latency.py            # the full run, about 2-3 minutes
    .venv/bin/python bench/latency.py --quick    # a smoke test, a few seconds

Part a: for N = 1, 100 and 1,000 subscribers, a Daphne server (``bench.settings``: the embedded
backend, SQLite WAL) in a subprocess; this process opens N subscriber sockets, all subscribed to
``benchapp.counter(key=N)`` (one shared query instance), and one writer socket that calls the
``benchapp.bump`` action on an open-loop schedule. ``bump`` returns ``time.monotonic_ns()``
taken just before COMMIT; each subscriber stamps ``time.monotonic_ns()`` first thing in its
frame callback. Both clocks are the same system-wide monotonic clock (one host).

Part b: plain ORM writes timed in two subprocesses, without ``reactive`` and with it (table
unwatched, then watched). See ``bench/overhead.py``.

Prints a table; writes ``bench/results/latency-<UTC date>.json`` and ``latency-latest.md``
(``--quick``: under ``bench/results/quick/``). Timings are never asserted; exits 1 only when
something is broken (a lost update, a failed write, a dropped connection, a dead server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import platform
import re
import resource
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reactive.client import ReactiveClient  # noqa: E402
from reactive.client.testing import InstrumentedClient  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONNECT_CONCURRENCY = 50  # under Twisted's default listen backlog (50)
DELIVERY_TIMEOUT_S = 30.0
OVERHEAD_ROUND_TIMEOUT_S = 300.0
DAPHNE = [sys.executable, "-m", "daphne"]
ACCESS_LINE = re.compile(r'^\S+ - - \[[^\]]+\] "(WSCONNECTING|WSCONNECT|WSDISCONNECT|WSREJECT) ')


@dataclass(frozen=True)
class FanoutPlan:
    subscribers: int
    writes: int
    rate: float  # writes per second, open loop


@dataclass(frozen=True)
class Plan:
    name: str
    fanout: tuple[FanoutPlan, ...]
    warmup: int
    overhead_iterations: int
    overhead_repeats: int


PLANS = {
    "full": Plan(
        "full",
        (FanoutPlan(1, 300, 50.0), FanoutPlan(100, 200, 20.0), FanoutPlan(1000, 60, 4.0)),
        warmup=20,
        overhead_iterations=3000,
        overhead_repeats=5,
    ),
    "quick": Plan(
        "quick",
        (FanoutPlan(1, 20, 50.0), FanoutPlan(20, 10, 20.0)),
        warmup=3,
        overhead_iterations=200,
        overhead_repeats=2,
    ),
}


class Broken(Exception):
    """Something the benchmark needs did not work (not a slow number: a wrong one)."""


# -- helpers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Broken(f"server exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise Broken(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary_ms(values_ns: list[int]) -> dict[str, float | None]:
    ms = [v / 1e6 for v in values_ns]
    return {
        "count": len(ms),
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else None,
    }


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (``/proc/stat``; idle and iowait excluded)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def raise_fd_limit(wanted: int = 65536) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def base_env(db_path: Path, settings: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    env.update(
        DJANGO_SETTINGS_MODULE=settings,
        SQLITE_PATH=str(db_path),
        PYTHONPATH=str(ROOT),
        PYTHONDONTWRITEBYTECODE="1",
        REACTIVE_LOG_LEVEL="WARNING",
    )
    return env


class DaphneServer:
    """``python -m daphne`` on a free loopback port with ``bench.settings`` and a fresh database."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.db = workdir / "db.sqlite3"
        self.log_path = workdir / "daphne.log"
        self.port = free_port()
        self.env = base_env(self.db, "bench.settings")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/reactive/ws/"

    def start(self) -> None:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=self.env, check=True
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*DAPHNE, "-b", "127.0.0.1", "-p", str(self.port), "project.asgi:application"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches this script only; it stops the server
            )
        wait_for_port(self.port, self.process)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float:
        """utime + stime of the server process (all its threads), from ``/proc/<pid>/stat``."""
        assert self.process is not None
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_mib(self) -> float | None:
        assert self.process is not None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return None

    def threads(self) -> int | None:
        assert self.process is not None
        with contextlib.suppress(OSError):
            return len(os.listdir(f"/proc/{self.process.pid}/task"))
        return None

    def log_problems(self, limit: int = 60) -> list[str]:
        """The server's log without Daphne's access lines: what it logged at WARNING and above."""
        if not self.log_path.exists():
            return []
        lines = [
            line
            for line in self.log_path.read_text(errors="replace").splitlines()
            if not ACCESS_LINE.search(line)
        ]
        return lines[:limit] + ([f"... {len(lines) - limit} more lines"] if len(lines) > limit else [])

    def stop(self) -> int | None:
        if self.process is None:
            return None
        try:
            if self.process.poll() is None:
                self.process.terminate()
                self.process.wait(timeout=10)
        except BaseException:  # a timeout, or Ctrl-C while waiting: make sure it is gone
            self.process.kill()
            self.process.wait()
            if not isinstance(sys.exception(), subprocess.TimeoutExpired):
                raise
        return self.process.returncode


# -- part a: commit -> subscriber latency ----------------------------------------------------


@dataclass
class Subscriber:
    client: InstrumentedClient
    receipts: list[tuple[int, Any]] = field(default_factory=list)  # (receipt ns, frame)
    sub: Any = None

    def last_value(self) -> int | None:
        value = self.sub.value if self.sub is not None else None
        return value.get("value") if isinstance(value, dict) else None


def make_subscriber(url: str) -> Subscriber:
    client = InstrumentedClient(url, reconnect=False, connect_timeout=60.0)
    subscriber = Subscriber(client)
    receipts = subscriber.receipts
    monotonic_ns = time.monotonic_ns

    def on_frame(frame: dict[str, Any]) -> None:
        t = monotonic_ns()  # first thing: the receipt stamp
        if frame["type"] == "transition":
            receipts.append((t, frame))

    client.on_frame(on_frame)
    return subscriber


async def open_subscribers(url: str, n: int, key: int) -> tuple[list[Subscriber], list[str]]:
    """Connect n sockets (at most CONNECT_CONCURRENCY at once), each with one subscription."""
    semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)
    subscribers = [make_subscriber(url) for _ in range(n)]
    errors: list[str] = []

    async def open_one(subscriber: Subscriber) -> None:
        async with semaphore:
            try:
                await subscriber.client.connect()
                subscriber.sub = subscriber.client.subscribe("benchapp.counter", {"key": key})
                await subscriber.sub.first(timeout=60)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(open_one(s) for s in subscribers))
    return subscribers, errors


async def close_all(clients: list[ReactiveClient]) -> None:
    semaphore = asyncio.Semaphore(200)

    async def close_one(client: ReactiveClient) -> None:
        async with semaphore:
            with contextlib.suppress(Exception):
                await client.close()

    await asyncio.gather(*(close_one(c) for c in clients))


@dataclass
class WriteRecord:
    intended_ns: int
    sent_ns: int
    t0_ns: int | None = None
    done_ns: int | None = None
    error: str | None = None


async def run_writes(writer: ReactiveClient, key: int, count: int, rate: float) -> list[WriteRecord]:
    """``count`` bumps on an open-loop schedule: each goes out at its slot, answered or not."""
    period_ns = int(1e9 / rate)
    start = time.monotonic_ns() + 20_000_000
    records: list[WriteRecord] = []
    tasks = []

    async def one(record: WriteRecord) -> None:
        try:
            record.t0_ns = await writer.action("benchapp.bump", {"key": key}, timeout=60)
            record.done_ns = time.monotonic_ns()
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"

    for i in range(count):
        intended = start + i * period_ns
        delay = intended - time.monotonic_ns()
        if delay > 0:
            await asyncio.sleep(delay / 1e9)
        record = WriteRecord(intended, time.monotonic_ns())
        records.append(record)
        tasks.append(asyncio.create_task(one(record)))
    await asyncio.gather(*tasks)
    return records


async def wait_all_at(subscribers: list[Subscriber], value: int, timeout: float) -> float:
    """Wait until every subscription shows ``value``; returns the time waited (s)."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if all(s.last_value() == value for s in subscribers):
            break
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def analyse_fanout(
    groups: dict[str, list[Subscriber]], writes: list[WriteRecord], warmup: int, current: int
) -> dict[str, Any]:
    """Match each pushed value to its write and summarise, overall and per group of subscribers.

    Commit order is t0 order (the database holds the row's write lock from the UPDATE to the
    COMMIT), so the k-th smallest t0 produced the value warm-up + k."""
    done = sorted((w for w in writes if w.t0_ns is not None), key=lambda w: w.t0_ns)
    by_value = {warmup + i + 1: w for i, w in enumerate(done)}
    latencies: list[int] = []
    from_intended: list[int] = []
    by_group: dict[str, list[int]] = {name: [] for name in groups}
    per_value: dict[int, list[int]] = {v: [] for v in by_value}
    coalesced = out_of_order = unexpected = lost = 0
    for name, subscribers in groups.items():
        for s in subscribers:
            seen_last = warmup
            seen: set[int] = set()
            for t, frame in s.receipts:
                for update in frame["updates"]:
                    value = (update.get("value") or {}).get("value")
                    write = by_value.get(value)
                    if write is None:
                        unexpected += 1
                        continue
                    if value <= seen_last:
                        out_of_order += 1
                    seen_last = max(seen_last, value)
                    seen.add(value)
                    latencies.append(t - write.t0_ns)
                    by_group[name].append(t - write.t0_ns)
                    from_intended.append(t - write.intended_ns)
                    per_value[value].append(t - write.t0_ns)
            coalesced += len(by_value) - len(seen)
            if s.last_value() != current or not s.client.is_connected:
                lost += 1
    rtt = [w.done_ns - w.sent_ns for w in writes if w.done_ns is not None]
    sends = [w.sent_ns for w in writes]
    achieved = (len(sends) - 1) / ((sends[-1] - sends[0]) / 1e9) if len(sends) > 1 else None
    return {
        "achieved_rate": round(achieved, 2) if achieved else None,
        "deliveries": len(latencies),
        "latency_ms": summary_ms(latencies),
        "latency_ms_by_server": {name: summary_ms(values) for name, values in by_group.items()},
        "latency_from_intended_send_ms": summary_ms(from_intended),
        "first_receiver_ms": summary_ms([min(v) for v in per_value.values() if v]),
        "last_receiver_ms": summary_ms([max(v) for v in per_value.values() if v]),
        "bump_round_trip_ms": summary_ms(rtt),
        "coalesced": coalesced,
        "out_of_order": out_of_order,
        "unexpected_values": unexpected,
        "lost_updates": lost,
    }


async def fanout_case(server: DaphneServer, plan: FanoutPlan, warmup: int) -> dict[str, Any]:
    n, key = plan.subscribers, plan.subscribers
    result: dict[str, Any] = {
        "subscribers": n,
        "writes": plan.writes,
        "target_rate": plan.rate,
        "warmup_writes": warmup,
        "problems": [],
    }
    writer = ReactiveClient(server.url, reconnect=False)
    subscribers: list[Subscriber] = []
    try:
        await writer.connect()
        await writer.action("benchapp.reset", {"key": key})

        started = time.monotonic()
        subscribers, errors = await open_subscribers(server.url, n, key)
        result["connect_seconds"] = round(time.monotonic() - started, 3)
        result["server_rss_mib"] = server.rss_mib()
        result["server_threads"] = server.threads()
        if errors:
            result["connect_errors"] = {"count": len(errors), "first": sorted(set(errors))[:10]}
            raise Broken(f"N={n}: {len(errors)} of {n} subscribers failed to connect/subscribe: {errors[0]}")

        # Warm-up: same schedule, discarded.
        warm = await run_writes(writer, key, warmup, plan.rate)
        failed = [w.error for w in warm if w.error]
        if failed:
            raise Broken(f"N={n}: {len(failed)} warm-up writes failed: {failed[0]}")
        if await wait_all_at(subscribers, warmup, DELIVERY_TIMEOUT_S) >= DELIVERY_TIMEOUT_S:
            behind = sum(s.last_value() != warmup for s in subscribers)
            raise Broken(f"N={n}: {behind} subscribers never saw the warm-up's last value {warmup}")
        for s in subscribers:
            s.receipts.clear()
        stats_before = await writer.action("benchapp.stats")

        # Measured phase.
        busy0 = machine_busy_seconds()
        server_cpu0, self_cpu0, wall0 = server.cpu_seconds(), self_cpu_seconds(), time.monotonic()
        writes = await run_writes(writer, key, plan.writes, plan.rate)
        final = warmup + plan.writes
        waited = await wait_all_at(subscribers, final, DELIVERY_TIMEOUT_S)
        wall = time.monotonic() - wall0
        server_cpu = server.cpu_seconds() - server_cpu0
        self_cpu = self_cpu_seconds() - self_cpu0
        busy = machine_busy_seconds() - busy0
        stats_after = await writer.action("benchapp.stats")
        current = (await writer.query("benchapp.counter", {"key": key}))["value"]
        result["final_wait_seconds"] = round(waited, 3)
        result["server_rss_mib_after"] = server.rss_mib()

        failed = [w for w in writes if w.error]
        if failed:
            result["problems"].append(f"{len(failed)} writes failed, first: {failed[0].error}")
        if current != final:
            result["problems"].append(f"counter is {current}, expected {final} after {plan.writes} writes")

        analysis = analyse_fanout({"server": subscribers}, writes, warmup, current)
        deliveries, lost = analysis["deliveries"], analysis["lost_updates"]
        out_of_order, unexpected = analysis["out_of_order"], analysis["unexpected_values"]
        runs_before = stats_before["runs"].get("benchapp.counter", 0)
        runs_after = stats_after["runs"].get("benchapp.counter", 0)

        result.update(analysis)
        result.update(
            {
                "expected_deliveries": n * plan.writes,
                "final_value": current,
                "query_reruns": runs_after - runs_before,
                "bump_retries": stats_after["bump_retries"] - stats_before["bump_retries"],
                "bump_retries_total": stats_after["bump_retries"],
                "wall_seconds": round(wall, 3),
                "server_cpu_seconds": round(server_cpu, 3),
                "server_cpu_share": round(server_cpu / wall, 3),
                "server_cpu_us_per_delivery": round(server_cpu / deliveries * 1e6, 1) if deliveries else None,
                "loadgen_cpu_seconds": round(self_cpu, 3),
                "loadgen_cpu_share": round(self_cpu / wall, 3),
                # Everything else on the machine during the measured phase (other users' work).
                "other_cpu_share": round(max(0.0, busy - server_cpu - self_cpu) / wall, 3),
            }
        )
        if lost:
            result["problems"].append(
                f"{lost} of {n} subscribers do not show the final value {current} (lost update)"
            )
        if out_of_order or unexpected:
            result["problems"].append(f"{out_of_order} out-of-order and {unexpected} unexpected values")
        return result
    finally:
        await close_all([writer] + [s.client for s in subscribers])


def run_fanout(plan: FanoutPlan, warmup: int, workdir: Path) -> dict[str, Any]:
    server = DaphneServer(workdir)
    result: dict[str, Any] = {"subscribers": plan.subscribers, "problems": []}
    try:
        server.start()
        result = asyncio.run(fanout_case(server, plan, warmup))
    except Broken as exc:
        result["problems"].append(str(exc))
    finally:
        alive = server.alive()
        code = server.stop()
        if not alive:
            result["problems"].append(f"the server process died (exit code {code})")
        problems = server.log_problems()
        if problems:
            result["server_log"] = problems
    return result


# -- part b: tracking overhead -----------------------------------------------------------------


class OverheadWorker:
    """A ``bench.overhead`` subprocess, driven one round at a time over stdin/stdout."""

    def __init__(self, settings: str, variants: str, iterations: int, workdir: Path) -> None:
        db = workdir / f"overhead-{settings.rsplit('.', 1)[-1]}.sqlite3"
        self.settings = settings
        self.stderr = (workdir / f"overhead-{settings.rsplit('.', 1)[-1]}.log").open("w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.overhead", "--variants", variants, "--iterations", str(iterations)],
            cwd=ROOT,
            env=base_env(db, settings),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            start_new_session=True,
        )
        self.read()  # {"ready": true} once migrated

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


def run_overhead(plan: Plan, workdir: Path) -> dict[str, Any]:
    """Rounds alternate plain / unwatched / watched, across the two worker processes."""
    from bench.overhead import OPERATIONS

    out: dict[str, Any] = {"iterations": plan.overhead_iterations, "repeats": plan.overhead_repeats}
    workers: list[OverheadWorker] = []
    try:
        plain = OverheadWorker("bench.settings_plain", "plain", plan.overhead_iterations, workdir)
        workers.append(plain)
        reactive = OverheadWorker("bench.settings", "unwatched,watched", plan.overhead_iterations, workdir)
        workers.append(reactive)
        order = [("plain", plain), ("unwatched", reactive), ("watched", reactive)]
        warmup = max(10, plan.overhead_iterations // 10)
        for variant, worker in order:  # discarded: imports, statement caches, first pages
            worker.ask(f"round {variant} {warmup}")
        runs: dict[str, list[dict[str, float]]] = {variant: [] for variant, _ in order}
        for repeat in range(plan.overhead_repeats):
            # Rotate the order each round so no variant always runs right after another one.
            for variant, worker in order[repeat % 3 :] + order[: repeat % 3]:
                runs[variant].append(worker.ask(f"round {variant}"))
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
    median = {
        variant: {op: statistics.median(r[op] for r in rows) for op in OPERATIONS}
        for variant, rows in runs.items()
    }
    out["median_us"] = median
    out["runs_us"] = {
        variant: {op: [round(r[op], 2) for r in rows] for op in OPERATIONS} for variant, rows in runs.items()
    }
    out["ratio"] = {
        name: {op: median[name][op] / median["plain"][op] for op in OPERATIONS}
        for name in ("unwatched", "watched")
    }
    return out


# -- report ------------------------------------------------------------------------------------


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


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


FANOUT_COLUMNS = [
    "N",
    "writes (rate target/achieved)",
    "deliveries",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "last-recv p50 ms",
    "last-recv p99 ms",
    "lost",
    "coalesced",
    "server CPU µs/delivery",
    "server CPU",
    "load-gen CPU",
    "other CPU",
]


def fanout_row(r: dict[str, Any]) -> list[str]:
    if "latency_ms" not in r:
        return [str(r["subscribers"]), "FAILED: " + "; ".join(r["problems"])[:150]] + [""] * 13
    lat, last = r["latency_ms"], r["last_receiver_ms"]
    return [
        str(r["subscribers"]),
        f"{r['writes']} ({r['target_rate']:g}/{_f(r['achieved_rate'])}/s)",
        f"{r['deliveries']}/{r['expected_deliveries']}",
        _f(lat["p50"], 2),
        _f(lat["p90"], 2),
        _f(lat["p99"], 2),
        _f(lat["max"], 2),
        _f(last["p50"], 2),
        _f(last["p99"], 2),
        str(r["lost_updates"]),
        str(r["coalesced"]),
        _f(r["server_cpu_us_per_delivery"], 0),
        f"{r['server_cpu_share'] * 100:.0f}%",
        f"{r['loadgen_cpu_share'] * 100:.0f}%",
        f"{r['other_cpu_share'] * 100:.0f}%",
    ]


def extra_row(r: dict[str, Any]) -> list[str]:
    if "latency_ms" not in r:
        return [str(r["subscribers"])] + ["-"] * 8
    return [
        str(r["subscribers"]),
        _f(r["first_receiver_ms"]["p50"], 2),
        _f(r["latency_from_intended_send_ms"]["p50"], 2),
        _f(r["latency_from_intended_send_ms"]["p99"], 2),
        _f(r["bump_round_trip_ms"]["p50"], 2),
        str(r["bump_retries"]),
        str(r["query_reruns"]),
        f"{r['connect_seconds']:.1f}",
        _f(r.get("server_rss_mib"), 0),
    ]


EXTRA_COLUMNS = [
    "N",
    "first-recv p50 ms",
    "intended-send→recv p50 ms",
    "intended-send→recv p99 ms",
    "bump round trip p50 ms",
    "bump retries",
    "query re-runs",
    "connect+subscribe s",
    "server RSS MiB",
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
    from bench.overhead import OPERATION_LABELS, OPERATIONS

    med, ratio = o["median_us"], o["ratio"]
    return [
        [
            OPERATION_LABELS[op],
            _f(med["plain"][op]),
            _f(med["unwatched"][op]),
            _f(med["watched"][op]),
            f"{ratio['unwatched'][op]:.2f}x",
            f"{ratio['watched'][op]:.2f}x",
        ]
        for op in OPERATIONS
    ]


def text_table(columns: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def md_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render(report: dict[str, Any], table) -> str:
    parts = [
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
            f"Write-tracking overhead on plain ORM writes (median of {o['repeats']} rounds' means, "
            f"{o['iterations']} ops per round, atomic: {max(1, o['iterations'] // 10)} blocks; "
            "rounds alternate between the variants)",
            table(OVERHEAD_COLUMNS, overhead_rows(o)),
        ]
    notes = [f"  N={r['subscribers']}: {note}" for r in report["fanout"] for note in notes_of(r)]
    if notes:
        parts += ["", "NOTES (not failures):", *notes]
    problems = [(r["subscribers"], p) for r in report["fanout"] for p in r["problems"]]
    problems += [("overhead", p) for p in report.get("overhead_problems", [])]
    if problems:
        parts += ["", "PROBLEMS:"] + [f"  N={n}: {p}" if n != "overhead" else f"  {p}" for n, p in problems]
    return "\n".join(parts)


def notes_of(r: dict[str, Any]) -> list[str]:
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


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    m = report["machine"]
    facts = [
        ["date", m["date"]],
        ["command", f"`{m['command']}`"],
        ["nproc", str(m["nproc"])],
        ["CPU", str(m["cpu_model"])],
        ["load average at start", " ".join(map(str, m["load_average_at_start"]))],
        [
            "Python / Django / Daphne / websockets",
            f"{m['python']} / {m['django']} / {m['daphne']} / {m['websockets']}",
        ],
        ["kernel", m["kernel"]],
        ["git commit", str(m["git_commit"])],
    ]
    text = [
        "# Latency benchmark: latest results",
        "",
        "Written by `bench/latency.py`; the method and what each number means are in `bench/README.md`.",
        "The load generator runs on the same cores as the server: fan-out tails are pessimistic.",
        "",
        md_table(["fact", "value"], facts),
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
            f"Median of {o['repeats']} rounds' means, {o['iterations']} operations per round "
            f"({max(1, o['iterations'] // 10)} blocks for the atomic row); rounds alternate between "
            "the plain and the reactive process and between the variants.",
            "",
            md_table(OVERHEAD_COLUMNS, overhead_rows(o)),
        ]
    notes = [f"N={r['subscribers']}: {note}" for r in report["fanout"] for note in notes_of(r)]
    if notes:
        text += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    problems = [p for r in report["fanout"] for p in r["problems"]] + report.get("overhead_problems", [])
    if problems:
        text += ["", "## Problems", ""] + [f"- {p}" for p in problems]
    path.write_text("\n".join(text) + "\n")


# -- main --------------------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description="Commit -> subscriber latency and write-tracking overhead.")
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke test of a few seconds")
    parser.add_argument("--skip-overhead", action="store_true", help="only the latency part")
    parser.add_argument("--only", help="comma-separated subscriber counts of the plan to run (e.g. 1000)")
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, _raise_interrupt)

    plan = PLANS["quick" if options.quick else "full"]
    if options.only:
        wanted = {int(n) for n in options.only.split(",")}
        plan = dataclasses.replace(plan, fanout=tuple(f for f in plan.fanout if f.subscribers in wanted))
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):
        exe = exe.relative_to(ROOT)
    command = shlex.join([str(exe), *sys.argv])
    fd_limit = raise_fd_limit()  # the Daphne subprocesses inherit it
    report: dict[str, Any] = {
        "plan": plan.name,
        "machine": machine_facts(command),
        "fd_limit": list(fd_limit),
        "fanout": [],
    }
    print(f"{command}  ({report['machine']['date']}, nproc {report['machine']['nproc']})", flush=True)

    with tempfile.TemporaryDirectory(prefix="reactive-bench-") as tmp:
        for fanout in plan.fanout:
            workdir = Path(tmp) / f"n{fanout.subscribers}"
            workdir.mkdir()
            print(f"  N={fanout.subscribers}: {fanout.writes} writes at {fanout.rate:g}/s ...", flush=True)
            report["fanout"].append(run_fanout(fanout, plan.warmup, workdir))
        if not options.skip_overhead:
            print(
                f"  write overhead: {plan.overhead_iterations} ops x {plan.overhead_repeats} ...", flush=True
            )
            try:
                report["overhead"] = run_overhead(plan, Path(tmp))
            except Broken as exc:
                report["overhead_problems"] = [str(exc)]

    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print()
    print(render(report, text_table))

    out_dir = RESULTS / "quick" if options.quick else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    json_path = out_dir / f"latency-{day}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path = out_dir / "latency-latest.md"
    write_markdown(md_path, report)
    print(f"\nwrote {json_path.relative_to(ROOT)} and {md_path.relative_to(ROOT)}")

    broken = [p for r in report["fanout"] for p in r["problems"]] + report.get("overhead_problems", [])
    if broken:
        print(f"\nBROKEN: {len(broken)} problem(s), see above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped, nothing written", file=sys.stderr)
        sys.exit(130)
