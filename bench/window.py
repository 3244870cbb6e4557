"""One measured window: warm-up, writes on an open-loop schedule, drain, and what it shows.

The writer process sends ``POST /bench/bump?key=K&intended=NS`` at fixed slots (``rate``/s) over
the window's keys, answered or not (no coordinated omission). Every counter row carries the
``stamp`` its write took just before its UPDATE and the write's ``intended`` send time, so each
delivery says its own latency: commit -> client is ``receipt - stamp``, and ``receipt -
intended`` adds the wait in the writer and the server. Deliveries are matched to writes by
(key, value).

The warm-up (writes at the same rate, then a drain) is not recorded: ``mark`` starts the window
after it. The serving processes' CPU (``/proc/<pid>/stat``), the load generators' and the rest
of the machine's are read around the writes and the drain.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from bench.generators import LoadGenerators
from bench.population import Population
from bench.stats import achieved_rate, spread, summary_ms
from bench.systems import Running
from harness import procfs
from harness.ports import HOST

QUIET_MS = 300.0


def snapshot(deployed: Running, generators: LoadGenerators) -> dict[str, Any]:
    """CPU seconds so far: the system's processes, the load generators (and this process), the
    machine; with the wall clock."""
    return {
        "serving": deployed.serving_cpu(),
        "load": generators.load_cpu_seconds() + procfs.self_cpu_seconds(),
        "machine": procfs.machine_busy_seconds(),
        "wall": time.monotonic(),
    }


def cpu_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """CPU seconds and shares of one core: serving processes, load generators, everything else."""
    wall = after["wall"] - before["wall"]
    serving = {name: after["serving"][name] - before["serving"].get(name, 0.0) for name in after["serving"]}
    serving_total = sum(serving.values())
    load = after["load"] - before["load"]
    busy = after["machine"] - before["machine"]
    return {
        "wall_s": round(wall, 3),
        "serving_s": round(serving_total, 4),
        "serving_by_process_s": {k: round(v, 4) for k, v in serving.items()},
        "load_s": round(load, 4),
        "serving_share": round(serving_total / wall, 3),
        "load_share": round(load / wall, 3),
        "other_share": round(max(0.0, busy - serving_total - load) / wall, 3),
    }


async def drain(population: Population, writes: dict[str, Any], timeout: float) -> bool:
    """Until every subscriber has the last value written to its counter and nothing arrived for
    ``QUIET_MS``; pollers: one period and a half more."""
    if population.kind == "poll":
        await asyncio.sleep((population.deployed.system.poll_ms or 1000) * 1.5 / 1000 + 0.3)
        return True
    final: dict[int, int] = {}
    for record in writes["records"]:
        if record[3] == 200:
            final[record[4]] = max(final.get(record[4], 0), record[5])
    return await population.generators.settled(final, QUIET_MS, timeout)


async def write(
    population: Population,
    keys: list[int],
    rate: float,
    count: int,
    mutations: int = 0,
    port: int | None = None,
) -> dict[str, Any]:
    """Open-loop bumps through the plain view, or (``mutations`` sockets) through the mutation;
    to the system's write port, or to ``port`` (another server on the same database)."""
    return await population.generators.writer.ask(
        "write_open",
        host=HOST,
        port=port or population.deployed.write_port,
        keys=keys,
        rate=rate,
        count=count,
        mutations=mutations,
    )


async def measure(
    population: Population,
    keys: list[int],
    rate: float,
    count: int,
    warmup: int,
    drain_timeout: float,
    reruns: bool = True,
    mutations: int = 0,
    port: int | None = None,
) -> dict[str, Any]:
    """Warm up, then one window of ``count`` writes at ``rate``/s over ``keys`` (through the
    view, or as mutations over ``mutations`` WebSockets); its figures."""
    if warmup:
        await drain(population, await write(population, keys, rate, warmup, mutations, port), drain_timeout)
    runs_before = await population.deployed.invalidator_runs() if reruns else None
    await population.generators.mark()
    before = snapshot(population.deployed, population.generators)
    writes = await write(population, keys, rate, count, mutations, port)
    drained = await drain(population, writes, drain_timeout)
    after = snapshot(population.deployed, population.generators)
    collected = await population.generators.collect()
    runs_after = await population.deployed.invalidator_runs() if reruns else None
    result = analyse(population, writes, collected, cpu_between(before, after))
    result["drained"] = drained
    result["target_rate"] = rate
    if runs_before is not None and runs_after is not None:
        result["reruns"] = runs_after - runs_before
        result["reruns_per_write"] = (
            round(result["reruns"] / result["writes"], 3) if result["writes"] else None
        )
    return result


def reached(
    deliveries: list[list[int]], writes: dict[int, list[tuple[int, int]]]
) -> tuple[dict[tuple[int, int], list[int]], int, int]:
    """When each subscriber's state reached each write: for every (client, key) the receipts
    sorted by time, and for each write to the key (value v, stamp) the first receipt of a value
    >= v. A write whose value was replaced before it was pushed (coalesced) or polled counts
    from its own stamp to the first later value, which includes it.

    Returns {(key, value): [receipt - stamp for each client that reached it]}, the number of
    receipts of values no write of the window made (warm-up stragglers), and duplicates."""
    receipts: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    unexpected = 0
    for t, key, value, _stamp, _intended, index in deliveries:
        if key not in writes:
            unexpected += 1
            continue
        receipts[index, key].append((t, value))
    per_write: dict[tuple[int, int], list[int]] = defaultdict(list)
    duplicates = 0
    for (_, key), seen in receipts.items():
        seen.sort()
        pending = writes[key]  # (value, stamp), ascending
        position = 0
        highest = -1
        for t, value in seen:
            if value <= highest:
                duplicates += value == highest
                continue
            highest = value
            while position < len(pending) and pending[position][0] <= value:
                written, stamp = pending[position]
                per_write[key, written].append(t - stamp)
                position += 1
    return per_write, unexpected, duplicates


def analyse(
    population: Population, writes: dict[str, Any], collected: dict[str, Any], cpu: dict[str, Any]
) -> dict[str, Any]:
    """Latency, first and last receiver per write, deliveries, losses, CPU and bytes of a window."""
    records = writes["records"]  # [intended, sent, done, status, key, value, stamp]
    ok = [r for r in records if r[3] == 200]
    by_key: dict[int, list[tuple[int, int]]] = defaultdict(list)
    intended_of: dict[tuple[int, int], int] = {}
    for r in ok:
        by_key[r[4]].append((r[5], r[6]))
        intended_of[r[4], r[5]] = r[0]
    for pending in by_key.values():
        pending.sort()
    final = {key: pending[-1][0] for key, pending in by_key.items()}
    followers = population.subscribers_of()
    per_write, unexpected, duplicates = reached(collected["deliveries"], by_key)

    latencies: list[int] = []
    from_intended: list[int] = []
    for (key, value), values in per_write.items():
        latencies += values
        stamp = next(s for v, s in by_key[key] if v == value)
        shift = stamp - intended_of[key, value]
        from_intended += [v + shift for v in values]
    expected = sum(followers[r[4]] for r in ok)
    latest = {(index, key): value for index, key, value in collected["latest"]}
    lost = sum(
        1
        for index, keys in population.follows.items()
        for key in keys
        if key in final and latest.get((index, key), -1) < final[key]
    )
    deliveries = len(latencies)
    pushed = len(collected["deliveries"]) - unexpected - duplicates
    serving_s = cpu["serving_s"]
    return {
        "writes": len(ok),
        "write_errors": len(records) - len(ok),
        "write_error_sample": writes["errors"][:3],
        "achieved_rate": round(achieved_rate([r[1] for r in records]) or 0, 2),
        # Writes answered per second, from the first slot to the last answer: below the target
        # rate, writes queue in the server (then "intended -> client" grows, not commit -> client).
        "completed_rate": round(len(ok) / ((max(r[2] for r in ok) - records[0][0]) / 1e9), 2) if ok else 0.0,
        "write_round_trip_ms": summary_ms([r[2] - r[1] for r in ok]),
        "deliveries": deliveries,
        "pushed": pushed,
        "expected": expected,
        "delivered_share": round(deliveries / expected, 4) if expected else None,
        "coalesced": deliveries - pushed,
        "lost": lost,
        "unexpected": unexpected,
        "duplicates": duplicates,
        "latency_ms": summary_ms(latencies),
        "from_intended_ms": summary_ms(from_intended),
        "first_receiver_ms": summary_ms([min(v) for v in per_write.values()]),
        "last_receiver_ms": summary_ms([max(v) for v in per_write.values()]),
        "complete_writes": sum(1 for (key, _), v in per_write.items() if len(v) == followers[key]),
        "cpu": cpu,
        "serving_cpu_us_per_delivery": round(serving_s / pushed * 1e6, 1) if pushed else None,
        "serving_cpu_us_per_write": round(serving_s / len(ok) * 1e6, 1) if ok else None,
        "bytes_in": collected["bytes_in"],
        "bytes_out": collected["bytes_out"],
        "bytes_in_per_delivery": round(collected["bytes_in"] / pushed, 1) if pushed else None,
        "bytes_out_per_delivery": round(collected["bytes_out"] / pushed, 1) if pushed else None,
        "messages": collected["messages"],
        "polls": collected["polls"],
        "poll_rate": round(collected["polls"] / cpu["wall_s"], 1) if collected["polls"] else None,
        "late_polls": collected["late_polls"],
        "closed_sockets": collected["closed_count"],
        "closed_reasons": sorted({reason for _, reason in collected["closed"]}),
        "client_errors": collected["errors"][:3],
    }


# The figures of a window that a cell reports as median (min-max) over its repeats.
HEADLINE = {
    "p50": ("latency_ms", "p50"),
    "p95": ("latency_ms", "p95"),
    "p99": ("latency_ms", "p99"),
    "max": ("latency_ms", "max"),
    "first_p50": ("first_receiver_ms", "p50"),
    "last_p50": ("last_receiver_ms", "p50"),
    "last_p99": ("last_receiver_ms", "p99"),
    "intended_p50": ("from_intended_ms", "p50"),
    "intended_p99": ("from_intended_ms", "p99"),
    "write_rtt_p50": ("write_round_trip_ms", "p50"),
    "cpu_us_per_delivery": ("serving_cpu_us_per_delivery",),
    "cpu_us_per_write": ("serving_cpu_us_per_write",),
    "delivered": ("delivered_share",),
    "achieved_rate": ("achieved_rate",),
    "completed_rate": ("completed_rate",),
    "serving_share": ("cpu", "serving_share"),
    "load_share": ("cpu", "load_share"),
    "other_share": ("cpu", "other_share"),
    "bytes_in_per_delivery": ("bytes_in_per_delivery",),
    "bytes_out_per_delivery": ("bytes_out_per_delivery",),
    "reruns_per_write": ("reruns_per_write",),
    "poll_rate": ("poll_rate",),
}


def dig(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(data, dict):
            return None
        data = data.get(part)  # type: ignore[assignment]
    return data


def combine(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each headline figure as median, min and max over the repeats; totals of losses."""
    summary: dict[str, Any] = {
        name: spread([dig(w, path) for w in windows]) for name, path in HEADLINE.items()
    }
    summary["repeats"] = len(windows)
    summary["lost"] = sum(w["lost"] for w in windows)
    summary["write_errors"] = sum(w["write_errors"] for w in windows)
    summary["deliveries"] = sum(w["deliveries"] for w in windows)
    summary["expected"] = sum(w["expected"] for w in windows)
    summary["drained"] = all(w["drained"] for w in windows)
    return summary


def saturated(
    window: dict[str, Any], poll_ms: float | None, clients: int, patience_ms: float = 2000.0
) -> str | None:
    """Why a window shows a system past what it can serve (None if it kept up); ``patience_ms``
    is how late the last receiver may be (beyond a poll period)."""
    if not window["writes"]:
        return f"no write succeeded ({window['write_errors']} failed)"
    if not window["drained"]:
        return "pushes still arriving at the drain timeout"
    if window["achieved_rate"] < 0.9 * window["target_rate"]:
        return f"writes achieved {window['achieved_rate']}/s of {window['target_rate']}/s"
    if window["write_errors"] > 0.05 * (window["writes"] + window["write_errors"]):
        return f"{window['write_errors']} write errors"
    last = window["last_receiver_ms"]["p50"]
    if last is not None and last > patience_ms + (poll_ms or 0):
        return f"last receiver p50 {last:.0f} ms"
    if window["delivered_share"] is not None and window["delivered_share"] < 0.9:
        return f"only {window['delivered_share'] * 100:.0f}% delivered"
    if poll_ms and window["poll_rate"] is not None and window["poll_rate"] < 0.8 * clients * 1000 / poll_ms:
        return f"polls answered at {window['poll_rate']}/s of {clients * 1000 / poll_ms:.0f}/s"
    return None
