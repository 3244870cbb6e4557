"""Scenario 2, fan-out: one write seen by N subscribers of one query instance; and scenario 5,
footprint: the server's memory per idle connection and per subscription, Redis's per
subscription.

On a fresh server, for each N (clients added as N grows): open the new sockets idle (connected,
nothing sent) and read the servers' resident memory, subscribe them all to the one counter and
read it again; then ``repeats`` windows of a few writes spaced out, each seen by all N. The
figures per write: the first and the last receiver (time until the last subscriber has it) and
the query re-runs (one per write, whatever N). Per-connection memory is the RSS growth over the
sockets added in a step, divided by their number (Python's allocator keeps what it freed, so a
fresh server and growing steps).

Redis: the memory Redis uses (``INFO memory``) per subscription, for subscriptions of one shared
instance (the fan-out) and of distinct instances (one counter each).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.plans import Plan
from bench.population import Population
from bench.window import combine, measure, saturated

FANOUT_KEY = 7
DISTINCT_KEY = 50_000
SETTLE_S = 1.0  # before reading memory: the server finishes its connection work


async def memory(population: Population) -> dict[str, Any]:
    await asyncio.sleep(SETTLE_S)
    return {"rss_mib": population.deployed.rss_mib(), "redis_bytes": population.deployed.redis_used_memory()}


def per_client_kib(before: dict[str, Any], after: dict[str, Any], added: int) -> dict[str, Any]:
    """KiB per added client: each server process's RSS growth over the clients it got, and Redis's."""
    processes = len(after["rss_mib"]) or 1
    out: dict[str, Any] = {
        name: round(
            (after["rss_mib"][name] - before["rss_mib"].get(name, 0.0)) * 1024 / (added / processes), 2
        )
        for name in after["rss_mib"]
    }
    if after["redis_bytes"] is not None and before["redis_bytes"] is not None:
        out["redis"] = round((after["redis_bytes"] - before["redis_bytes"]) / 1024 / added, 3)
    return out


async def fanout_cells(population: Population, plan: Plan) -> list[dict[str, Any]]:
    deployed = population.deployed
    await deployed.reset_counters(FANOUT_KEY, 1)
    cells: list[dict[str, Any]] = []
    given_up: str | None = None
    before = await memory(population)
    start_memory = before
    steps = list(zip(plan.fanout_subscribers, plan.fanout_writes, plan.fanout_rates, strict=True))
    for step, (n, writes, rate) in enumerate(steps):
        cell: dict[str, Any] = {
            "system": deployed.system.name,
            "server": deployed.asgi_server,
            "subscribers": n,
            "rate": rate,
            "windows": [],
        }
        cells.append(cell)
        if given_up:
            cell["skipped"] = given_up
            continue
        new = list(range(len(population.follows), n))
        idle_answer = await population.open_idle(new)
        idle = await memory(population)
        subscribed_answer = await population.subscribe({i: [FANOUT_KEY] for i in new})
        subscribed = await memory(population)
        cell["connect_seconds"] = idle_answer.get("seconds")
        cell["subscribe_seconds"] = subscribed_answer.get("seconds")
        cell["memory"] = {"start": start_memory, "before": before, "idle": idle, "subscribed": subscribed}
        if deployed.system.kind != "poll":
            cell["footprint_kib"] = {
                "per_idle_connection": per_client_kib(before, idle, len(new)),
                "per_subscription": per_client_kib(idle, subscribed, len(new)),
                "clients_added": len(new),
            }
        before = subscribed
        for _ in range(plan.repeats):
            window = await measure(population, [FANOUT_KEY], rate, writes, 1, plan.drain_timeout_s * 2)
            cell["windows"].append(window)
            why = saturated(window, deployed.system.poll_ms, n, patience_ms=max(2000.0, 1500.0 / rate))
            if why:
                cell["saturated"] = why
                given_up = f"saturated at N={n}: {why}"
                break
        cell["summary"] = combine(cell["windows"])
        if not given_up and step + 1 < len(steps):
            given_up = too_slow_for(cell, *steps[step + 1])
    return cells


def too_slow_for(cell: dict[str, Any], n: int, writes: int, rate: float) -> str | None:
    """Why the next step is not run: its last receiver, scaled from this step's by the number of
    subscribers, would come over 1.5 write intervals late (the run would only measure a backlog)."""
    last = cell["summary"]["last_p50"]
    if last is None:
        return None
    predicted_s = last["median"] / 1000 * n / cell["subscribers"]
    if predicted_s > 1.5 / rate:
        return (
            f"not run: the last receiver took {last['median']:.0f} ms at N={cell['subscribers']:,}, "
            f"about {predicted_s:.1f} s at N={n:,}, over 1.5 write intervals"
        )
    return None


async def distinct_footprint(population: Population, count: int) -> dict[str, Any]:
    """Redis memory (and the servers' RSS) per subscription of a distinct instance: ``count``
    sockets, each subscribed to a counter of its own."""
    deployed = population.deployed
    await deployed.reset_counters(DISTINCT_KEY, count)
    before = await memory(population)
    indices = list(range(len(population.follows), len(population.follows) + count))
    await population.open_idle(indices)
    idle = await memory(population)
    await population.subscribe({i: [DISTINCT_KEY + k] for k, i in enumerate(indices)})
    subscribed = await memory(population)
    return {
        "subscriptions": count,
        "per_idle_connection": per_client_kib(before, idle, count),
        "per_subscription": per_client_kib(idle, subscribed, count),
        "memory": {"before": before, "idle": idle, "subscribed": subscribed},
    }
