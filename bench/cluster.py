#!/usr/bin/env python
"""The Redis backend: commit -> client latency over two servers, Redis round trips per change
record, and the invalidator's lag under 500 writes/s.

Run from the repository root (after ``make install``; needs ``redis-server`` and Postgres)::

    .venv/bin/python bench/cluster.py            # the full run, about 4-5 minutes
    .venv/bin/python bench/cluster.py --quick    # a smoke test: tiny counts

A private ``redis-server`` and Postgres (``harness/services.py``), a database migrated with
``bench.cluster_settings`` (``bench.settings`` on the Redis backend), two Daphne servers A and B
and one ``manage.py reactive_worker``, all on loopback. This process is the load generator.

1. Commit -> client latency: N = 1 and N = 1,000 subscribers of ``benchapp.counter(key)`` (one
   query instance), the 1,000 split 500 on A / 500 on B, writes through A (``benchapp.bump``,
   open loop); beside it the embedded backend (one Daphne, SQLite WAL) with the same N, run by
   ``bench/latency.py``'s own machinery. Same stamps: ``t0`` just before COMMIT, receipt first
   thing in the client's frame callback, one system-wide monotonic clock.
2. Redis commands per change record: ``MONITOR`` over short windows (idle; spaced writes to a
   subscribed counter; spaced writes to a counter nobody reads; a burst), each command
   attributed to the process whose socket sent it, and ``INFO commandstats`` as a cross-check.
3. Invalidator lag: direct ORM writers (``Counter.objects.filter(key=k).update(...)`` in
   autocommit, in subprocesses: ``--writer`` mode of this script) at 500 writes/s over 100
   counters with one subscriber each; lag = receipt - commit, the worker's CPU share, pushes vs
   writes (coalescing), and the backlog of ``reactive:log`` behind ``reactive:progress``.

Prints tables; writes ``bench/results/cluster-<UTC date>.json`` and ``cluster-latest.md``
(``--quick``: under ``bench/results/quick/``). Exits 1 only when something is broken (a lost
final value, a failed write, a dropped connection, a dead process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.latency import (  # noqa: E402
    ACCESS_LINE,
    CLK_TCK,
    CONNECT_CONCURRENCY,
    DELIVERY_TIMEOUT_S,
    RESULTS,
    Broken,
    DaphneServer,
    FanoutPlan,
    Subscriber,
    _f,
    analyse_fanout,
    close_all,
    free_port,
    machine_busy_seconds,
    machine_facts,
    make_subscriber,
    md_table,
    open_subscribers,
    percentile,
    raise_fd_limit,
    run_fanout,
    run_writes,
    self_cpu_seconds,
    summary_ms,
    text_table,
    wait_all_at,
    wait_for_port,
)
from reactive.client import ReactiveClient  # noqa: E402

SETTINGS = "bench.cluster_settings"
DAPHNE_LIMITS = ["--websocket-max-message-size", "4194304", "--websocket-max-frame-size", "4194304"]
ASGI_APP = "project.asgi:application"
LUA = ROOT / "reactive" / "lua"
# Redis keys of the backend (reactive/backends/redis.py).
VERSION_KEY, LOG_KEY, PROGRESS_KEY, EPOCH_KEY = (
    "reactive:version",
    "reactive:log",
    "reactive:progress",
    "reactive:epoch",
)
REQUESTS_KEY = "reactive:requests"
ROUND_TRIP_KEYS = (100_001, 100_002)  # part 2: the subscribed counter, the unwatched one
LAG_KEY_BASE = 200_000  # part 3: counters LAG_KEY_BASE + i


@dataclass(frozen=True)
class ClusterPlan:
    name: str
    floor: FanoutPlan  # 1 subscriber
    fanout: FanoutPlan  # N subscribers of one instance, half on A and half on B
    warmup: int
    rt_writes: int  # part 2: writes per window
    rt_spacing_s: float
    rt_idle_s: float
    lag_counters: int  # part 3: counters, one subscriber each
    lag_rate: float  # writes/s, all writers together
    lag_seconds: float  # measured window
    lag_warmup_seconds: float
    lag_writers: int


PLANS = {
    "full": ClusterPlan(
        "full",
        FanoutPlan(1, 300, 50.0),
        FanoutPlan(1000, 60, 4.0),
        warmup=20,
        rt_writes=50,
        rt_spacing_s=0.1,
        rt_idle_s=3.0,
        lag_counters=100,
        lag_rate=500.0,
        lag_seconds=10.0,
        lag_warmup_seconds=2.0,
        lag_writers=2,
    ),
    "quick": ClusterPlan(
        "quick",
        FanoutPlan(1, 20, 50.0),
        FanoutPlan(20, 10, 20.0),
        warmup=3,
        rt_writes=5,
        rt_spacing_s=0.1,
        rt_idle_s=1.0,
        lag_counters=10,
        lag_rate=100.0,
        lag_seconds=1.0,
        lag_warmup_seconds=0.5,
        lag_writers=2,
    ),
}


# -- processes ---------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime of a process (all threads), plus its reaped children's with ``children``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def tree_cpu_seconds(root: int) -> float:
    """A process, its live children and its reaped ones (Postgres: the postmaster and backends)."""
    total = proc_cpu_seconds(root, children=True)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == root:
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of a process's sockets: how Redis (MONITOR) sees its connections."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[9]) in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class ClusterProcess(DaphneServer):
    """A Daphne server or the worker: ``DaphneServer``'s ``/proc`` helpers, another command line."""

    def __init__(
        self, name: str, workdir: Path, env: dict[str, str], argv: list[str], port: int | None
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.env = env
        self.argv = argv
        self.port = port  # type: ignore[assignment]
        self.process = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches this script only; it stops the process
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_problems(self, limit: int = 60) -> list[str]:
        if not self.log_path.exists():
            return []
        quiet = re.compile(r"^reactive worker (\w+ started; waiting for the lease|stopped)$")
        lines = [
            line
            for line in self.log_path.read_text(errors="replace").splitlines()
            if not ACCESS_LINE.search(line) and not quiet.match(line)
        ]
        return lines[:limit] + ([f"... {len(lines) - limit} more lines"] if len(lines) > limit else [])


class Cluster:
    """Redis, Postgres, servers A and B and one worker, all started here and stopped in ``stop``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.redis_service: Any = None
        self.postgres_service: Any = None
        self.processes: dict[str, ClusterProcess] = {}
        self.env: dict[str, str] = {}

    # lifecycle

    def start(self) -> None:
        from harness.services import start_postgres, start_redis

        errors: list[BaseException] = []

        def start_redis_() -> None:
            try:
                self.redis_service = start_redis(self.directory)
            except BaseException as exc:
                errors.append(exc)

        def start_postgres_() -> None:
            try:
                self.postgres_service = start_postgres(self.directory)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start_redis_), threading.Thread(target=start_postgres_)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        env = dict(os.environ)
        env.pop("SQLITE_PATH", None)
        env.update(
            DJANGO_SETTINGS_MODULE=SETTINGS,
            DATABASE_URL=self.postgres_service.url,
            REDIS_URL=self.redis_service.url,
            PYTHONPATH=str(ROOT),
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONUNBUFFERED="1",
            REACTIVE_LOG_LEVEL="WARNING",
        )
        self.env = env
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
        )
        for name in ("A", "B"):
            port = free_port()
            argv = [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                *DAPHNE_LIMITS,
                ASGI_APP,
            ]
            self.processes[name] = ClusterProcess(name, self.directory, env, argv, port)
        self.processes["worker"] = ClusterProcess(
            "worker", self.directory, env, [sys.executable, "manage.py", "reactive_worker"], None
        )
        for process in self.processes.values():
            process.start()
        for name in ("A", "B"):
            server = self.processes[name]
            assert server.process is not None
            wait_for_port(server.port, server.process, timeout=60)
        self.wait_for_leader()

    def wait_for_leader(self, timeout: float = 60.0) -> None:
        worker = self.processes["worker"]
        deadline = time.monotonic() + timeout
        with self.redis() as client:
            while time.monotonic() < deadline:
                if not worker.alive():
                    raise Broken(f"the worker exited: {worker.log_problems()[-10:]}")
                if client.get(EPOCH_KEY) is not None:  # set once the worker leads (mark_state)
                    return
                time.sleep(0.05)
        raise Broken(f"the worker did not lead after {timeout} s")

    def stop(self) -> dict[str, Any]:
        """Stop everything; returns each process's exit code and whether it had died before."""
        status: dict[str, Any] = {}
        alive = {name: process.alive() for name, process in self.processes.items()}
        for process in self.processes.values():  # all at once: each takes a while
            if process.alive():
                with contextlib.suppress(OSError):
                    assert process.process is not None
                    process.process.terminate()
        for name, process in self.processes.items():
            died = process.process is not None and not alive[name]
            status[name] = {"died_before_stop": died, "exit": process.stop()}
        for service in (self.redis_service, self.postgres_service):
            if service is not None:
                with contextlib.suppress(Exception):
                    service.stop()
        return status

    # helpers

    @property
    def a(self) -> ClusterProcess:
        return self.processes["A"]

    @property
    def b(self) -> ClusterProcess:
        return self.processes["B"]

    @property
    def worker(self) -> ClusterProcess:
        return self.processes["worker"]

    def redis(self):
        import redis

        return redis.Redis.from_url(self.redis_service.url, socket_timeout=10, socket_connect_timeout=5)

    def dead(self) -> list[str]:
        return [name for name, process in self.processes.items() if not process.alive()]

    def cpu_snapshot(self, extra: dict[str, int] | None = None) -> dict[str, float]:
        snapshot = {
            "server A": self.a.cpu_seconds(),
            "server B": self.b.cpu_seconds(),
            "worker": self.worker.cpu_seconds(),
            "redis": proc_cpu_seconds(self.redis_service.process.pid),
            "postgres": tree_cpu_seconds(self.postgres_service.process.pid),
            "load-gen": self_cpu_seconds(),
            "_machine": machine_busy_seconds(),
            "_wall": time.monotonic(),
        }
        for name, pid in (extra or {}).items():
            snapshot[name] = proc_cpu_seconds(pid)
        return snapshot

    def port_owners(self) -> dict[int, str]:
        owners = {port: "load-gen" for port in local_ports(os.getpid())}
        for name, process in self.processes.items():
            if process.alive():
                owners.update(dict.fromkeys(local_ports(process.pid), name))
        return owners

    async def prime(self) -> list[ReactiveClient]:
        """One socket to each server, held for the whole run, and time for the worker to see both.

        A server process's hub starts with its first socket. The worker sends a batch's updates
        only to the hubs in its live-hubs cache (``RedisBackend.live_hubs``, refreshed once a
        second), and a hub missing from it gets no message at all, so no sequence gap either: a
        subscription made on a brand-new hub can miss every update of its first second for good
        (until the next change). Measured runs start after that second, in the steady state."""
        primers = [ReactiveClient(server.url, reconnect=False) for server in (self.a, self.b)]
        for primer in primers:
            await primer.connect()
        deadline = time.monotonic() + 30
        with self.redis() as client:
            while client.zcount("reactive:hubs", time.time(), "+inf") < 2:
                if time.monotonic() > deadline:
                    raise Broken("the two servers' hubs did not register in reactive:hubs")
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # > the worker's live-hubs cache (HEARTBEAT_SECONDS / 2 = 1 s)
        return primers

    async def settle(self, timeout: float = 15.0) -> None:
        """Until the worker has read every request and every record (after closing sockets)."""
        deadline = time.monotonic() + timeout
        with self.redis() as client:
            while time.monotonic() < deadline:
                head = int(client.get(VERSION_KEY) or 0)
                version, cursor = client.hmget(PROGRESS_KEY, "version", "requests")
                last = (
                    client.xinfo_stream(REQUESTS_KEY)["last-generated-id"]
                    if client.exists(REQUESTS_KEY)
                    else None
                )
                if int(version or 0) >= head and (last is None or cursor == last):
                    break
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)


def cpu_shares(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    wall = after["_wall"] - before["_wall"]
    seconds = {name: after[name] - before[name] for name in before if not name.startswith("_")}
    busy = after["_machine"] - before["_machine"]
    shares = {name: round(value / wall, 3) for name, value in seconds.items()}
    shares["other"] = round(max(0.0, busy - sum(seconds.values())) / wall, 3)
    return {
        "wall_seconds": round(wall, 3),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "shares": shares,
    }


# -- part 1: commit -> client latency ---------------------------------------------------------


async def redis_fanout_case(
    cluster: Cluster, plan: FanoutPlan, warmup: int, split: dict[str, int]
) -> dict[str, Any]:
    n, key = plan.subscribers, plan.subscribers
    result: dict[str, Any] = {
        "backend": "redis",
        "subscribers": n,
        "placement": split,
        "writes": plan.writes,
        "target_rate": plan.rate,
        "warmup_writes": warmup,
        "problems": [],
    }
    servers = {"A": cluster.a, "B": cluster.b}
    writer = ReactiveClient(cluster.a.url, reconnect=False)
    groups: dict[str, list[Subscriber]] = {}
    try:
        await writer.connect()
        await writer.action("benchapp.reset", {"key": key})
        started = time.monotonic()
        opened = await asyncio.gather(
            *(open_subscribers(servers[name].url, count, key) for name, count in split.items() if count)
        )
        errors: list[str] = []
        for name, (subscribers, errs) in zip([k for k, c in split.items() if c], opened, strict=True):
            groups[name] = subscribers
            errors += errs
        result["connect_seconds"] = round(time.monotonic() - started, 3)
        result["server_rss_mib"] = {name: s.rss_mib() for name, s in servers.items()}
        everyone = [s for subscribers in groups.values() for s in subscribers]
        if errors:
            result["connect_errors"] = {"count": len(errors), "first": sorted(set(errors))[:10]}
            raise Broken(f"N={n}: {len(errors)} of {n} subscribers failed to connect/subscribe: {errors[0]}")

        warm = await run_writes(writer, key, warmup, plan.rate)
        failed = [w.error for w in warm if w.error]
        if failed:
            raise Broken(f"N={n}: {len(failed)} warm-up writes failed: {failed[0]}")
        if await wait_all_at(everyone, warmup, DELIVERY_TIMEOUT_S) >= DELIVERY_TIMEOUT_S:
            behind = sum(s.last_value() != warmup for s in everyone)
            raise Broken(f"N={n}: {behind} subscribers never saw the warm-up's last value {warmup}")
        for s in everyone:
            s.receipts.clear()

        cpu0 = cluster.cpu_snapshot()
        writes = await run_writes(writer, key, plan.writes, plan.rate)
        final = warmup + plan.writes
        waited = await wait_all_at(everyone, final, DELIVERY_TIMEOUT_S)
        cpu = cpu_shares(cpu0, cluster.cpu_snapshot())
        current = (await writer.query("benchapp.counter", {"key": key}))["value"]
        result["final_wait_seconds"] = round(waited, 3)
        result["final_value"] = current
        failed_writes = [w for w in writes if w.error]
        if failed_writes:
            result["problems"].append(f"{len(failed_writes)} writes failed, first: {failed_writes[0].error}")
        if current != final:
            result["problems"].append(f"counter is {current}, expected {final} after {plan.writes} writes")
        result.update(analyse_fanout(groups, writes, warmup, current))
        result["expected_deliveries"] = n * plan.writes
        result["cpu"] = cpu
        serving = sum(cpu["seconds"][k] for k in ("server A", "server B", "worker", "redis", "postgres"))
        deliveries = result["deliveries"]
        result["serving_cpu_us_per_delivery"] = round(serving / deliveries * 1e6, 1) if deliveries else None
        if result["lost_updates"]:
            result["problems"].append(
                f"{result['lost_updates']} of {n} subscribers do not show the final value {current} "
                "(lost update)"
            )
        if result["out_of_order"] or result["unexpected_values"]:
            result["problems"].append(
                f"{result['out_of_order']} out-of-order and {result['unexpected_values']} unexpected values"
            )
        return result
    finally:
        await close_all([writer] + [s.client for subscribers in groups.values() for s in subscribers])


def embedded_row(r: dict[str, Any]) -> dict[str, Any]:
    """A ``bench/latency.py`` result in this script's row shape."""
    r = dict(r)
    r["backend"] = "embedded"
    r["placement"] = {"server": r["subscribers"]}
    if "server_cpu_seconds" in r and r.get("deliveries"):
        r["serving_cpu_us_per_delivery"] = r["server_cpu_us_per_delivery"]
        r["cpu"] = {
            "shares": {
                "servers": r["server_cpu_share"],
                "load-gen": r["loadgen_cpu_share"],
                "other": r["other_cpu_share"],
            }
        }
    return r


# -- part 2: Redis commands per change record --------------------------------------------------


MONITOR_LINE = re.compile(r"^\+(\d+\.\d+) \[\d+ ([^\]]+)\] (.*)$")
TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"')


class Monitor:
    """``MONITOR`` on a raw socket, read by a thread until ``stop()``."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self.buffer = b""
        while b"\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        first, self.buffer = self.buffer.split(b"\r\n", 1)
        if first != b"+OK":
            raise Broken(f"MONITOR answered {first!r}")
        self.lines: list[str] = []
        self.stopping = threading.Event()
        self.sock.settimeout(0.1)
        self.thread = threading.Thread(target=self._read, name="bench-monitor", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopping.is_set():
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self.buffer += data
            *complete, self.buffer = self.buffer.split(b"\r\n")
            self.lines += [line.decode(errors="replace") for line in complete]

    def stop(self) -> list[str]:
        time.sleep(0.05)  # what Redis already sent
        self.stopping.set()
        self.thread.join(timeout=5)
        self.sock.close()
        return self.lines


def script_names() -> dict[str, str]:
    """EVALSHA digest -> script file (redis-py's ``register_script`` digests the text as is)."""
    return {hashlib.sha1(path.read_text().encode()).hexdigest(): path.name for path in LUA.glob("*.lua")}


def key_pattern(key: str) -> str:
    if "reactive.hub." in key:
        return "<a server's channel>"
    key = re.sub(r"^(reactive:(?:instance|rev)):.*$", r"\1:<id>", key)
    return re.sub(r"^(reactive:conj:[^:]*:[^:]*):.*$", r"\1:<values>", key)


def command_label(tokens: list[str], scripts: dict[str, str]) -> str:
    command = tokens[0].upper()
    if command in ("EVALSHA", "EVAL"):
        return f"EVALSHA {scripts.get(tokens[1], tokens[1][:10])}" if command == "EVALSHA" else "EVAL"
    if command == "XREAD":
        streams = tokens[tokens.index("STREAMS") + 1 :] if "STREAMS" in tokens else []
        return "XREAD " + " ".join(key_pattern(s) for s in streams[: len(streams) // 2])
    if command == "SET":
        return f"SET {key_pattern(tokens[1])}" + (" NX" if "NX" in (t.upper() for t in tokens[2:]) else "")
    return f"{command} {key_pattern(tokens[1])}" if len(tokens) > 1 else command


def parse_monitor(lines: list[str], owners: dict[int, str], scripts: dict[str, str]) -> dict[str, Any]:
    """Commands per (process, label); commands run inside each script, per script."""
    counts: Counter[tuple[str, str]] = Counter()
    inside: dict[str, Counter[str]] = {}
    calls: Counter[str] = Counter()
    current_script = "?"
    for line in lines:
        match = MONITOR_LINE.match(line)
        if not match:
            continue
        tokens = TOKEN.findall(match[3])
        if not tokens:
            continue
        label = command_label(tokens, scripts)
        if match[2] == "lua":
            inside.setdefault(current_script, Counter())[label.split(" ")[0]] += 1
            continue
        port = int(match[2].rsplit(":", 1)[1])
        counts[(owners.get(port, f"unknown {match[2]}"), label)] += 1
        if label.startswith("EVALSHA "):
            current_script = label.split(" ", 1)[1]
            calls[current_script] += 1
    return {"counts": counts, "inside": inside, "calls": calls}


def commandstats(client) -> dict[str, int]:
    return {name: stats["calls"] for name, stats in client.info("commandstats").items()}


def counted_per(process: str, label: str) -> str:
    """What each command is paid per, from the code (reactive/backends/redis.py, worker.py)."""
    if label == "EVALSHA append.lua":
        return "per committed write: the writer's one round trip (version + XADD)"
    if label.startswith("SMEMBERS reactive:schemes:"):
        return "per writing process and table, at most once a second (watched-columns cache)"
    if label == "EVALSHA match.lua":
        return "per change record: the match (one round trip)"
    if label == "EVALSHA register.lua":
        return "per re-run instance: replace its read set"
    if label.startswith("HSET reactive:instance:"):
        return "per re-run whose result changed: stored for a standby (one pipeline with the SADD)"
    if label == "SADD reactive:live":
        return "same pipeline as the HSET above (not a round trip of its own)"
    if label.startswith("XREAD"):
        return "per worker pass (batch); blocks up to 0.5 s when idle"
    if label.startswith("PUBLISH"):
        return "per pass x live server process (every server gets every batch)"
    if label.startswith("HSET reactive:progress"):
        return "per pass: the worker's position in both streams"
    if label in ("GET reactive:epoch", "SET reactive:lease NX", "EVALSHA renew.lua"):
        return "per worker loop turn (a pass, or 0.5 s idle): state check and lease"
    if label.startswith(("ZRANGEBYSCORE reactive:hubs", "ZREMRANGEBYSCORE reactive:hubs")):
        return "periodic: live servers, at most once a second"
    if label.startswith("ZADD reactive:hubs"):
        return "periodic: each server's heartbeat, every 2 s"
    if label == "PING":
        return "redis-py health check of a connection idle over 10 s (health_check_interval)"
    if label == "GET reactive:version":
        return "when a server's hub starts"
    return "?"


async def round_trip_case(cluster: Cluster, plan: ClusterPlan) -> dict[str, Any]:
    """Windows of MONITOR: idle, spaced writes (watched counter), spaced writes (nobody reads the
    counter), a burst (watched counter). One subscriber, on B; the writes go through A."""
    watched, unwatched = ROUND_TRIP_KEYS
    scripts = script_names()
    writer = ReactiveClient(cluster.a.url, reconnect=False)
    subscriber = make_subscriber(cluster.b.url)
    result: dict[str, Any] = {
        "writes_per_window": plan.rt_writes,
        "spacing_s": plan.rt_spacing_s,
        "windows": {},
    }
    windows: dict[str, dict[str, Any]] = result["windows"]
    try:
        await writer.connect()
        for key in ROUND_TRIP_KEYS:
            await writer.action("benchapp.reset", {"key": key})
        await subscriber.client.connect()
        subscriber.sub = subscriber.client.subscribe("benchapp.counter", {"key": watched})
        await subscriber.sub.first(timeout=30)
        # Warm: the first bumps open the server's database connection and load the scripts.
        for key in ROUND_TRIP_KEYS:
            await writer.action("benchapp.bump", {"key": key})
        await cluster.settle()
        expected = {watched: 1, unwatched: 1}

        client = cluster.redis()
        try:
            for name, key, mode in (
                ("idle", None, "idle"),
                ("watched, spaced", watched, "spaced"),
                ("unwatched, spaced", unwatched, "spaced"),
                ("watched, burst", watched, "burst"),
            ):
                stats0 = commandstats(client)
                monitor = Monitor(cluster.redis_service.port)
                began = time.monotonic()
                count = 0
                try:
                    if mode == "idle":
                        await asyncio.sleep(plan.rt_idle_s)
                    elif mode == "spaced":
                        next_at = time.monotonic()
                        for _ in range(plan.rt_writes):
                            await writer.action("benchapp.bump", {"key": key}, timeout=30)
                            next_at += plan.rt_spacing_s
                            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                        count = plan.rt_writes
                    else:
                        await asyncio.gather(
                            *(
                                writer.action("benchapp.bump", {"key": key}, timeout=30)
                                for _ in range(plan.rt_writes)
                            )
                        )
                        count = plan.rt_writes
                    if key is not None:
                        expected[key] += count
                        head = int(client.get(VERSION_KEY))
                        deadline = time.monotonic() + 30
                        while int(client.hget(PROGRESS_KEY, "version") or 0) < head:
                            if time.monotonic() > deadline:
                                raise Broken(f"round trips, {name}: the worker did not reach version {head}")
                            await asyncio.sleep(0.02)
                        if key == watched and await wait_all_at([subscriber], expected[key], 30) >= 30:
                            raise Broken(f"round trips, {name}: the subscriber never saw {expected[key]}")
                        await asyncio.sleep(0.05)  # the pass's last commands (progress) are sent
                    owners = cluster.port_owners()
                    wall = time.monotonic() - began
                finally:
                    lines = monitor.stop()
                stats1 = commandstats(client)
                parsed = parse_monitor(lines, owners, scripts)
                per = count if count else wall
                windows[name] = {
                    "writes": count,
                    "seconds": round(wall, 3),
                    "per": "write" if count else "second",
                    "commands": {
                        f"{process}|{label}": {"count": n, "per": round(n / per, 3)}
                        for (process, label), n in sorted(parsed["counts"].items())
                    },
                    "inside_scripts_per_call": {
                        script: {
                            cmd: round(n / max(1, parsed["calls"][script]), 2) for cmd, n in sorted(c.items())
                        }
                        for script, c in parsed["inside"].items()
                    },
                    "script_calls": dict(parsed["calls"]),
                    "commandstats_delta": {
                        k: stats1.get(k, 0) - stats0.get(k, 0)
                        for k in sorted(stats1)
                        if stats1.get(k, 0) != stats0.get(k, 0)
                    },
                    "monitor_lines": len(lines),
                }
                if count:
                    passes = parsed["counts"].get(("worker", "HSET reactive:progress"), 0)
                    reruns = parsed["counts"].get(("worker", "EVALSHA register.lua"), 0)
                    windows[name]["passes"] = passes
                    windows[name]["records_per_pass"] = round(count / passes, 2) if passes else None
                    windows[name]["reruns"] = reruns
            current = (await writer.query("benchapp.counter", {"key": watched}))["value"]
        finally:
            client.close()
        if subscriber.last_value() != current or current != expected[watched]:
            result.setdefault("problems", []).append(
                f"round trips: the subscriber shows {subscriber.last_value()}, the counter is {current}, "
                f"expected {expected[watched]}"
            )
        result["summary"] = round_trip_summary(windows)
        return result
    finally:
        await close_all([writer, subscriber.client])


def round_trip_summary(windows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def per(window: str, process: str, label: str) -> float:
        entry = windows.get(window, {}).get("commands", {}).get(f"{process}|{label}")
        return entry["per"] if entry else 0.0

    def worker_round_trips(window: str) -> float:
        commands = windows.get(window, {}).get("commands", {})
        return round(
            sum(
                v["per"]
                for k, v in commands.items()
                if k.startswith("worker|") and k != "worker|SADD reactive:live"  # pipelined with HSET
            ),
            3,
        )

    spaced = "watched, spaced"
    return {
        "writer_append_per_write": per(spaced, "A", "EVALSHA append.lua"),
        "match_per_record": {w: per(w, "worker", "EVALSHA match.lua") for w in windows if w != "idle"},
        "register_per_write": {w: per(w, "worker", "EVALSHA register.lua") for w in windows if w != "idle"},
        "worker_round_trips_per_write": {w: worker_round_trips(w) for w in windows if w != "idle"},
    }


# -- part 3: invalidator lag under load --------------------------------------------------------


def writer_main(argv: list[str]) -> int:
    """``--writer`` mode: direct ORM writes in autocommit on an open-loop schedule.

    Prints ``ready`` once Django is set up, reads the start time (monotonic ns) from stdin,
    then writes; prints one JSON line of records [key, value, intended, sent, t0, done].
    ``t0`` is stamped right after the UPDATE statement returns (in autocommit, the commit) and
    before ``reactive`` appends the change record to Redis, by an execute wrapper, which is
    inside the compiler's ``execute_sql`` that ``reactive`` patches."""
    parser = argparse.ArgumentParser(prog="cluster.py --writer")
    parser.add_argument("--writer", action="store_true")
    parser.add_argument("--keys", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--period-ns", type=int, required=True)
    parser.add_argument("--offset-ns", type=int, default=0)
    options = parser.parse_args(argv)

    import django

    django.setup()
    from django.db import connection
    from django.db.models import F

    from bench.benchapp.models import Counter as CounterModel

    keys = [int(k) for k in options.keys.split(",")]
    values = dict(CounterModel.objects.filter(key__in=keys).values_list("key", "value"))
    if set(values) != set(keys):
        print(json.dumps({"error": f"missing counters {sorted(set(keys) - set(values))}"}), flush=True)
        return 1
    stamps: list[int] = []

    def stamp(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.lstrip()[:6].upper() == "UPDATE":
            stamps.append(time.monotonic_ns())
        return result

    print("ready", flush=True)
    start = int(sys.stdin.readline()) + options.offset_ns
    records = []
    errors = []
    with connection.execute_wrapper(stamp):
        for i in range(options.count):
            intended = start + i * options.period_ns
            delay = intended - time.monotonic_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
            key = keys[i % len(keys)]
            sent = time.monotonic_ns()
            stamps.clear()
            try:
                CounterModel.objects.filter(key=key).update(value=F("value") + 1)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            done = time.monotonic_ns()
            values[key] += 1
            records.append([key, values[key], intended, sent, stamps[-1] if stamps else None, done])
    print(json.dumps({"records": records, "errors": errors[:10], "error_count": len(errors)}), flush=True)
    return 0


class BacklogSampler(threading.Thread):
    """Every 50 ms: the log's last version (``reactive:version``, = its last id), the worker's
    ``reactive:progress`` version, and XLEN of ``reactive:log``."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(name="bench-backlog", daemon=True)
        self.client = cluster.redis()
        self.samples: list[tuple[int, int, int, int]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.05):
            pipe = self.client.pipeline(transaction=False)
            pipe.get(VERSION_KEY)
            pipe.hget(PROGRESS_KEY, "version")
            pipe.xlen(LOG_KEY)
            try:
                version, progress, length = pipe.execute()
            except Exception:
                continue
            self.samples.append((time.monotonic_ns(), int(version or 0), int(progress or 0), int(length)))

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        self.client.close()


async def lag_case(cluster: Cluster, plan: ClusterPlan) -> dict[str, Any]:
    keys = [LAG_KEY_BASE + i for i in range(plan.lag_counters)]
    period_ns = int(1e9 / plan.lag_rate)
    total = round((plan.lag_warmup_seconds + plan.lag_seconds) * plan.lag_rate)
    result: dict[str, Any] = {
        "counters": len(keys),
        "subscribers": len(keys),
        "target_rate": plan.lag_rate,
        "seconds": plan.lag_seconds,
        "warmup_seconds": plan.lag_warmup_seconds,
        "writers": plan.lag_writers,
        "writer": "direct ORM: Counter.objects.filter(key=k).update(value=F('value') + 1), autocommit",
        "problems": [],
    }
    control = ReactiveClient(cluster.a.url, reconnect=False)
    subscribers: list[tuple[int, Subscriber]] = []
    writers: list[subprocess.Popen] = []
    sampler: BacklogSampler | None = None
    try:
        await control.connect()
        await asyncio.gather(*(control.action("benchapp.reset", {"key": k}, timeout=30) for k in keys))
        # One subscriber per counter, alternately on A and B.
        semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)
        errors: list[str] = []

        async def open_one(i: int, key: int) -> None:
            subscriber = make_subscriber((cluster.a if i % 2 == 0 else cluster.b).url)
            subscribers.append((key, subscriber))
            async with semaphore:
                try:
                    await subscriber.client.connect()
                    subscriber.sub = subscriber.client.subscribe("benchapp.counter", {"key": key})
                    await subscriber.sub.first(timeout=60)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(open_one(i, k) for i, k in enumerate(keys)))
        if errors:
            raise Broken(f"lag: {len(errors)} subscribers failed to connect/subscribe: {errors[0]}")

        # Writers: writer w owns keys[w::W] (so each counter has one writer and its values are
        # that writer's count), and the slots w, w + W, ... of the common schedule.
        w_count = plan.lag_writers
        for w in range(w_count):
            own = keys[w::w_count]
            writers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "--writer",
                        "--keys",
                        ",".join(map(str, own)),
                        "--count",
                        str(len(range(w, total, w_count))),
                        "--period-ns",
                        str(period_ns * w_count),
                        "--offset-ns",
                        str(period_ns * w),
                    ],
                    cwd=ROOT,
                    env=cluster.env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=(cluster.directory / f"writer{w}.log").open("ab"),
                    text=True,
                    start_new_session=True,
                )
            )
        for w, process in enumerate(writers):
            assert process.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 120)
            if line.strip() != "ready":
                raise Broken(f"lag: writer {w} did not start: {line.strip()[:300]}")

        for _, s in subscribers:
            s.receipts.clear()
        sampler = BacklogSampler(cluster)
        sampler.start()
        stats_client = cluster.redis()
        start = time.monotonic_ns() + 300_000_000
        for process in writers:
            assert process.stdin is not None
            process.stdin.write(f"{start}\n")
            process.stdin.flush()
        window0 = start + int(plan.lag_warmup_seconds * 1e9)
        window1 = window0 + int(plan.lag_seconds * 1e9)
        pids = {f"writer {w}": p.pid for w, p in enumerate(writers)}
        await asyncio.sleep(max(0, window0 - time.monotonic_ns()) / 1e9)
        cpu0, stats0 = cluster.cpu_snapshot(pids), commandstats(stats_client)
        await asyncio.sleep(max(0, window1 - time.monotonic_ns()) / 1e9)
        cpu1, stats1 = cluster.cpu_snapshot(pids), commandstats(stats_client)
        stats_client.close()
        cpu = cpu_shares(cpu0, cpu1)
        cpu["shares"]["writers"] = round(sum(cpu["shares"].pop(name) for name in pids), 3)
        cpu["seconds"]["writers"] = round(sum(cpu["seconds"].pop(name) for name in pids), 3)

        records = []
        write_errors = 0
        for w, process in enumerate(writers):
            out, _ = await asyncio.to_thread(process.communicate, None, 120)
            lines = [line for line in out.splitlines() if line.startswith("{")]
            if process.returncode != 0 or not lines:
                raise Broken(f"lag: writer {w} exited with {process.returncode}: {out[-300:]}")
            data = json.loads(lines[-1])
            records += data["records"]
            write_errors += data["error_count"]
            if data["error_count"]:
                result["problems"].append(
                    f"writer {w}: {data['error_count']} writes failed: {data['errors'][:2]}"
                )
        final = {}
        for key, value, *_ in records:
            final[key] = max(final.get(key, 0), value)
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while time.monotonic() < deadline and any(s.last_value() != final.get(k, 0) for k, s in subscribers):
            await asyncio.sleep(0.05)
        drained_ns = time.monotonic_ns()
        sampler.stop()

        current = {}
        for key in keys:
            current[key] = (await control.query("benchapp.counter", {"key": key}, timeout=30))["value"]

        # Analysis over the measured window (writes whose intended send time falls in it).
        by_write = {(r[0], r[1]): r for r in records}
        in_window = [r for r in records if window0 <= r[2] < window1]
        window_set = {(r[0], r[1]) for r in in_window}
        lags: list[int] = []
        from_intended: list[int] = []
        pushed: set[tuple[int, int]] = set()
        pushes_total = out_of_order = unexpected = 0
        for key, s in subscribers:
            last_seen = -1
            for t, frame in s.receipts:
                for update in frame["updates"]:
                    value = (update.get("value") or {}).get("value")
                    record = by_write.get((key, value))
                    if record is None:
                        unexpected += 1
                        continue
                    pushes_total += 1
                    if value <= last_seen:
                        out_of_order += 1
                    last_seen = max(last_seen, value)
                    if (key, value) in window_set:
                        pushed.add((key, value))
                        lags.append(t - record[4])
                        from_intended.append(t - record[2])
        lost = sum(1 for k, s in subscribers if s.last_value() != current[k] or not s.client.is_connected)
        wrong_final = sum(1 for k in keys if current[k] != final.get(k, 0))
        sent = sorted(r[3] for r in in_window)
        achieved = (len(sent) - 1) / ((sent[-1] - sent[0]) / 1e9) if len(sent) > 1 else None
        late = [r[3] - r[2] for r in in_window]
        write_time = [r[5] - r[3] for r in in_window]
        samples = [(t, v, p, n) for t, v, p, n in sampler.samples if window0 <= t < window1]
        backlog = [v - p for _, v, p, _ in samples]
        passes = stats1.get("cmdstat_xread", 0) - stats0.get("cmdstat_xread", 0)
        matches = stats1.get("cmdstat_evalsha", 0) - stats0.get("cmdstat_evalsha", 0)
        result.update(
            {
                "writes_total": len(records),
                "writes_in_window": len(in_window),
                "achieved_rate": round(achieved, 1) if achieved else None,
                "sent_late_ms": summary_ms(late),
                "write_time_ms": summary_ms(write_time),
                "pushed_in_window": len(pushed),
                "pushes_total": pushes_total,
                "coalesced": len(in_window) - len(pushed),
                "coalesced_share": round(1 - len(pushed) / len(in_window), 3) if in_window else None,
                "lag_ms": summary_ms(lags),
                "lag_from_intended_send_ms": summary_ms(from_intended),
                "backlog_records": {
                    "samples": len(backlog),
                    "p50": percentile(backlog, 50),
                    "p99": percentile(backlog, 99),
                    "max": max(backlog) if backlog else None,
                },
                "log_xlen_max": max((n for *_, n in samples), default=None),
                "worker_passes": passes,
                "records_per_pass": round(len(in_window) / passes, 2) if passes else None,
                "evalsha_calls_in_window": matches,
                "drain_seconds_after_last_write": round((drained_ns - max(r[5] for r in records)) / 1e9, 3)
                if records
                else None,
                "cpu": cpu,
                "lost_updates": lost,
                "out_of_order": out_of_order,
                "unexpected_values": unexpected,
                "write_errors": write_errors,
            }
        )
        if lost:
            result["problems"].append(
                f"lag: {lost} of {len(keys)} subscribers do not show their counter's final value"
            )
        if wrong_final:
            result["problems"].append(f"lag: {wrong_final} counters differ from the writers' final values")
        if out_of_order or unexpected:
            result["problems"].append(f"lag: {out_of_order} out-of-order and {unexpected} unexpected values")
        return result
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        for process in writers:
            if process.poll() is None:
                process.kill()
                process.wait()
        await close_all([control] + [s.client for _, s in subscribers])


# -- report --------------------------------------------------------------------------------------

LATENCY_COLUMNS = [
    "backend",
    "N (where)",
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
    "serving CPU µs/delivery",
]

LATENCY_EXTRA_COLUMNS = [
    "backend",
    "N",
    "first-recv p50 ms",
    "p50 on A / B ms",
    "intended-send→recv p50 / p99 ms",
    "bump round trip p50 ms",
    "connect+subscribe s",
    "CPU: servers",
    "worker",
    "redis",
    "postgres",
    "load-gen",
    "other",
]


def placement(r: dict[str, Any]) -> str:
    where = r.get("placement", {})
    if r["backend"] == "embedded":
        return f"{r['subscribers']} (1 server)"
    return f"{r['subscribers']} (" + " + ".join(f"{n} {k}" for k, n in where.items() if n) + ")"


def share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def latency_row(r: dict[str, Any]) -> list[str]:
    if "latency_ms" not in r:
        return [r["backend"], str(r["subscribers"]), "FAILED: " + "; ".join(r["problems"])[:150]] + [""] * 10
    lat, last = r["latency_ms"], r["last_receiver_ms"]
    return [
        r["backend"],
        placement(r),
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
        _f(r.get("serving_cpu_us_per_delivery"), 0),
    ]


def latency_extra_row(r: dict[str, Any]) -> list[str]:
    if "latency_ms" not in r:
        return [r["backend"], str(r["subscribers"])] + ["-"] * 11
    shares = r.get("cpu", {}).get("shares", {})
    by_server = r.get("latency_ms_by_server", {})
    if r["backend"] == "redis":
        servers = (shares.get("server A") or 0) + (shares.get("server B") or 0)
        split = " / ".join(_f(by_server[k]["p50"], 2) if k in by_server else "-" for k in ("A", "B"))
    else:
        servers, split = shares.get("servers"), "-"
    intended = r["latency_from_intended_send_ms"]
    return [
        r["backend"],
        str(r["subscribers"]),
        _f(r["first_receiver_ms"]["p50"], 2),
        split,
        f"{_f(intended['p50'], 2)} / {_f(intended['p99'], 2)}",
        _f(r["bump_round_trip_ms"]["p50"], 2),
        f"{r['connect_seconds']:.1f}",
        share(servers),
        share(shares.get("worker")) if r["backend"] == "redis" else "(in server)",
        share(shares.get("redis")),
        share(shares.get("postgres")),
        share(shares.get("load-gen")),
        share(shares.get("other")),
    ]


RT_WINDOWS = ["idle", "watched, spaced", "unwatched, spaced", "watched, burst"]
RT_COLUMNS = [
    "process",
    "command",
    "idle /s",
    "watched spaced /write",
    "unwatched spaced /write",
    "burst /write",
    "paid per",
]
PROCESS_ORDER = {"A": 0, "B": 1, "worker": 2}


def round_trip_rows(rt: dict[str, Any]) -> list[list[str]]:
    windows = rt["windows"]
    keys = sorted(
        {k for w in windows.values() for k in w["commands"] if not k.startswith("load-gen|")},
        key=lambda k: (PROCESS_ORDER.get(k.split("|")[0], 9), k),
    )
    rows = []
    for key in keys:
        process, label = key.split("|", 1)
        cells = []
        for name in RT_WINDOWS:
            entry = windows.get(name, {}).get("commands", {}).get(key)
            cells.append(f"{entry['per']:.2f}" if entry else "0")
        name = {"A": "A (writes)", "B": "B"}.get(process, process)
        rows.append([name, label, *cells, counted_per(process, label)])
    return rows


def round_trip_notes(rt: dict[str, Any]) -> list[str]:
    windows = rt["windows"]
    notes = []
    for name in RT_WINDOWS[1:]:
        w = windows.get(name)
        if not w:
            continue
        notes.append(
            f"{name}: {w['writes']} writes in {w['seconds']:.1f} s, {w.get('passes')} worker passes "
            f"({w.get('records_per_pass')} records/pass), {w.get('reruns')} re-runs"
        )
    inside = {}
    for w in windows.values():
        for script, commands in w["inside_scripts_per_call"].items():
            inside.setdefault(script, commands)
    for script, commands in sorted(inside.items()):
        notes.append(
            f"inside {script} (per call, in Redis, not round trips): "
            + ", ".join(f"{cmd} {n:g}" for cmd, n in commands.items())
        )
    w1 = windows.get("watched, spaced", {})
    if w1.get("commandstats_delta"):
        delta = {k.removeprefix("cmdstat_"): v for k, v in w1["commandstats_delta"].items()}
        notes.append(
            "INFO commandstats over 'watched, spaced' (every client; commands inside scripts counted too): "
            + ", ".join(f"{k} {v}" for k, v in sorted(delta.items(), key=lambda kv: -kv[1]))
        )
    s = rt.get("summary", {})
    if s:
        notes.append(
            "per change record: match.lua "
            + ", ".join(f"{w} {v:.2f}" for w, v in s["match_per_record"].items())
            + "; worker round trips per write (SADD pipelined with HSET not counted): "
            + ", ".join(f"{w} {v:.2f}" for w, v in s["worker_round_trips_per_write"].items())
        )
    return notes


LAG_COLUMNS = [
    "writes (rate target/achieved)",
    "counters = subscribers",
    "pushed (coalesced)",
    "lag p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "backlog p50 / max records",
    "worker passes (records/pass)",
    "lost",
]
LAG_CPU_COLUMNS = ["worker", "server A", "server B", "redis", "postgres", "writers", "load-gen", "other"]


def lag_rows(lag: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    if "lag_ms" not in lag:
        return [["FAILED: " + "; ".join(lag.get("problems", []))[:150]] + [""] * 9], [[""] * 8]
    lat, backlog = lag["lag_ms"], lag["backlog_records"]
    row = [
        f"{lag['writes_in_window']} in {lag['seconds']:g} s "
        f"({lag['target_rate']:g}/{_f(lag['achieved_rate'])}/s)",
        str(lag["counters"]),
        f"{lag['pushed_in_window']} ({lag['coalesced']}, {lag['coalesced_share'] * 100:.0f}%)",
        _f(lat["p50"], 2),
        _f(lat["p90"], 2),
        _f(lat["p99"], 2),
        _f(lat["max"], 2),
        f"{backlog['p50']} / {backlog['max']}",
        f"{lag['worker_passes']} ({_f(lag['records_per_pass'], 1)})",
        str(lag["lost_updates"]),
    ]
    shares = lag["cpu"]["shares"]
    return [row], [[share(shares.get(name)) for name in LAG_CPU_COLUMNS]]


def render(report: dict[str, Any], table) -> str:
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
                f"  intended-send→recv p50/p99 {_f(lag['lag_from_intended_send_ms']['p50'], 2)}/"
                f"{_f(lag['lag_from_intended_send_ms']['p99'], 2)} ms; writer lateness p50/p99 "
                f"{_f(lag['sent_late_ms']['p50'], 2)}/{_f(lag['sent_late_ms']['p99'], 2)} ms; "
                f"ORM write (UPDATE + append) p50/p99 {_f(lag['write_time_ms']['p50'], 2)}/"
                f"{_f(lag['write_time_ms']['p99'], 2)} ms; log XLEN max {lag['log_xlen_max']}; "
                f"all delivered {lag['drain_seconds_after_last_write']} s after the last write"
            )
    notes = report_notes(report)
    if notes:
        parts += ["", "NOTES (not failures):", *[f"  {n}" for n in notes]]
    problems = report_problems(report)
    if problems:
        parts += ["", "PROBLEMS:", *[f"  {p}" for p in problems]]
    return "\n".join(parts)


def report_notes(report: dict[str, Any]) -> list[str]:
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


def report_problems(report: dict[str, Any]) -> list[str]:
    problems = [
        f"{r['backend']} N={r['subscribers']}: {p}" for r in report.get("latency", []) for p in r["problems"]
    ]
    for part in ("round_trips", "lag"):
        problems += report.get(part, {}).get("problems", [])
    return problems + report.get("problems", [])


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    m = report["machine"]
    facts = [
        ["date", m["date"]],
        ["command", f"`{m['command']}`"],
        ["nproc", str(m["nproc"])],
        ["CPU", str(m["cpu_model"])],
        ["load average at start / end", f"{' '.join(map(str, m['load_average_at_start']))} / "
         f"{' '.join(map(str, m.get('load_average_at_end', [])))}"],
        ["Python / Django / Daphne / websockets",
         f"{m['python']} / {m['django']} / {m['daphne']} / {m['websockets']}"],
        ["channels_redis / redis-py / redis-server / PostgreSQL",
         f"{m.get('channels_redis')} / {m.get('redis_py')} / {m.get('redis_server')} / {m.get('postgres')}"],
        ["Postgres options", "fsync=off, synchronous_commit=off, full_page_writes=off (harness/services.py)"],
        ["kernel", m["kernel"]],
        ["git commit", str(m["git_commit"])],
    ]  # fmt: skip
    text = [
        "# Redis backend benchmark: latest results",
        "",
        "Written by `bench/cluster.py`; the method and what each number means are in `bench/README.md`",
        '(section "Redis backend"). Everything, load generator included, shares the same cores.',
        "",
        md_table(["fact", "value"], facts),
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
    notes = report_notes(report)
    if notes:
        text += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    problems = report_problems(report)
    if problems:
        text += ["", "## Problems", "", *[f"- {p}" for p in problems]]
    path.write_text("\n".join(text) + "\n")


def service_versions(cluster: Cluster) -> dict[str, Any]:
    import channels_redis
    import psycopg
    import redis

    out: dict[str, Any] = {"channels_redis": channels_redis.__version__, "redis_py": redis.__version__}
    with contextlib.suppress(Exception), cluster.redis() as client:
        out["redis_server"] = client.info("server")["redis_version"]
    with contextlib.suppress(Exception), psycopg.connect(cluster.postgres_service.url) as connection:
        out["postgres"] = connection.execute("SHOW server_version").fetchone()[0]
    return out


# -- main --------------------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_redis_parts(cluster: Cluster, plan: ClusterPlan, parts: set[str], report: dict[str, Any]) -> None:
    async def go() -> None:
        primers = await cluster.prime()
        try:
            await parts_in_order()
        finally:
            await close_all(primers)

    async def parts_in_order() -> None:
        if "latency" in parts:
            for fanout, split in (
                (plan.floor, {"A": 0, "B": 1}),
                (
                    plan.fanout,
                    {
                        "A": plan.fanout.subscribers // 2,
                        "B": plan.fanout.subscribers - plan.fanout.subscribers // 2,
                    },
                ),
            ):
                print(
                    f"  redis N={fanout.subscribers}: {fanout.writes} writes at {fanout.rate:g}/s ...",
                    flush=True,
                )
                try:
                    report["latency"].append(await redis_fanout_case(cluster, fanout, plan.warmup, split))
                except Broken as exc:
                    report["latency"].append(
                        {"backend": "redis", "subscribers": fanout.subscribers, "problems": [str(exc)]}
                    )
                await cluster.settle()
        if "roundtrips" in parts:
            print(f"  redis round trips: MONITOR windows of {plan.rt_writes} writes ...", flush=True)
            try:
                report["round_trips"] = await round_trip_case(cluster, plan)
            except Broken as exc:
                report["round_trips"] = {"problems": [str(exc)]}
            await cluster.settle()
        if "lag" in parts:
            print(
                f"  redis lag: {plan.lag_rate:g} writes/s for {plan.lag_seconds:g} s over "
                f"{plan.lag_counters} counters ...",
                flush=True,
            )
            try:
                report["lag"] = await lag_case(cluster, plan)
            except Broken as exc:
                report["lag"] = {"problems": [str(exc)]}

    asyncio.run(go())


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Redis backend: latency, round trips per record, lag under load."
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke test")
    parser.add_argument(
        "--parts",
        default="embedded,latency,roundtrips,lag",
        help="comma-separated subset of embedded,latency,roundtrips,lag (default: all)",
    )
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    parts = set(options.parts.split(","))
    plan = PLANS["quick" if options.quick else "full"]
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):
        exe = exe.relative_to(ROOT)
    command = shlex.join([str(exe), *sys.argv])
    fd_limit = raise_fd_limit()  # the subprocesses inherit it
    report: dict[str, Any] = {
        "plan": plan.name,
        "machine": machine_facts(command),
        "fd_limit": list(fd_limit),
        "latency": [],
        "problems": [],
    }
    print(f"{command}  ({report['machine']['date']}, nproc {report['machine']['nproc']})", flush=True)

    if "embedded" in parts:
        with tempfile.TemporaryDirectory(prefix="reactive-bench-") as tmp:
            for fanout in (plan.floor, plan.fanout):
                workdir = Path(tmp) / f"n{fanout.subscribers}"
                workdir.mkdir()
                print(
                    f"  embedded N={fanout.subscribers}: {fanout.writes} writes at {fanout.rate:g}/s ...",
                    flush=True,
                )
                report["latency"].append(embedded_row(run_fanout(fanout, plan.warmup, workdir)))

    if parts & {"latency", "roundtrips", "lag"}:
        from harness.services import scratch_parent

        directory = Path(tempfile.mkdtemp(prefix="reactive-bench-cluster-", dir=scratch_parent()))
        directory.chmod(0o755)  # as root, Postgres runs as another user inside it
        cluster = Cluster(directory)
        try:
            print("  starting redis, postgres, servers A and B, the worker ...", flush=True)
            try:
                cluster.start()
                report["machine"].update(service_versions(cluster))
                run_redis_parts(cluster, plan, parts, report)
                dead = cluster.dead()
                if dead:
                    report["problems"].append(f"process(es) died during the run: {', '.join(dead)}")
            except Broken as exc:
                report["problems"].append(str(exc))
        finally:
            status = cluster.stop()
            report["process_exit"] = status
            report["logs"] = {name: p.log_problems() for name, p in cluster.processes.items()}
            for w in range(plan.lag_writers):
                log = directory / f"writer{w}.log"
                if log.exists() and log.read_text(errors="replace").strip():
                    report["logs"][f"writer {w}"] = log.read_text(errors="replace").splitlines()[:60]
            shutil.rmtree(directory, ignore_errors=True)

    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print()
    print(render(report, text_table))

    out_dir = RESULTS / "quick" if options.quick else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    json_path = out_dir / f"cluster-{day}.json"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md_path = out_dir / "cluster-latest.md"
    write_markdown(md_path, report)
    print(f"\nwrote {json_path.relative_to(ROOT)} and {md_path.relative_to(ROOT)}")

    broken = report_problems(report)
    if broken:
        print(f"\nBROKEN: {len(broken)} problem(s), see above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if "--writer" in sys.argv[1:]:
        sys.exit(writer_main(sys.argv[1:]))
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; every process stopped, nothing written", file=sys.stderr)
        sys.exit(130)
