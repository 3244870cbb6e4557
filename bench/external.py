"""Commit -> subscriber latency on the embedded default, by where the write comes from.

    python -m bench.external [--writes 300] [--rate 50] [--quick]

One subscriber socket on Daphne server A (``bench.settings``: the embedded backend, SQLite in WAL
mode) watches ``benchapp.counter(key)``; each scenario bumps its own counter, open loop:

- ``own process``: ``benchapp.bump`` on server A (the server's own commits wake its tail at once);
- ``another server``: ``benchapp.bump`` on server B, a second Daphne process on the same file;
- ``writer process``: a plain Django process (``python -m bench.external --writer``, ORM in
  ``transaction.atomic()``), as a management command or a job writes.

A and B hear of other processes' commits through ``PRAGMA data_version``, polled every
``CHANGE_LOG_POLL_SECONDS``. The latency of a write is the first receipt, on the subscriber, of a
value at least the write's, minus ``t0``: ``time.monotonic_ns()`` taken inside the transaction
just before COMMIT (Linux's CLOCK_MONOTONIC is system-wide, so both processes' stamps compare).
Commit order is ``t0`` order (SQLite holds the write lock from the UPDATE to the COMMIT), so the
k-th smallest ``t0`` made the value ``warm-up + k``. Prints a table and the JSON of the figures;
asserts nothing about time, and exits 1 only when something is broken (a write failed, a value
never arrived).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import Broken
from bench.servers import embedded_env, listening, start_embedded_server
from bench.stats import summary_ms
from bench.tables import number
from bench.workload import make_subscriber, run_writes, wait_all_at, warm_up
from harness.ports import free_port
from harness.processes import ROOT, Process, daphne_command

DELIVERY_TIMEOUT_S = 30.0
SCENARIOS = ("own process", "another server", "writer process")


def write_from_a_process(count: int, period_ns: int, key: int) -> list[int]:
    """The writer process's loop (``--writer``): ``count`` bumps on an open-loop schedule that
    starts when the start time arrives on stdin; returns each commit's ``t0``."""
    import django

    django.setup()
    from django.db import transaction
    from django.db.models import F

    from bench.benchapp.models import Counter

    print("ready", flush=True)
    start = int(sys.stdin.readline())
    stamps = []
    for i in range(count):
        delay = start + i * period_ns - time.monotonic_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        with transaction.atomic():
            Counter.objects.filter(key=key).update(value=F("value") + 1)
            stamps.append(time.monotonic_ns())
    return stamps


def latencies(t0s: list[int], receipts: list[tuple[int, Any]], sub_id: int, base: int) -> list[int]:
    """Per write, first receipt of a value at least its own, minus its t0 (ns)."""
    arrivals: list[tuple[int, int]] = []  # (value, receipt ns), in receipt order
    for received, frame in receipts:
        for update in frame.get("updates", ()):
            if update.get("id") == sub_id and isinstance(update.get("value"), dict):
                arrivals.append((update["value"]["value"], received))
    result = []
    for k, t0 in enumerate(sorted(t0s), start=1):
        first = next((at for value, at in arrivals if value is not None and value >= base + k), None)
        if first is None:
            raise Broken(f"the value {base + k} never reached the subscriber")
        result.append(first - t0)
    return result


async def scenario(name: str, servers: dict[str, Process], env: dict[str, str], key: int, plan: dict) -> dict:
    from reactive.client import ReactiveClient

    a = servers["a"]
    subscriber = make_subscriber(a.ws_url)
    writer_server = servers["b"] if name == "another server" else a
    writer = ReactiveClient(writer_server.ws_url)
    await writer.connect()
    await subscriber.client.connect()
    try:
        await writer.action("benchapp.reset", {"key": key})
        subscriber.sub = subscriber.client.subscribe("benchapp.counter", {"key": key})
        await subscriber.sub.first(timeout=60)
        await warm_up(writer, [subscriber], key, plan["warmup"], plan["rate"])
        base = plan["warmup"]
        if name == "writer process":
            t0s = await asyncio.to_thread(run_writer_process, env, key, plan)
        else:
            records = await run_writes(writer, key, plan["writes"], plan["rate"])
            failed = [r.error for r in records if r.error]
            if failed:
                raise Broken(f"{name}: {len(failed)} writes failed: {failed[0]}")
            t0s = [r.t0_ns for r in records]
        final = base + plan["writes"]
        if await wait_all_at([subscriber], final, DELIVERY_TIMEOUT_S) >= DELIVERY_TIMEOUT_S:
            raise Broken(f"{name}: the subscriber never saw {final}")
        return summary_ms(latencies(t0s, subscriber.receipts, subscriber.sub.id, base))
    finally:
        await writer.close()
        await subscriber.client.close()


def run_writer_process(env: dict[str, str], key: int, plan: dict) -> list[int]:
    period_ns = int(1e9 / plan["rate"])
    argv = [sys.executable, "-m", "bench.external", "--writer", "--key", str(key)]
    argv += ["--writes", str(plan["writes"]), "--period-ns", str(period_ns)]
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdin is not None and process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise Broken("the writer process did not start")
    process.stdin.write(f"{time.monotonic_ns() + 20_000_000}\n")
    process.stdin.flush()
    output, _ = process.communicate(timeout=600)
    if process.returncode != 0:
        raise Broken(f"the writer process exited with {process.returncode}")
    return json.loads(output)


async def measure(plan: dict, workdir: Path) -> dict[str, Any]:
    a = start_embedded_server(workdir)
    servers = {"a": a}
    try:
        listening(a)
        env = embedded_env("bench.settings", workdir / "db.sqlite3")
        port = free_port()
        servers["b"] = Process.start("daphne-b", daphne_command(port), env, workdir / "daphne-b.log", port)
        listening(servers["b"])
        results = {}
        for key, name in enumerate(SCENARIOS, start=1):
            print(f"  {name}: {plan['writes']} writes at {plan['rate']:g}/s ...", flush=True)
            results[name] = await scenario(name, servers, env, key, plan)
        return results
    finally:
        for server in servers.values():
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.external", description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="writes per second, open loop")
    parser.add_argument("--quick", action="store_true", help="20 writes per scenario")
    parser.add_argument("--writer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--key", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--period-ns", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.writer:
        print(json.dumps(write_from_a_process(options.writes, options.period_ns, options.key)), flush=True)
        return 0
    plan = {"writes": 20 if options.quick else options.writes, "rate": options.rate, "warmup": 5}
    workdir = Path(tempfile.mkdtemp(prefix="bench-external-"))
    try:
        results = asyncio.run(measure(plan, workdir))
    except Broken as exc:
        print(f"PROBLEMS: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ncommit -> subscriber latency (ms), {plan['writes']} writes at {plan['rate']:g}/s each")
    print(f"{'written from':>16}  {'p50':>7}  {'p90':>7}  {'p99':>7}  {'max':>7}")
    for name, figures in results.items():
        row = [number(figures[p], 2) for p in ("p50", "p90", "p99", "max")]
        print(f"{name:>16}  " + "  ".join(f"{cell:>7}" for cell in row))
    print(json.dumps({"plan": plan, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
