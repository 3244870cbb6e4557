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
            if rate not in given_up:
                why_not = polls_out_of_reach(cell, deployed.system.poll_ms, plan.latency_subscribers)
                if why_not:
                    given_up[rate] = why_not
    return cells


def polls_out_of_reach(cell: dict[str, Any], poll_ms: float | None, steps: tuple[int, ...]) -> str | None:
    """Pollers: why the next N is not run, when it needs more polls a second than one core of
    the server could answer at the CPU each poll cost at this N (a Python server uses one core):
    the run would only measure the backlog. Judged only where polls outnumber writes twice."""
    later = [n for n in steps if n > cell["subscribers"]]
    if not poll_ms or not later or not cell["windows"]:
        return None
    polls = sum(w["polls"] for w in cell["windows"])
    writes = sum(w["writes"] for w in cell["windows"])
    cpu = sum(w["cpu"]["serving_s"] for w in cell["windows"])
    if not cpu or polls < 2 * writes:
        return None  # the writes' CPU would count as the polls': no estimate
    capacity = polls / cpu  # polls per CPU second, writes included
    needed = later[0] * 1000 / poll_ms
    if needed > 1.5 * capacity:
        return (
            f"not run: N={later[0]:,} needs {needed:,.0f} polls/s; at N={cell['subscribers']:,} a poll "
            f"cost {1e6 / capacity:,.0f} µs of server CPU ({capacity:,.0f}/s on one core)"
        )
    return None


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
