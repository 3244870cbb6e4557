"""Scenario 3, write overhead: writes per second, with 0 and with 10,000 live subscriptions,
against the same ORM write in plain Django views; and the sustained write rate with 1,000
distinct live subscriptions.

Closed loop: ``writes_connections`` clients each send a write, wait for its answer and send the
next, for ``writes_seconds``. The write is always ``writes.bump_counter`` (a ``save()`` in a
transaction), reached three ways: ``view`` (``POST /bench/bump``, a plain Django view),
``http-mutation`` (``POST /reactive/api/mutation``) and ``ws-mutation`` (a ``mutation`` frame,
answered after the commit's pushes, PROTOCOL.md guarantee 6). The servers (plain Django,
``reactive``, table-level, DCRF; all Daphne) run side by side and the variants take turns, so
drift in the machine's load falls on all of them.

With subscriptions: ``writes_sockets`` sockets with ``writes_subscriptions_per_socket``
subscriptions each, every counter followed by that many sockets; *watched* writes go to those
counters (each re-runs one instance and pushes to its subscribers), *unwatched* writes to
counters nobody follows (no re-run at all).

Sustained rate: ``sustained_subscriptions`` sockets, each following a counter of its own; writes
round robin over them as ``benchapp.increment`` mutations over 32 WebSockets (the product's
write path, cheaper than an HTTP view), open loop, at rising rates until commit -> client p99
exceeds four times the target's 50 ms or the writes are answered at under half the rate. The
figure is the highest rate whose writes are answered as fast as they are sent (95%: no queue
builds up) with commit -> client p99 <= 50 ms.
"""

from __future__ import annotations

import math
from typing import Any

from bench.generators import LoadGenerators
from bench.plans import Plan
from bench.population import Population
from bench.stats import spread
from bench.systems import Running
from bench.window import combine, cpu_between, measure, saturated, snapshot
from harness.ports import HOST

WRITE_KEY = 100_000
SUSTAINED_KEY = 200_000
SUSTAINED_P99_MS = 50.0
SUSTAINED_SOCKETS = 32  # the writer's WebSockets (a connection runs its mutations one at a time)


async def closed_loop(
    deployed: Running, generators: LoadGenerators, mode: str, keys: list[int], plan: Plan
) -> dict[str, Any]:
    runs_before = await deployed.invalidator_runs()
    before = snapshot(deployed, generators)
    answer = await generators.writer.ask(
        "write_closed",
        mode=mode,
        host=HOST,
        port=deployed.write_port,
        keys=keys,
        connections=plan.writes_connections,
        seconds=plan.writes_seconds,
    )
    after = snapshot(deployed, generators)
    runs_after = await deployed.invalidator_runs()
    completed = answer["completed"]
    cpu = cpu_between(before, after)
    trips = sorted(answer["round_trips_us"])
    return {
        "writes": completed,
        "writes_per_s": round(completed / answer["seconds"], 1),
        "round_trip_ms_p50": trips[len(trips) // 2] / 1000 if trips else None,
        "round_trip_ms_p99": trips[max(0, math.ceil(0.99 * len(trips)) - 1)] / 1000 if trips else None,
        "cpu_us_per_write": round(cpu["serving_s"] / completed * 1e6, 1) if completed else None,
        "cpu": cpu,
        "reruns": runs_after - runs_before if runs_before is not None and runs_after is not None else None,
        "errors": answer["errors"][:3],
        "error_count": answer["error_count"],
    }


def variants(plan: Plan, subscribed: bool) -> list[tuple[str, str, str, list[int]]]:
    """(label, system, mode, keys) of one phase, in the order they take turns."""
    watched = [WRITE_KEY + k for k in range(plan.writes_sockets)]
    unwatched = [WRITE_KEY + plan.writes_sockets + k for k in range(plan.writes_sockets)]
    if not subscribed:
        return [
            ("plain Django view", "plain", "view", watched),
            ("reactive: the same view", "reactive", "view", watched),
            ("reactive: HTTP mutation", "reactive", "http-mutation", watched),
            ("reactive: WebSocket mutation", "reactive", "ws-mutation", watched),
            ("DCRF: the same view", "dcrf", "view", watched),
        ]
    return [
        ("plain Django view", "plain", "view", watched),
        ("reactive: view, watched rows", "reactive", "view", watched),
        ("reactive: WebSocket mutation, watched rows", "reactive", "ws-mutation", watched),
        ("reactive: view, unwatched rows", "reactive", "view", unwatched),
        ("DCRF: view, observed rows", "dcrf", "view", watched),
        ("table-level: view, watched tables", "tables", "view", watched),
    ]


async def write_phases(systems: dict[str, Running], generators: LoadGenerators, plan: Plan) -> dict[str, Any]:
    """Both phases; every variant ``repeats`` times, taking turns."""
    for deployed in systems.values():
        await deployed.reset_counters(WRITE_KEY, 2 * plan.writes_sockets)
    phases: dict[str, Any] = {}
    populations: list[Population] = []
    try:
        for phase, subscribed in (("0 subscriptions", False), ("subscribed", True)):
            if subscribed:
                follows = {
                    i: [
                        WRITE_KEY + (i * plan.writes_subscriptions_per_socket + j) % plan.writes_sockets
                        for j in range(plan.writes_subscriptions_per_socket)
                    ]
                    for i in range(plan.writes_sockets)
                }
                for offset, name in enumerate(("reactive", "dcrf", "tables")):
                    population = Population(systems[name], generators)
                    # Index ranges apart: the load generators hold every system's sockets at once.
                    await population.subscribe({offset * 10_000_000 + i: keys for i, keys in follows.items()})
                    populations.append(population)
            rows: dict[str, list[dict[str, Any]]] = {}
            plan_variants = variants(plan, subscribed)
            for _ in range(plan.repeats):
                for label, system, mode, keys in plan_variants:
                    rows.setdefault(label, []).append(
                        await closed_loop(systems[system], generators, mode, keys, plan)
                    )
            phases[phase] = {
                label: {
                    "system": next(v[1] for v in plan_variants if v[0] == label),
                    "mode": next(v[2] for v in plan_variants if v[0] == label),
                    "runs": runs,
                    "writes_per_s": spread([r["writes_per_s"] for r in runs]),
                    "cpu_us_per_write": spread([r["cpu_us_per_write"] for r in runs]),
                    "round_trip_ms_p99": spread([r["round_trip_ms_p99"] for r in runs]),
                    "reruns_per_write": spread(
                        [
                            r["reruns"] / r["writes"] if r["reruns"] is not None and r["writes"] else None
                            for r in runs
                        ]
                    ),
                    "load_share": spread([r["cpu"]["load_share"] for r in runs]),
                    "other_share": spread([r["cpu"]["other_share"] for r in runs]),
                    "errors": sum(r["error_count"] for r in runs),
                }
                for label, runs in rows.items()
            }
            phases[phase]["_subscriptions"] = (
                plan.writes_sockets * plan.writes_subscriptions_per_socket if subscribed else 0
            )
    finally:
        for population in populations:
            await population.close()
    return phases


async def sustained_rates(population: Population, plan: Plan) -> dict[str, Any]:
    """Open-loop writes at rising rates over ``sustained_subscriptions`` distinct instances."""
    count = plan.sustained_subscriptions
    keys = [SUSTAINED_KEY + k for k in range(count)]
    await population.deployed.reset_counters(SUSTAINED_KEY, count)
    await population.subscribe({i: [key] for i, key in enumerate(keys)})
    steps: list[dict[str, Any]] = []
    best: float | None = None
    for rate in plan.sustained_rates:
        windows = []
        why = None
        for _ in range(plan.repeats):
            window = await measure(
                population, keys, rate, max(2, int(rate * plan.sustained_window_s)), max(2, int(rate * 0.25)),
                plan.drain_timeout_s, mutations=SUSTAINED_SOCKETS,
            )  # fmt: skip
            windows.append(window)
            why = saturated(window, None, count)
            if why:
                break
        summary = combine(windows)
        p99 = summary["p99"]["median"] if summary["p99"] else None
        completed = summary["completed_rate"]["median"] if summary["completed_rate"] else 0
        # Sustained: the writes are answered as fast as they are sent (no queue builds up), and
        # commit -> client p99 is within the target.
        met = why is None and p99 is not None and p99 <= SUSTAINED_P99_MS and completed >= 0.95 * rate
        steps.append({"rate": rate, "windows": windows, "summary": summary, "saturated": why, "met_p99": met})
        if met:
            best = rate
        if why or p99 is None or p99 > 4 * SUSTAINED_P99_MS or completed < 0.5 * rate:
            break  # far past the target: higher rates only pile up a backlog
    return {"subscriptions": count, "steps": steps, "best_rate_at_p99_50ms": best}
