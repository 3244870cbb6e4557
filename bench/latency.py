"""Scenario 1: commit -> client latency with 1 to 5,000 subscribers, at two write rates.

Client ``i`` follows counter ``LATENCY_KEY + i % instances`` (``instances`` = min(N, 100)), so
the N subscribers spread evenly over up to 100 query instances; the writes go round robin over
those instances' counters, one subscriber group per write. For each N (clients are added to the
same server as N grows) and each rate: ``repeats`` windows, each after its own warm-up.

A system that cannot keep up at some (N, rate) (``window.saturated``) is not run at larger N
for that rate: the cell says why.
"""

from __future__ import annotations

import math
from typing import Any

from bench.plans import Plan
from bench.population import Population
from bench.window import combine, measure, saturated

LATENCY_KEY = 1_000


async def latency_cells(population: Population, plan: Plan) -> list[dict[str, Any]]:
    deployed = population.deployed
    await deployed.reset_counters(LATENCY_KEY, plan.latency_instances)
    cells: list[dict[str, Any]] = []
    given_up: dict[float, str] = {}  # rate -> why larger N are not run
    for n in plan.latency_subscribers:
        instances = min(n, plan.latency_instances)
        keys = [LATENCY_KEY + i for i in range(instances)]
        new = {i: [LATENCY_KEY + i % plan.latency_instances] for i in range(len(population.follows), n)}
        if len(given_up) == len(plan.latency_rates):
            for rate in plan.latency_rates:
                cells.append(skipped_cell(population, n, instances, rate, given_up[rate]))
            continue
        opened = await population.subscribe(new)
        for rate, seconds in zip(plan.latency_rates, plan.latency_window_s, strict=True):
            cell: dict[str, Any] = {
                "system": deployed.system.name,
                "server": deployed.asgi_server,
                "subscribers": n,
                "instances": instances,
                "rate": rate,
                "subscribe_seconds": opened.get("seconds"),
                "windows": [],
            }
            if rate in given_up:
                cells.append(skipped_cell(population, n, instances, rate, given_up[rate]))
                continue
            count = max(2, int(rate * seconds))
            warmup = max(2, math.ceil(rate * 0.25))
            for _ in range(plan.repeats):
                window = await measure(population, keys, rate, count, warmup, plan.drain_timeout_s)
                cell["windows"].append(window)
                why = saturated(window, deployed.system.poll_ms, n)
                if why:
                    cell["saturated"] = why
                    given_up[rate] = f"saturated at N={n}: {why}"
                    break
            cell["summary"] = combine(cell["windows"])
            cells.append(cell)
    return cells


def skipped_cell(population: Population, n: int, instances: int, rate: float, why: str) -> dict[str, Any]:
    return {
        "system": population.deployed.system.name,
        "server": population.deployed.asgi_server,
        "subscribers": n,
        "instances": instances,
        "rate": rate,
        "skipped": why,
        "windows": [],
    }
