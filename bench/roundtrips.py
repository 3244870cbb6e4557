"""Part: Redis commands per committed write, seen through ``MONITOR``, and the rows of its table.

Four windows, one subscriber on B, ``POST /bench/bump`` through A: idle; writes spaced out to the
subscribed counter; spaced writes to a counter nobody reads; a burst to the subscribed counter.
Each command is attributed to the process whose socket sent it (client port -> ``/proc``);
commands run inside a Lua script are counted per script call, as they are no round trips.
``INFO commandstats`` over a window is the cross-check.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import threading
import time
from collections import Counter
from typing import Any

import redis

from bench import Broken
from bench.cluster import PROGRESS_KEY, commandstats, database, log_head
from bench.plans import Plan
from bench.population import Population
from bench.wire import HttpConnection, open_http
from harness import procfs
from harness.ports import HOST
from harness.processes import ROOT

LUA = ROOT / "reactive" / "backends" / "redis" / "lua"
ROUND_TRIP_KEYS = (300_001, 300_002)  # the subscribed counter, the unwatched one
SUBSCRIBER = 80_000_001  # an odd index: its socket is on server B

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


def counted_per(process: str, label: str) -> str:
    """What each command is paid per, from the code (reactive/backends/redis.py, worker.py)."""
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
    if label.startswith("XTRIM reactive:requests"):
        return "per pass: the requests stream trimmed to what the worker has read"
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


WINDOWS = (  # name, counter written (None: no writes), how the writes go out
    ("idle", None, "idle"),
    ("watched, spaced", ROUND_TRIP_KEYS[0], "spaced"),
    ("unwatched, spaced", ROUND_TRIP_KEYS[1], "spaced"),
    ("watched, burst", ROUND_TRIP_KEYS[0], "burst"),
)


async def bump(writer: HttpConnection, key: int) -> None:
    _, status, body = await writer.request("POST", f"/bench/bump?key={key}")
    if status != 200:
        raise Broken(f"round trips: a write answered {status}: {body[:200]!r}")


async def write_window(writer: HttpConnection, key: int | None, mode: str, plan: Plan) -> int:
    """The writes of one window (none when idle); returns how many."""
    if mode == "idle":
        await asyncio.sleep(plan.rt_idle_s)
        return 0
    if mode == "spaced":
        next_at = time.monotonic()
        for _ in range(plan.rt_writes):
            await bump(writer, key)  # type: ignore[arg-type]
            next_at += plan.rt_spacing_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    else:  # a burst: every write at once, each on a connection of its own
        writers = [await open_http(HOST, writer.port) for _ in range(plan.rt_writes)]
        try:
            await asyncio.gather(*(bump(w, key) for w in writers))  # type: ignore[arg-type]
        finally:
            for w in writers:
                w.close()
    return plan.rt_writes


def port_owners(population: Population) -> dict[int, str]:
    """Which process (A, B, worker, load-gen) owns each local port: MONITOR's client names."""
    owners = {port: "load-gen" for port in procfs.local_ports(os.getpid())}
    for name, pid in population.deployed.serving.items():
        if name in ("server A", "server B", "worker"):
            owners.update(dict.fromkeys(procfs.local_ports(pid), name.removeprefix("server ")))
    return owners


def window_record(
    parsed: dict[str, Any],
    lines: list[str],
    count: int,
    wall: float,
    stats: tuple[dict[str, int], dict[str, int]],
) -> dict[str, Any]:
    """One window's commands, per write (per second when idle), and its commandstats delta."""
    stats0, stats1 = stats
    per = count if count else wall
    record = {
        "writes": count,
        "seconds": round(wall, 3),
        "per": "write" if count else "second",
        "commands": {
            f"{process}|{label}": {"count": n, "per": round(n / per, 3)}
            for (process, label), n in sorted(parsed["counts"].items())
        },
        "inside_scripts_per_call": {
            script: {cmd: round(n / max(1, parsed["calls"][script]), 2) for cmd, n in sorted(c.items())}
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
        record["passes"] = passes
        record["records_per_pass"] = round(count / passes, 2) if passes else None
        record["reruns"] = parsed["counts"].get(("worker", "EVALSHA register.lua"), 0)
    return record


async def round_trip_case(population: Population, plan: Plan) -> dict[str, Any]:
    """Windows of MONITOR: idle, spaced writes (watched counter), spaced writes (nobody reads the
    counter), a burst (watched counter). One subscriber, on B; the writes go through A."""
    watched, unwatched = ROUND_TRIP_KEYS
    deployed = population.deployed
    scripts = script_names()
    result: dict[str, Any] = {
        "writes_per_window": plan.rt_writes,
        "spacing_s": plan.rt_spacing_s,
        "windows": {},
    }
    windows: dict[str, dict[str, Any]] = result["windows"]
    await deployed.reset_counters(watched, 2)
    await population.subscribe({SUBSCRIBER: [watched]})
    writer = await open_http(HOST, deployed.write_port)
    client = redis.Redis.from_url(deployed.redis_url, socket_timeout=10)  # type: ignore[arg-type]
    try:
        # Warm: the first writes open the server's database connection and load the scripts.
        for key in ROUND_TRIP_KEYS:
            await bump(writer, key)
        expected = {watched: 1, unwatched: 1}
        await settle(client, deployed.database_url)  # type: ignore[arg-type]
        for name, key, mode in WINDOWS:
            stats0 = commandstats(client)
            monitor = Monitor(client.connection_pool.connection_kwargs["port"])
            began = time.monotonic()
            try:
                count = await write_window(writer, key, mode, plan)
                if key is not None:
                    expected[key] += count
                    await settle(client, deployed.database_url, f"round trips, {name}")  # type: ignore[arg-type]
                    if key == watched and not await population.generators.settled(
                        {watched: expected[watched]}, 100, 30
                    ):
                        raise Broken(f"round trips, {name}: the subscriber never saw {expected[watched]}")
                    await asyncio.sleep(0.05)  # the pass's last commands (progress) are sent
                owners = port_owners(population)
                wall = time.monotonic() - began
            finally:
                lines = monitor.stop()
            windows[name] = window_record(
                parse_monitor(lines, owners, scripts), lines, count, wall, (stats0, commandstats(client))
            )
        latest = (await population.generators.collect())["latest"]
    finally:
        client.close()
        writer.close()
    seen = max(
        (value for index, key, value in latest if index == SUBSCRIBER and key == watched), default=None
    )
    if seen != expected[watched]:
        result["problems"] = [f"round trips: the subscriber shows {seen}, expected {expected[watched]}"]
    result["summary"] = round_trip_summary(windows)
    return result


async def settle(client: redis.Redis, database_url: str, what: str = "round trips") -> None:
    """Until the worker has processed every change record committed so far (the log table's head)."""
    with database(database_url) as connection:
        head, _ = log_head(connection)
    deadline = time.monotonic() + 30
    while int(client.hget(PROGRESS_KEY, "version") or 0) < head:
        if time.monotonic() > deadline:
            raise Broken(f"{what}: the worker did not reach version {head}")
        await asyncio.sleep(0.02)


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

    return {
        "match_per_record": {w: per(w, "worker", "EVALSHA match.lua") for w in windows if w != "idle"},
        "register_per_write": {w: per(w, "worker", "EVALSHA register.lua") for w in windows if w != "idle"},
        "worker_round_trips_per_write": {w: worker_round_trips(w) for w in windows if w != "idle"},
    }


RT_WINDOWS = [name for name, _, _ in WINDOWS]
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
