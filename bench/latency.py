"""Part: commit -> subscriber latency, on either backend, and the rows of its tables.

Embedded: for each N a fresh Daphne server (``bench.settings``: SQLite WAL, the in-process log),
N subscriber sockets on ``benchapp.counter(key=N)`` (one shared query instance) and one writer
socket calling ``benchapp.bump`` on an open-loop schedule. Redis: the same on a ``Deployment``,
the subscribers split between servers A and B, the writes through A.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import Broken
from bench.plans import FanoutPlan
from bench.servers import listening, log_problems, rss_mib, start_embedded_server
from bench.stats import cpu_shares
from bench.tables import number, share
from bench.workload import (
    DELIVERY_TIMEOUT_S,
    Subscriber,
    analyse_fanout,
    check_connected,
    close_all,
    fanout_problems,
    open_subscribers,
    run_writes,
    wait_all_at,
    warm_up,
)
from harness import procfs
from harness.processes import Process
from reactive.client import ReactiveClient

if TYPE_CHECKING:
    from bench.cluster import Deployment

# -- embedded backend ----------------------------------------------------------------------


async def fanout_case(server: Process, plan: FanoutPlan, warmup: int) -> dict[str, Any]:
    n, key = plan.subscribers, plan.subscribers
    result: dict[str, Any] = {
        "subscribers": n,
        "writes": plan.writes,
        "target_rate": plan.rate,
        "warmup_writes": warmup,
        "problems": [],
    }
    writer = ReactiveClient(server.ws_url, reconnect=False)
    subscribers: list[Subscriber] = []
    try:
        await writer.connect()
        await writer.action("benchapp.reset", {"key": key})

        started = time.monotonic()
        subscribers, errors = await open_subscribers([(server.ws_url, key)] * n)
        result["connect_seconds"] = round(time.monotonic() - started, 3)
        result["server_rss_mib"] = rss_mib(server)
        result["server_threads"] = procfs.thread_count(server.pid)
        check_connected(result, errors, n)

        await warm_up(writer, subscribers, key, warmup, plan.rate)
        stats_before = await writer.action("benchapp.stats")

        # Measured phase.
        busy0 = procfs.machine_busy_seconds()
        server_cpu0, self_cpu0, wall0 = server.cpu_seconds(), procfs.self_cpu_seconds(), time.monotonic()
        writes = await run_writes(writer, key, plan.writes, plan.rate)
        final = warmup + plan.writes
        waited = await wait_all_at(subscribers, final, DELIVERY_TIMEOUT_S)
        wall = time.monotonic() - wall0
        server_cpu = server.cpu_seconds() - server_cpu0
        self_cpu = procfs.self_cpu_seconds() - self_cpu0
        busy = procfs.machine_busy_seconds() - busy0
        stats_after = await writer.action("benchapp.stats")
        current = (await writer.query("benchapp.counter", {"key": key}))["value"]
        result["final_wait_seconds"] = round(waited, 3)
        result["server_rss_mib_after"] = rss_mib(server)

        analysis = analyse_fanout({"server": subscribers}, writes, warmup, current)
        deliveries = analysis["deliveries"]
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
        result["problems"] += fanout_problems(writes, analysis, current, final, n)
        return result
    finally:
        await close_all([writer] + [s.client for s in subscribers])


def run_fanout(plan: FanoutPlan, warmup: int, workdir: Path) -> dict[str, Any]:
    """One N on the embedded backend, in a server of its own; problems are noted, not raised."""
    server = start_embedded_server(workdir)
    result: dict[str, Any] = {"subscribers": plan.subscribers, "problems": []}
    try:
        listening(server)
        result = asyncio.run(fanout_case(server, plan, warmup))
    except Broken as exc:
        result["problems"].append(str(exc))
    finally:
        alive = server.alive()
        code = server.stop()
        if not alive:
            result["problems"].append(f"the server process died (exit code {code})")
        problems = log_problems(server)
        if problems:
            result["server_log"] = problems
    return result


# -- Redis backend -------------------------------------------------------------------------


async def redis_fanout_case(
    deployment: Deployment, plan: FanoutPlan, warmup: int, split: dict[str, int]
) -> dict[str, Any]:
    """N subscribers of one instance, ``split`` between servers A and B; writes through A."""
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
    servers = {"A": deployment.a, "B": deployment.b}
    writer = ReactiveClient(deployment.a.ws_url, reconnect=False)
    groups: dict[str, list[Subscriber]] = {}
    try:
        await writer.connect()
        await writer.action("benchapp.reset", {"key": key})
        started = time.monotonic()
        placed = [name for name, count in split.items() if count]
        opened = await asyncio.gather(
            *(open_subscribers([(servers[name].ws_url, key)] * split[name]) for name in placed)
        )
        errors: list[str] = []
        for name, (subscribers, errs) in zip(placed, opened, strict=True):
            groups[name] = subscribers
            errors += errs
        result["connect_seconds"] = round(time.monotonic() - started, 3)
        result["server_rss_mib"] = {name: rss_mib(s) for name, s in servers.items()}
        everyone = [s for subscribers in groups.values() for s in subscribers]
        check_connected(result, errors, n)

        await warm_up(writer, everyone, key, warmup, plan.rate)

        cpu0 = deployment.cpu_snapshot()
        writes = await run_writes(writer, key, plan.writes, plan.rate)
        final = warmup + plan.writes
        waited = await wait_all_at(everyone, final, DELIVERY_TIMEOUT_S)
        cpu = cpu_shares(cpu0, deployment.cpu_snapshot())
        current = (await writer.query("benchapp.counter", {"key": key}))["value"]
        result["final_wait_seconds"] = round(waited, 3)
        result["final_value"] = current
        analysis = analyse_fanout(groups, writes, warmup, current)
        result.update(analysis)
        result["expected_deliveries"] = n * plan.writes
        result["cpu"] = cpu
        serving = sum(cpu["seconds"][k] for k in ("server A", "server B", "worker", "redis", "postgres"))
        deliveries = result["deliveries"]
        result["serving_cpu_us_per_delivery"] = round(serving / deliveries * 1e6, 1) if deliveries else None
        result["problems"] += fanout_problems(writes, analysis, current, final, n)
        return result
    finally:
        await close_all([writer] + [s.client for subscribers in groups.values() for s in subscribers])


def embedded_row(r: dict[str, Any]) -> dict[str, Any]:
    """An embedded result in the Redis report's row shape."""
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


# -- tables of the embedded report ---------------------------------------------------------

# The columns both reports show for a latency result, filled by ``latency_cells``.
LATENCY_CELL_COLUMNS = [
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
]
FANOUT_COLUMNS = [
    "N",
    *LATENCY_CELL_COLUMNS,
    "server CPU µs/delivery",
    "server CPU",
    "load-gen CPU",
    "other CPU",
]


def latency_cells(r: dict[str, Any]) -> list[str]:
    lat, last = r["latency_ms"], r["last_receiver_ms"]
    return [
        f"{r['writes']} ({r['target_rate']:g}/{number(r['achieved_rate'])}/s)",
        f"{r['deliveries']}/{r['expected_deliveries']}",
        number(lat["p50"], 2),
        number(lat["p90"], 2),
        number(lat["p99"], 2),
        number(lat["max"], 2),
        number(last["p50"], 2),
        number(last["p99"], 2),
        str(r["lost_updates"]),
        str(r["coalesced"]),
    ]


def fanout_row(r: dict[str, Any]) -> list[str]:
    if "latency_ms" not in r:
        return [str(r["subscribers"]), "FAILED: " + "; ".join(r["problems"])[:150]] + [""] * 13
    return [
        str(r["subscribers"]),
        *latency_cells(r),
        number(r["server_cpu_us_per_delivery"], 0),
        share(r["server_cpu_share"]),
        share(r["loadgen_cpu_share"]),
        share(r["other_cpu_share"]),
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


def extra_row(r: dict[str, Any]) -> list[str]:
    if "latency_ms" not in r:
        return [str(r["subscribers"])] + ["-"] * 8
    return [
        str(r["subscribers"]),
        number(r["first_receiver_ms"]["p50"], 2),
        number(r["latency_from_intended_send_ms"]["p50"], 2),
        number(r["latency_from_intended_send_ms"]["p99"], 2),
        number(r["bump_round_trip_ms"]["p50"], 2),
        str(r["bump_retries"]),
        str(r["query_reruns"]),
        f"{r['connect_seconds']:.1f}",
        number(r.get("server_rss_mib"), 0),
    ]


# -- tables of the Redis report (Redis beside embedded) ------------------------------------

LATENCY_COLUMNS = ["backend", "N (where)", *LATENCY_CELL_COLUMNS, "serving CPU µs/delivery"]

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


def latency_row(r: dict[str, Any]) -> list[str]:
    if "latency_ms" not in r:
        return [r["backend"], str(r["subscribers"]), "FAILED: " + "; ".join(r["problems"])[:150]] + [""] * 10
    return [
        r["backend"],
        placement(r),
        *latency_cells(r),
        number(r.get("serving_cpu_us_per_delivery"), 0),
    ]


def latency_extra_row(r: dict[str, Any]) -> list[str]:
    if "latency_ms" not in r:
        return [r["backend"], str(r["subscribers"])] + ["-"] * 11
    shares = r.get("cpu", {}).get("shares", {})
    by_server = r.get("latency_ms_by_server", {})
    if r["backend"] == "redis":
        servers = (shares.get("server A") or 0) + (shares.get("server B") or 0)
        split = " / ".join(number(by_server[k]["p50"], 2) if k in by_server else "-" for k in ("A", "B"))
    else:
        servers, split = shares.get("servers"), "-"
    intended = r["latency_from_intended_send_ms"]
    return [
        r["backend"],
        str(r["subscribers"]),
        number(r["first_receiver_ms"]["p50"], 2),
        split,
        f"{number(intended['p50'], 2)} / {number(intended['p99'], 2)}",
        number(r["bump_round_trip_ms"]["p50"], 2),
        f"{r['connect_seconds']:.1f}",
        share(servers),
        share(shares.get("worker")) if r["backend"] == "redis" else "(in server)",
        share(shares.get("redis")),
        share(shares.get("postgres")),
        share(shares.get("load-gen")),
        share(shares.get("other")),
    ]
