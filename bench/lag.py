"""Part: the invalidator's lag under load, and the rows of its tables.

100 counters with one subscriber each, alternately on servers A and B. Writer processes
(``bench.lag_writer``) update the counters directly through the ORM, in autocommit, on one
open-loop schedule (500 writes/s together), round robin; each counter has one writer, so a pushed
value names its write. Lag = receipt - commit; beside it the worker's CPU share, pushes against
writes (coalescing) and the backlog of the change log behind ``reactive:progress``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from typing import Any

from bench import Broken
from bench.cluster import BACKLOG_SQL, PROGRESS_KEY, Deployment, commandstats
from bench.plans import Plan
from bench.stats import achieved_rate, cpu_shares, percentile, summary_ms
from bench.tables import number, share
from bench.workload import DELIVERY_TIMEOUT_S, Subscriber, close_all, open_subscribers
from harness.processes import ROOT
from reactive.client import ReactiveClient

LAG_KEY_BASE = 200_000  # counters LAG_KEY_BASE + i


class BacklogSampler(threading.Thread):
    """Every 50 ms: the change log's records at or past the worker's ``reactive:progress`` version
    (readable, not processed yet), and the records its table holds."""

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(name="bench-backlog", daemon=True)
        self.client = deployment.redis()
        self.database = deployment.database()
        self.samples: list[tuple[int, int, int]] = []  # (monotonic ns, backlog, table rows)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.05):
            try:
                progress = int(self.client.hget(PROGRESS_KEY, "version") or 0)
                backlog, length = self.database.execute(BACKLOG_SQL, (progress,)).fetchone()
            except Exception:
                continue
            self.samples.append((time.monotonic_ns(), int(backlog), int(length)))

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        self.client.close()
        self.database.close()


def start_writers(deployment: Deployment, plan: Plan, keys: list[int]) -> list[subprocess.Popen]:
    """The writer processes, each ready to write once it reads the start time.

    Writer w owns keys[w::W] (so each counter has one writer and its values are that writer's
    count), and the slots w, w + W, ... of the common schedule."""
    period_ns = int(1e9 / plan.lag_rate)
    total = round((plan.lag_warmup_seconds + plan.lag_seconds) * plan.lag_rate)
    w_count = plan.lag_writers
    writers = []
    for w in range(w_count):
        argv = [
            sys.executable,
            "-m",
            "bench.lag_writer",
            "--keys",
            ",".join(map(str, keys[w::w_count])),
            "--count",
            str(len(range(w, total, w_count))),
            "--period-ns",
            str(period_ns * w_count),
            "--offset-ns",
            str(period_ns * w),
        ]
        with (deployment.directory / f"writer{w}.log").open("ab") as log:
            writers.append(
                subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env=deployment.env(),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    start_new_session=True,
                )
            )
    return writers


async def collect_writes(writers: list[subprocess.Popen], problems: list[str]) -> tuple[list[list], int]:
    """Every writer's records, once they are done, and how many of their writes failed."""
    records = []
    write_errors = 0
    for w, process in enumerate(writers):
        out, _ = await asyncio.to_thread(process.communicate, None, 120)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if process.returncode != 0 or not lines:
            raise Broken(f"lag: writer {w} exited with {process.returncode}: {out[-300:]}")
        data = json.loads(lines[-1])
        records += data["records"]
        write_errors += data["error_count"]
        if data["error_count"]:
            problems.append(f"writer {w}: {data['error_count']} writes failed: {data['errors'][:2]}")
    return records, write_errors


def analyse_lag(
    subscribers: list[tuple[int, Subscriber]], records: list[list], window: tuple[int, int]
) -> dict[str, Any]:
    """Match pushed values to writes, over the writes whose intended send time is in ``window``."""
    window0, window1 = window
    by_write = {(r[0], r[1]): r for r in records}
    in_window = [r for r in records if window0 <= r[2] < window1]
    window_set = {(r[0], r[1]) for r in in_window}
    lags: list[int] = []
    from_intended: list[int] = []
    pushed: set[tuple[int, int]] = set()
    pushes_total = out_of_order = unexpected = 0
    for key, s in subscribers:
        last_seen = -1
        for t, frame in s.receipts:
            for update in frame["updates"]:
                value = (update.get("value") or {}).get("value")
                record = by_write.get((key, value))
                if record is None:
                    unexpected += 1
                    continue
                pushes_total += 1
                if value <= last_seen:
                    out_of_order += 1
                last_seen = max(last_seen, value)
                if (key, value) in window_set:
                    pushed.add((key, value))
                    lags.append(t - record[4])
                    from_intended.append(t - record[2])
    achieved = achieved_rate(sorted(r[3] for r in in_window))
    return {
        "writes_total": len(records),
        "writes_in_window": len(in_window),
        "achieved_rate": round(achieved, 1) if achieved else None,
        "sent_late_ms": summary_ms([r[3] - r[2] for r in in_window]),
        "write_time_ms": summary_ms([r[5] - r[3] for r in in_window]),
        "pushed_in_window": len(pushed),
        "pushes_total": pushes_total,
        "coalesced": len(in_window) - len(pushed),
        "coalesced_share": round(1 - len(pushed) / len(in_window), 3) if in_window else None,
        "lag_ms": summary_ms(lags),
        "lag_from_intended_send_ms": summary_ms(from_intended),
        "out_of_order": out_of_order,
        "unexpected_values": unexpected,
    }


async def lag_case(deployment: Deployment, plan: Plan) -> dict[str, Any]:
    keys = [LAG_KEY_BASE + i for i in range(plan.lag_counters)]
    result: dict[str, Any] = {
        "counters": len(keys),
        "subscribers": len(keys),
        "target_rate": plan.lag_rate,
        "seconds": plan.lag_seconds,
        "warmup_seconds": plan.lag_warmup_seconds,
        "writers": plan.lag_writers,
        "writer": "direct ORM: Counter.objects.filter(key=k).update(value=F('value') + 1), autocommit",
        "problems": [],
    }
    control = ReactiveClient(deployment.a.ws_url, reconnect=False)
    subscribers: list[tuple[int, Subscriber]] = []
    writers: list[subprocess.Popen] = []
    sampler: BacklogSampler | None = None
    try:
        await control.connect()
        await asyncio.gather(*(control.action("benchapp.reset", {"key": k}, timeout=30) for k in keys))
        # One subscriber per counter, alternately on A and B.
        urls = [deployment.a.ws_url, deployment.b.ws_url]
        opened, errors = await open_subscribers([(urls[i % 2], key) for i, key in enumerate(keys)])
        subscribers = list(zip(keys, opened, strict=True))
        if errors:
            raise Broken(f"lag: {len(errors)} subscribers failed to connect/subscribe: {errors[0]}")

        writers = start_writers(deployment, plan, keys)
        for w, process in enumerate(writers):
            assert process.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 120)
            if line.strip() != "ready":
                raise Broken(f"lag: writer {w} did not start: {line.strip()[:300]}")

        for _, s in subscribers:
            s.receipts.clear()
        sampler = BacklogSampler(deployment)
        sampler.start()
        stats_client = deployment.redis()
        start = time.monotonic_ns() + 300_000_000
        for process in writers:
            assert process.stdin is not None
            process.stdin.write(f"{start}\n")
            process.stdin.flush()
        window0 = start + int(plan.lag_warmup_seconds * 1e9)
        window1 = window0 + int(plan.lag_seconds * 1e9)
        pids = {f"writer {w}": p.pid for w, p in enumerate(writers)}
        await asyncio.sleep(max(0, window0 - time.monotonic_ns()) / 1e9)
        cpu0, stats0 = deployment.cpu_snapshot(pids), commandstats(stats_client)
        await asyncio.sleep(max(0, window1 - time.monotonic_ns()) / 1e9)
        cpu1, stats1 = deployment.cpu_snapshot(pids), commandstats(stats_client)
        stats_client.close()
        cpu = cpu_shares(cpu0, cpu1)
        cpu["shares"]["writers"] = round(sum(cpu["shares"].pop(name) for name in pids), 3)
        cpu["seconds"]["writers"] = round(sum(cpu["seconds"].pop(name) for name in pids), 3)

        records, write_errors = await collect_writes(writers, result["problems"])
        final = {}
        for key, value, *_ in records:
            final[key] = max(final.get(key, 0), value)
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while time.monotonic() < deadline and any(s.last_value() != final.get(k, 0) for k, s in subscribers):
            await asyncio.sleep(0.05)
        drained_ns = time.monotonic_ns()
        sampler.stop()

        current = {}
        for key in keys:
            current[key] = (await control.query("benchapp.counter", {"key": key}, timeout=30))["value"]

        analysis = analyse_lag(subscribers, records, (window0, window1))
        lost = sum(1 for k, s in subscribers if s.last_value() != current[k] or not s.client.is_connected)
        wrong_final = sum(1 for k in keys if current[k] != final.get(k, 0))
        samples = [(t, b, n) for t, b, n in sampler.samples if window0 <= t < window1]
        backlog = [b for _, b, _ in samples]
        # One XTRIM of the requests stream per pass, with the progress (RedisBackend.save_progress).
        passes = stats1.get("cmdstat_xtrim", 0) - stats0.get("cmdstat_xtrim", 0)
        matches = stats1.get("cmdstat_evalsha", 0) - stats0.get("cmdstat_evalsha", 0)
        out_of_order, unexpected = analysis.pop("out_of_order"), analysis.pop("unexpected_values")
        result.update(analysis)
        result.update(
            {
                "backlog_records": {
                    "samples": len(backlog),
                    "p50": percentile(backlog, 50),
                    "p99": percentile(backlog, 99),
                    "max": max(backlog) if backlog else None,
                },
                "log_xlen_max": max((n for *_, n in samples), default=None),
                "worker_passes": passes,
                "records_per_pass": round(analysis["writes_in_window"] / passes, 2) if passes else None,
                "evalsha_calls_in_window": matches,
                "drain_seconds_after_last_write": round((drained_ns - max(r[5] for r in records)) / 1e9, 3)
                if records
                else None,
                "cpu": cpu,
                "lost_updates": lost,
                "out_of_order": out_of_order,
                "unexpected_values": unexpected,
                "write_errors": write_errors,
            }
        )
        if lost:
            result["problems"].append(
                f"lag: {lost} of {len(keys)} subscribers do not show their counter's final value"
            )
        if wrong_final:
            result["problems"].append(f"lag: {wrong_final} counters differ from the writers' final values")
        if out_of_order or unexpected:
            result["problems"].append(f"lag: {out_of_order} out-of-order and {unexpected} unexpected values")
        return result
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        for process in writers:
            if process.poll() is None:
                process.kill()
                process.wait()
        await close_all([control] + [s.client for _, s in subscribers])


LAG_COLUMNS = [
    "writes (rate target/achieved)",
    "counters = subscribers",
    "pushed (coalesced)",
    "lag p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "backlog p50 / max records",
    "worker passes (records/pass)",
    "lost",
]
LAG_CPU_COLUMNS = ["worker", "server A", "server B", "redis", "postgres", "writers", "load-gen", "other"]


def lag_rows(lag: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    if "lag_ms" not in lag:
        return [["FAILED: " + "; ".join(lag.get("problems", []))[:150]] + [""] * 9], [[""] * 8]
    lat, backlog = lag["lag_ms"], lag["backlog_records"]
    row = [
        f"{lag['writes_in_window']} in {lag['seconds']:g} s "
        f"({lag['target_rate']:g}/{number(lag['achieved_rate'])}/s)",
        str(lag["counters"]),
        f"{lag['pushed_in_window']} ({lag['coalesced']}, {lag['coalesced_share'] * 100:.0f}%)",
        number(lat["p50"], 2),
        number(lat["p90"], 2),
        number(lat["p99"], 2),
        number(lat["max"], 2),
        f"{backlog['p50']} / {backlog['max']}",
        f"{lag['worker_passes']} ({number(lag['records_per_pass'], 1)})",
        str(lag["lost_updates"]),
    ]
    shares = lag["cpu"]["shares"]
    return [row], [[share(shares.get(name)) for name in LAG_CPU_COLUMNS]]
