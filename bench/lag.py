"""Redis diagnostic: the invalidator's lag under writes from processes that are not servers.

``lag_counters`` counters with one subscriber each, alternately on servers A and B. Writer
processes (``bench.lag_writer``, Django with the cluster's settings) update the counters directly
through the ORM, in autocommit, on one open-loop schedule (``lag_rate`` writes/s together), round
robin, each counter owned by one writer. The writes of the first ``lag_warmup_seconds`` are not
measured. Lag = receipt - stamp (taken just before each UPDATE); beside it the backlog of the
change log table (records a reader could read at or past the worker's ``reactive:progress``),
sampled every 50 ms, and the worker's passes (one ``XTRIM`` of the requests stream each).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from typing import Any

import redis

from bench import Broken
from bench.cluster import BACKLOG_SQL, PROGRESS_KEY, commandstats, database
from bench.plans import Plan
from bench.population import Population
from bench.stats import percentile
from bench.window import analyse, cpu_between, snapshot
from harness import procfs
from harness.processes import ROOT

LAG_KEY = 400_000  # counters LAG_KEY + i


class BacklogSampler(threading.Thread):
    """Every 50 ms: the change log's records at or past the worker's ``reactive:progress`` version
    (readable, not processed yet), and the records its table holds."""

    def __init__(self, redis_url: str, database_url: str) -> None:
        super().__init__(name="bench-backlog", daemon=True)
        self.client = redis.Redis.from_url(redis_url, socket_timeout=10)
        self.database = database(database_url)
        self.samples: list[tuple[int, int, int]] = []  # (monotonic ns, backlog, table rows)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.05):
            try:
                progress = int(self.client.hget(PROGRESS_KEY, "version") or 0)
                backlog, length = self.database.execute(BACKLOG_SQL, (progress,)).fetchone()
            except Exception:  # a sample lost to a busy moment is only a missing sample
                continue
            self.samples.append((time.monotonic_ns(), int(backlog), int(length)))

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        self.client.close()
        self.database.close()


def start_writers(
    env: dict[str, str], keys: list[int], rate: float, total: int, count: int, logs: Any
) -> list[subprocess.Popen]:
    """``count`` writer processes (``bench.lag_writer``, Django with ``env``) for ``total`` writes
    at ``rate``/s together, each ready to write once it reads the start time. Writer w owns
    keys[w::count] and the slots w, w + count, ... of the common schedule."""
    period_ns = int(1e9 / rate)
    writers = []
    for w in range(count):
        argv = [
            sys.executable, "-m", "bench.lag_writer", "--keys", ",".join(map(str, keys[w::count])),
            "--count", str(len(range(w, total, count))), "--period-ns", str(period_ns * count),
            "--offset-ns", str(period_ns * w),
        ]  # fmt: skip
        writers.append(
            subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=logs,
                text=True,
                start_new_session=True,
            )
        )
    return writers


async def wait_ready(writers: list[subprocess.Popen], what: str) -> None:
    """Until every writer has set Django up (it prints ``ready``)."""
    for w, process in enumerate(writers):
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 120)
        if line.strip() != "ready":
            raise Broken(f"{what}: writer {w} did not start: {line.strip()[:300]}")


def release(writers: list[subprocess.Popen], start_ns: int) -> None:
    """Tell every writer the schedule's start (monotonic ns, system-wide on Linux)."""
    for process in writers:
        assert process.stdin is not None
        process.stdin.write(f"{start_ns}\n")
        process.stdin.flush()


def kill_writers(writers: list[subprocess.Popen]) -> None:
    for process in writers:
        if process.poll() is None:
            process.kill()
            process.wait()


async def collect_writes(writers: list[subprocess.Popen]) -> dict[str, Any]:
    """Every writer's records, once done, in the load generator's ``write_open`` format."""
    merged: dict[str, Any] = {"records": [], "errors": [], "error_count": 0}
    for w, process in enumerate(writers):
        out, _ = await asyncio.to_thread(process.communicate, None, 120)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if process.returncode != 0 or not lines:
            raise Broken(f"writer {w} exited with {process.returncode}: {out[-300:]}")
        data = json.loads(lines[-1])
        merged["records"] += data["records"]
        merged["errors"] += data["errors"]
        merged["error_count"] += data["error_count"]
    return merged


async def lag_case(population: Population, plan: Plan, env: dict[str, str], log: Any) -> dict[str, Any]:
    deployed = population.deployed
    keys = [LAG_KEY + i for i in range(plan.lag_counters)]
    await deployed.reset_counters(LAG_KEY, plan.lag_counters)
    await population.subscribe({i: [key] for i, key in enumerate(keys)})  # alternately on A and B
    total = round((plan.lag_warmup_seconds + plan.lag_seconds) * plan.lag_rate)
    writers = start_writers(env, keys, plan.lag_rate, total, plan.lag_writers, log)
    sampler: BacklogSampler | None = None
    try:
        await wait_ready(writers, "lag")
        await population.generators.mark()
        sampler = BacklogSampler(deployed.redis_url, deployed.database_url)  # type: ignore[arg-type]
        sampler.start()
        stats_client = redis.Redis.from_url(deployed.redis_url, socket_timeout=10)  # type: ignore[arg-type]
        start = time.monotonic_ns() + 300_000_000
        release(writers, start)
        window0 = start + int(plan.lag_warmup_seconds * 1e9)
        window1 = window0 + int(plan.lag_seconds * 1e9)
        pids = {f"writer {w}": p.pid for w, p in enumerate(writers)}
        await asyncio.sleep(max(0, window0 - time.monotonic_ns()) / 1e9)
        cpu0, stats0 = snapshot(deployed, population.generators), commandstats(stats_client)
        writers0 = sum(procfs.cpu_seconds(pid) for pid in pids.values())
        await asyncio.sleep(max(0, window1 - time.monotonic_ns()) / 1e9)
        cpu1, stats1 = snapshot(deployed, population.generators), commandstats(stats_client)
        writers1 = sum(procfs.cpu_seconds(pid) for pid in pids.values())
        stats_client.close()
        writes = await collect_writes(writers)
        final: dict[int, int] = {}
        for record in writes["records"]:
            final[record[4]] = max(final.get(record[4], 0), record[5])
        drained = await population.generators.settled(final, 300, plan.drain_timeout_s)
        sampler.stop()
        collected = await population.generators.collect()
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        kill_writers(writers)
    in_window = [r for r in writes["records"] if window0 <= r[0] < window1]
    cpu = cpu_between(cpu0, cpu1)
    cpu["writers_share"] = round((writers1 - writers0) / cpu["wall_s"], 3)
    # Latency over the window's writes; losses over all of them.
    result = analyse(population, {**writes, "records": in_window}, collected, cpu)
    result["lost"] = analyse(population, writes, collected, cpu)["lost"]
    samples = [(t, b, n) for t, b, n in sampler.samples if window0 <= t < window1]
    backlog = [b for _, b, _ in samples]
    # One XTRIM of the requests stream per pass, with the progress (RedisBackend.save_progress).
    passes = stats1.get("cmdstat_xtrim", 0) - stats0.get("cmdstat_xtrim", 0)
    result.update(
        {
            "drained": drained,
            "counters": len(keys),
            "target_rate": plan.lag_rate,
            "seconds": plan.lag_seconds,
            "writers": plan.lag_writers,
            "backlog_records": {
                "samples": len(backlog),
                "p50": percentile(backlog, 50),
                "p99": percentile(backlog, 99),
                "max": max(backlog) if backlog else None,
            },
            "log_rows_max": max((n for *_, n in samples), default=None),
            "worker_passes": passes,
            "records_per_pass": round(len(in_window) / passes, 2) if passes else None,
        }
    )
    return result
