"""The load: subscriber sockets, writes on an open-loop schedule, the warm-up, and which write
each pushed value came from.

A subscriber stamps ``time.monotonic_ns()`` first thing in its frame callback; ``benchapp.bump``
returns the same clock read just before COMMIT. Both are Linux's system-wide ``CLOCK_MONOTONIC``
(one host), so they compare directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from dataclasses import dataclass, field
from typing import Any

from bench import Broken
from bench.stats import achieved_rate, summary_ms
from reactive.client import ReactiveClient
from reactive.client.testing import InstrumentedClient

CONNECT_CONCURRENCY = 50  # under Twisted's default listen backlog (50)
DELIVERY_TIMEOUT_S = 30.0


def raise_fd_limit(wanted: int = 65536) -> tuple[int, int]:
    """Room for a thousand sockets (subprocesses started afterwards inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


@dataclass
class Subscriber:
    client: ReactiveClient
    receipts: list[tuple[int, Any]] = field(default_factory=list)  # (receipt ns, frame)
    sub: Any = None

    def last_value(self) -> int | None:
        value = self.sub.value if self.sub is not None else None
        return value.get("value") if isinstance(value, dict) else None


def make_subscriber(url: str) -> Subscriber:
    client = InstrumentedClient(url, reconnect=False, connect_timeout=60.0)
    subscriber = Subscriber(client)
    receipts = subscriber.receipts
    monotonic_ns = time.monotonic_ns

    def on_frame(frame: dict[str, Any]) -> None:
        t = monotonic_ns()  # first thing: the receipt stamp
        if frame["type"] == "transition":
            receipts.append((t, frame))

    client.on_frame(on_frame)
    return subscriber


async def open_subscribers(targets: list[tuple[str, int]]) -> tuple[list[Subscriber], list[str]]:
    """One socket per (url, counter key), each subscribed to ``benchapp.counter(key)``; at most
    CONNECT_CONCURRENCY connect at once. Returns the subscribers, in order, and the errors."""
    semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)
    subscribers = [make_subscriber(url) for url, _ in targets]
    errors: list[str] = []

    async def open_one(subscriber: Subscriber, key: int) -> None:
        async with semaphore:
            try:
                await subscriber.client.connect()
                subscriber.sub = subscriber.client.subscribe("benchapp.counter", {"key": key})
                await subscriber.sub.first(timeout=60)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(open_one(s, key) for s, (_, key) in zip(subscribers, targets, strict=True)))
    return subscribers, errors


def check_connected(result: dict[str, Any], errors: list[str], n: int) -> None:
    """Raise Broken (and note the errors in ``result``) when a subscriber failed to connect."""
    if errors:
        result["connect_errors"] = {"count": len(errors), "first": sorted(set(errors))[:10]}
        raise Broken(f"N={n}: {len(errors)} of {n} subscribers failed to connect/subscribe: {errors[0]}")


async def close_all(clients: list[ReactiveClient]) -> None:
    semaphore = asyncio.Semaphore(200)

    async def close_one(client: ReactiveClient) -> None:
        async with semaphore:
            with contextlib.suppress(Exception):
                await client.close()

    await asyncio.gather(*(close_one(c) for c in clients))


@dataclass
class WriteRecord:
    intended_ns: int
    sent_ns: int
    t0_ns: int | None = None
    done_ns: int | None = None
    error: str | None = None


async def run_writes(writer: ReactiveClient, key: int, count: int, rate: float) -> list[WriteRecord]:
    """``count`` bumps on an open-loop schedule: each goes out at its slot, answered or not."""
    period_ns = int(1e9 / rate)
    start = time.monotonic_ns() + 20_000_000
    records: list[WriteRecord] = []
    tasks = []

    async def one(record: WriteRecord) -> None:
        try:
            record.t0_ns = await writer.action("benchapp.bump", {"key": key}, timeout=60)
            record.done_ns = time.monotonic_ns()
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"

    for i in range(count):
        intended = start + i * period_ns
        delay = intended - time.monotonic_ns()
        if delay > 0:
            await asyncio.sleep(delay / 1e9)
        record = WriteRecord(intended, time.monotonic_ns())
        records.append(record)
        tasks.append(asyncio.create_task(one(record)))
    await asyncio.gather(*tasks)
    return records


async def wait_all_at(subscribers: list[Subscriber], value: int, timeout: float) -> float:
    """Wait until every subscription shows ``value``; returns the time waited (s)."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if all(s.last_value() == value for s in subscribers):
            break
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def warm_up(
    writer: ReactiveClient, subscribers: list[Subscriber], key: int, count: int, rate: float
) -> None:
    """``count`` writes on the measured schedule, until every subscriber shows the last one;
    then their receipts are cleared: the warm-up is discarded."""
    n = len(subscribers)
    warm = await run_writes(writer, key, count, rate)
    failed = [w.error for w in warm if w.error]
    if failed:
        raise Broken(f"N={n}: {len(failed)} warm-up writes failed: {failed[0]}")
    if await wait_all_at(subscribers, count, DELIVERY_TIMEOUT_S) >= DELIVERY_TIMEOUT_S:
        behind = sum(s.last_value() != count for s in subscribers)
        raise Broken(f"N={n}: {behind} subscribers never saw the warm-up's last value {count}")
    for s in subscribers:
        s.receipts.clear()


def analyse_fanout(
    groups: dict[str, list[Subscriber]], writes: list[WriteRecord], warmup: int, current: int
) -> dict[str, Any]:
    """Match each pushed value to its write and summarise, overall and per group of subscribers.

    Commit order is t0 order (the database holds the row's write lock from the UPDATE to the
    COMMIT), so the k-th smallest t0 produced the value warm-up + k."""
    done = sorted((w for w in writes if w.t0_ns is not None), key=lambda w: w.t0_ns)
    by_value = {warmup + i + 1: w for i, w in enumerate(done)}
    latencies: list[int] = []
    from_intended: list[int] = []
    by_group: dict[str, list[int]] = {name: [] for name in groups}
    per_value: dict[int, list[int]] = {v: [] for v in by_value}
    coalesced = out_of_order = unexpected = lost = 0
    for name, subscribers in groups.items():
        for s in subscribers:
            seen_last = warmup
            seen: set[int] = set()
            for t, frame in s.receipts:
                for update in frame["updates"]:
                    value = (update.get("value") or {}).get("value")
                    write = by_value.get(value)
                    if write is None:
                        unexpected += 1
                        continue
                    if value <= seen_last:
                        out_of_order += 1
                    seen_last = max(seen_last, value)
                    seen.add(value)
                    latencies.append(t - write.t0_ns)
                    by_group[name].append(t - write.t0_ns)
                    from_intended.append(t - write.intended_ns)
                    per_value[value].append(t - write.t0_ns)
            coalesced += len(by_value) - len(seen)
            if s.last_value() != current or not s.client.is_connected:
                lost += 1
    rtt = [w.done_ns - w.sent_ns for w in writes if w.done_ns is not None]
    achieved = achieved_rate([w.sent_ns for w in writes])
    return {
        "achieved_rate": round(achieved, 2) if achieved else None,
        "deliveries": len(latencies),
        "latency_ms": summary_ms(latencies),
        "latency_ms_by_server": {name: summary_ms(values) for name, values in by_group.items()},
        "latency_from_intended_send_ms": summary_ms(from_intended),
        "first_receiver_ms": summary_ms([min(v) for v in per_value.values() if v]),
        "last_receiver_ms": summary_ms([max(v) for v in per_value.values() if v]),
        "bump_round_trip_ms": summary_ms(rtt),
        "coalesced": coalesced,
        "out_of_order": out_of_order,
        "unexpected_values": unexpected,
        "lost_updates": lost,
    }


def fanout_problems(
    writes: list[WriteRecord], analysis: dict[str, Any], current: int, final: int, n: int
) -> list[str]:
    """What is broken after a measured phase: failed writes, a wrong counter, lost updates."""
    problems = []
    failed = [w for w in writes if w.error]
    if failed:
        problems.append(f"{len(failed)} writes failed, first: {failed[0].error}")
    if current != final:
        problems.append(f"counter is {current}, expected {final} after {len(writes)} writes")
    if analysis["lost_updates"]:
        problems.append(
            f"{analysis['lost_updates']} of {n} subscribers do not show the final value {current} "
            "(lost update)"
        )
    if analysis["out_of_order"] or analysis["unexpected_values"]:
        problems.append(
            f"{analysis['out_of_order']} out-of-order and {analysis['unexpected_values']} unexpected values"
        )
    return problems
