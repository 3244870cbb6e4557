"""Scenario: commit -> subscriber latency on the embedded default, by where the write comes from.

``python -m bench --scenarios external`` (the ``reactive`` system on Daphne: the embedded backend,
SQLite in WAL mode). ``external_subscribers`` sockets follow one counter per case; each case
writes its own counter, open loop, ``external_writes`` writes at ``external_rate``/s after
``external_warmup`` unmeasured ones, ``repeats`` times:

- ``own process``: ``POST /bench/bump`` on the server the subscribers are on (its own commits
  wake its tail of the change log at once);
- ``another server``: the same view on a second server process on the same SQLite file;
- ``writer process``: a plain Django process (``bench.lag_writer``, ORM writes in autocommit),
  as a management command, a shell or a job writes.

The subscribers' server hears of other processes' commits through ``PRAGMA data_version``,
polled every ``CHANGE_LOG_POLL_SECONDS``. Every write stamps its row just before its UPDATE
(``time.monotonic_ns()``: Linux's CLOCK_MONOTONIC is system-wide, so stamps of every process
compare), and each delivery is matched to its write as in every other scenario
(``bench.window``): latency = receipt - stamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from typing import Any

from bench import Broken
from bench.lag import collect_writes, kill_writers, release, start_writers, wait_ready
from bench.plans import Plan
from bench.population import Population
from bench.servers import Databases, log_problems, start_server
from bench.window import analyse, combine, cpu_between, measure, snapshot
from harness.processes import Process

EXTERNAL_KEY = 500_000  # counters EXTERNAL_KEY + case
CASES = ("own process", "another server", "writer process")


async def external_cases(
    population: Population, plan: Plan, databases: Databases, log: Any
) -> dict[str, Any]:
    """The three cases, each with its windows and their combined figures. The second server and
    the first writer process start while the first case runs (they take seconds to set up)."""
    deployed = population.deployed
    if deployed.database_path is None or deployed.directory is None:
        raise Broken("external writes: the system has no SQLite file of its own to share")
    await deployed.reset_counters(EXTERNAL_KEY, len(CASES))
    per_key = plan.external_subscribers
    await population.subscribe(
        {case * per_key + i: [EXTERNAL_KEY + case] for case in range(len(CASES)) for i in range(per_key)}
    )
    starting = asyncio.create_task(
        asyncio.to_thread(
            start_server,
            databases,
            deployed.directory,
            f"{deployed.system.name}-second-{int(time.monotonic() * 1000) % 100000}",
            deployed.system.flavour,
            deployed.asgi_server,
            deployed.database_path,
            **dict(deployed.system.env),
        )
    )
    writers = start_writers(deployed.env, [EXTERNAL_KEY + CASES.index("writer process")], plan.external_rate,
                            plan.external_warmup + plan.external_writes, 1, log)  # fmt: skip
    second: Process | None = None
    results: dict[str, Any] = {}
    try:
        for case, name in enumerate(CASES):
            key = EXTERNAL_KEY + case
            windows = []
            for _ in range(plan.repeats):
                if name == "writer process":
                    window = await writer_window(population, plan, key, log, writers)
                    writers = []
                else:
                    if name == "another server" and second is None:
                        second = await starting
                    window = await measure(
                        population,
                        [key],
                        plan.external_rate,
                        plan.external_writes,
                        plan.external_warmup,
                        plan.drain_timeout_s,
                        reruns=False,
                        port=second.port if name == "another server" else None,  # type: ignore[union-attr]
                    )
                window["target_rate"] = plan.external_rate
                windows.append(window)
            results[name] = {"windows": windows, "summary": combine(windows)}
    finally:
        kill_writers(writers)
        if second is None:
            with contextlib.suppress(Exception):
                second = await starting
    problems: list[str] = []
    if second is not None:
        alive = second.alive()
        code = second.stop()
        problems = ([] if alive else [f"the second server died (exit code {code})"]) + log_problems(second)
    if problems:
        raise Broken("external writes: " + " | ".join(problems[:5])[:1500])
    return {"subscribers_per_case": per_key, "cases": results}


async def writer_window(
    population: Population, plan: Plan, key: int, log: Any, started: list[subprocess.Popen]
) -> dict[str, Any]:
    """One window of writes from a separate Django process (``started``, or a new one); the
    warm-up writes are its first."""
    deployed = population.deployed
    total = plan.external_warmup + plan.external_writes
    writers = started or start_writers(deployed.env, [key], plan.external_rate, total, 1, log)
    try:
        await wait_ready(writers, "external writes")
        await population.generators.mark()
        start = time.monotonic_ns() + 200_000_000
        release(writers, start)
        window0 = start + int(plan.external_warmup * 1e9 / plan.external_rate)
        before = snapshot(deployed, population.generators)
        writes = await collect_writes(writers)
        final = max((r[5] for r in writes["records"]), default=0)
        drained = await population.generators.settled({key: final}, 300, plan.drain_timeout_s)
        after = snapshot(deployed, population.generators)
        collected = await population.generators.collect()
    finally:
        kill_writers(writers)
    in_window = [r for r in writes["records"] if r[0] >= window0]
    cpu = cpu_between(before, after)
    window = analyse(population, {**writes, "records": in_window}, collected, cpu)
    window["lost"] = analyse(population, writes, collected, cpu)["lost"]
    window["drained"] = drained
    return window
