"""Numbers from samples: nearest-rank percentiles, latency summaries, send rates, CPU shares, and
the spread of a figure over repeats."""

from __future__ import annotations

import math
import statistics
from typing import Any


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary_ms(values_ns: list[int]) -> dict[str, float | None]:
    """Count, p50, p90, p95, p99 and max of nanosecond durations, in milliseconds."""
    ms = sorted(v / 1e6 for v in values_ns)
    n = len(ms)

    def rank(p: float) -> float | None:
        return ms[max(0, math.ceil(p / 100 * n) - 1)] if n else None

    return {
        "count": n,
        "p50": rank(50),
        "p90": rank(90),
        "p95": rank(95),
        "p99": rank(99),
        "max": ms[-1] if ms else None,
    }


def achieved_rate(sent_ns: list[int]) -> float | None:
    """Sends per second between the first and the last of ``sent_ns`` (in send order)."""
    if len(sent_ns) < 2:
        return None
    return (len(sent_ns) - 1) / ((sent_ns[-1] - sent_ns[0]) / 1e9)


def cpu_shares(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """CPU seconds and shares of one core between two snapshots of CPU times.

    A snapshot holds each process's CPU seconds, ``_machine`` (every core's busy seconds) and
    ``_wall`` (monotonic seconds); ``other`` is the machine's busy time beyond the processes.
    """
    wall = after["_wall"] - before["_wall"]
    seconds = {name: after[name] - before[name] for name in before if not name.startswith("_")}
    busy = after["_machine"] - before["_machine"]
    shares = {name: round(value / wall, 3) for name, value in seconds.items()}
    shares["other"] = round(max(0.0, busy - sum(seconds.values())) / wall, 3)
    return {
        "wall_seconds": round(wall, 3),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "shares": shares,
    }


def spread(values: list[float | None]) -> dict[str, float | None] | None:
    """Median, min and max of a figure over repeats (None values, from failed repeats, left out)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {
        "median": statistics.median(present),
        "min": min(present),
        "max": max(present),
        "n": len(present),
    }
