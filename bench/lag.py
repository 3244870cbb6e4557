"""Redis diagnostic: the invalidator's lag under writes from processes that are not servers.

``lag_counters`` counters with one subscriber each, alternately on servers A and B. Writer
processes (``bench.lag_writer``, Django with the cluster's settings) update the counters directly
through the ORM, in autocommit, on one open-loop schedule (``lag_rate`` writes/s together), round
robin, each counter owned by one writer. The writes of the first ``lag_warmup_seconds`` are not
measured. Lag = receipt - stamp (taken just before each UPDATE); beside it the backlog of
``reactive:log`` behind the worker's ``reactive:progress``, sampled every 50 ms, and the worker's
passes (``XREAD`` calls).
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
from bench.cluster import LOG_KEY, PROGRESS_KEY, VERSION_KEY, commandstats
from bench.plans import Plan
from bench.population import Population
from bench.stats import percentile
from bench.window import analyse, cpu_between, snapshot
from harness import procfs
from harness.processes import ROOT

LAG_KEY = 400_000  # counters LAG_KEY + i


class BacklogSampler(threading.Thread):
    """Every 50 ms: the log's last version (``reactive:version``), the worker's progress version
    and the length of ``reactive:log``."""

    def __init__(self, url: str) -> None:
        super().__init__(name="bench-backlog", daemon=True)
        self.client = redis.Redis.from_url(url, socket_timeout=10)
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
            except redis.RedisError:
                continue
            self.samples.append((time.monotonic_ns(), int(version or 0), int(progress or 0), int(length)))

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        self.client.close()


def start_writers(env: dict[str, str], plan: Plan, keys: list[int], logs: Any) -> list[subprocess.Popen]:
    """The writer processes, each ready to write once it reads the start time. Writer w owns
    keys[w::W] and the slots w, w + W, ... of the common schedule."""
    period_ns = int(1e9 / plan.lag_rate)
    total = round((plan.lag_warmup_seconds + plan.lag_seconds) * plan.lag_rate)
    count = plan.lag_writers
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


async def collect_writes(writers: list[subprocess.Popen]) -> dict[str, Any]:
    """Every writer's records, once done, in the load generator's ``write_open`` format."""
    merged: dict[str, Any] = {"records": [], "errors": [], "error_count": 0}
    for w, process in enumerate(writers):
        out, _ = await asyncio.to_thread(process.communicate, None, 120)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if process.returncode != 0 or not lines:
            raise Broken(f"lag: writer {w} exited with {process.returncode}: {out[-300:]}")
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
    writers = start_writers(env, plan, keys, log)
    sampler: BacklogSampler | None = None
    try:
        for w, process in enumerate(writers):
            assert process.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 120)
            if line.strip() != "ready":
                raise Broken(f"lag: writer {w} did not start: {line.strip()[:300]}")
        await population.generators.mark()
        sampler = BacklogSampler(deployed.redis_url)  # type: ignore[arg-type]
        sampler.start()
        stats_client = redis.Redis.from_url(deployed.redis_url, socket_timeout=10)  # type: ignore[arg-type]
        start = time.monotonic_ns() + 300_000_000
        for process in writers:
            assert process.stdin is not None
            process.stdin.write(f"{start}\n")
            process.stdin.flush()
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
        for process in writers:
            if process.poll() is None:
                process.kill()
                process.wait()
    in_window = [r for r in writes["records"] if window0 <= r[0] < window1]
    cpu = cpu_between(cpu0, cpu1)
    cpu["writers_share"] = round((writers1 - writers0) / cpu["wall_s"], 3)
    # Latency over the window's writes; losses over all of them.
    result = analyse(population, {**writes, "records": in_window}, collected, cpu)
    result["lost"] = analyse(population, writes, collected, cpu)["lost"]
    samples = [(t, v, p, n) for t, v, p, n in sampler.samples if window0 <= t < window1]
    backlog = [v - p for _, v, p, _ in samples]
    passes = stats1.get("cmdstat_xread", 0) - stats0.get("cmdstat_xread", 0)
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
            "log_xlen_max": max((n for *_, n in samples), default=None),
            "worker_passes": passes,
            "records_per_pass": round(len(in_window) / passes, 2) if passes else None,
        }
    )
    return result
