"""How much each part does: the full run, and the ``--quick`` smoke test of a few seconds a part."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FanoutPlan:
    subscribers: int
    writes: int
    rate: float  # writes per second, open loop


@dataclass(frozen=True)
class Plan:
    name: str
    fanout: tuple[FanoutPlan, ...]  # embedded latency: N subscribers of one query instance
    redis_floor: FanoutPlan  # Redis latency: 1 subscriber, on B
    redis_fanout: FanoutPlan  # Redis latency: N subscribers of one instance, half on A, half on B
    warmup: int  # writes before each latency measurement, discarded
    overhead_iterations: int  # operations per overhead round
    overhead_repeats: int
    rt_writes: int  # round trips: writes per window
    rt_spacing_s: float
    rt_idle_s: float
    lag_counters: int  # lag: counters, one subscriber each
    lag_rate: float  # writes/s, all writers together
    lag_seconds: float  # measured window
    lag_warmup_seconds: float
    lag_writers: int


PLANS = {
    "full": Plan(
        "full",
        (FanoutPlan(1, 300, 50.0), FanoutPlan(100, 200, 20.0), FanoutPlan(1000, 60, 4.0)),
        redis_floor=FanoutPlan(1, 300, 50.0),
        redis_fanout=FanoutPlan(1000, 60, 4.0),
        warmup=20,
        overhead_iterations=3000,
        overhead_repeats=5,
        rt_writes=50,
        rt_spacing_s=0.1,
        rt_idle_s=3.0,
        lag_counters=100,
        lag_rate=500.0,
        lag_seconds=10.0,
        lag_warmup_seconds=2.0,
        lag_writers=2,
    ),
    "quick": Plan(
        "quick",
        (FanoutPlan(1, 20, 50.0), FanoutPlan(20, 10, 20.0)),
        redis_floor=FanoutPlan(1, 20, 50.0),
        redis_fanout=FanoutPlan(20, 10, 20.0),
        warmup=3,
        overhead_iterations=200,
        overhead_repeats=2,
        rt_writes=5,
        rt_spacing_s=0.1,
        rt_idle_s=1.0,
        lag_counters=10,
        lag_rate=100.0,
        lag_seconds=1.0,
        lag_warmup_seconds=0.5,
        lag_writers=2,
    ),
}
