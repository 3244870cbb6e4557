"""How much each scenario does: the full run (``make bench``) and the ``--quick`` smoke test
(``make bench-quick``, in CI: every scenario and system, tiny counts, one repeat)."""

from __future__ import annotations

from dataclasses import dataclass

SystemOnServer = tuple[str, str]  # (system name, ASGI server)


@dataclass(frozen=True)
class Plan:
    name: str
    repeats: int  # measured windows per cell; the spread is over these
    loadgen_processes: int  # receiving processes (plus one writer)
    drain_timeout_s: float  # after the last write, how long pushes may keep arriving
    # 1. Latency: N subscribers over up to `latency_instances` instances, writes at each rate.
    latency_systems: tuple[SystemOnServer, ...]
    latency_subscribers: tuple[int, ...]
    latency_instances: int
    latency_rates: tuple[float, ...]
    latency_window_s: tuple[float, ...]  # per rate
    # 2. Fan-out (and 5. footprint): N subscribers of one instance.
    fanout_systems: tuple[SystemOnServer, ...]
    fanout_subscribers: tuple[int, ...]
    fanout_writes: tuple[int, ...]  # per N
    fanout_rates: tuple[float, ...]  # per N, writes/s
    redis_distinct_subscriptions: int  # Redis memory per subscription of a distinct instance
    # 3. Write throughput: closed loop, with 0 and with `writes_subscriptions` live subscriptions.
    writes_connections: int
    writes_seconds: float
    writes_sockets: int
    writes_subscriptions_per_socket: int
    sustained_subscriptions: int  # distinct instances, one socket each
    sustained_rates: tuple[float, ...]
    sustained_window_s: float
    # 4. Precision: the chat demo's queries and mutations.
    chat_channels: int
    chat_messages: int  # per channel, before the window
    chat_sockets: int
    chat_writes: int
    chat_rate: float
    # Tracking overhead on ORM writes, in-process (bench.overhead): per operation,
    # `overhead_slices` triplets of slices (plain, unwatched, watched) of `overhead_slice` ops each.
    overhead_slice: int
    overhead_slices: int
    # The database alone (database_floor): `overhead_repeats` times `overhead_iterations` inserts.
    overhead_iterations: int
    overhead_repeats: int
    # The same round under callgrind (instructions per operation), if valgrind is here (0: not run).
    overhead_count_iterations: int
    # Profile: py-spy on the server during a fan-out to each N (none: not run).
    profile_subscribers: tuple[int, ...]
    profile_rates: tuple[float, ...]  # per N, writes/s
    profile_seconds: float
    # Redis diagnostics: commands per write (MONITOR windows), and lag under writes from other processes.
    rt_writes: int  # writes per window
    rt_spacing_s: float
    rt_idle_s: float
    lag_counters: int  # one subscriber each
    lag_rate: float  # writes/s, all writers together
    lag_seconds: float  # measured window
    lag_warmup_seconds: float
    lag_writers: int
    # Writes from another server process and from a plain Django process (embedded default).
    external_subscribers: int  # per case
    external_writes: int
    external_rate: float
    external_warmup: int


EVERY_SYSTEM: tuple[SystemOnServer, ...] = (
    ("reactive", "daphne"),
    ("reactive", "uvicorn"),
    ("reactive-redis", "daphne"),
    ("reactive-redis", "uvicorn"),
    ("tables", "daphne"),
    ("dcrf", "daphne"),
    ("dcrf", "uvicorn"),
    ("poll-1s", "daphne"),
    ("poll-100ms", "daphne"),
)
# Polling's fan-out is what its latency cells show (every poller alike): not run again.
FANOUT_SYSTEMS: tuple[SystemOnServer, ...] = (
    ("reactive", "daphne"),
    ("reactive", "uvicorn"),
    ("reactive-redis", "daphne"),
    ("reactive-redis", "uvicorn"),
    ("dcrf", "daphne"),
    ("dcrf", "uvicorn"),
)
# The quick plan's systems: every kind once (DCRF on Daphne and polling every second take the same
# code paths as DCRF on uvicorn and polling every 100 ms; the Redis deployment on uvicorn, the
# same as on Daphne but for the ASGI server, is full plan only: starting another Redis, Postgres
# and worker takes about 40 s on the loaded 2-core machine, a third of the quick plan's 2 minutes).
QUICK_SYSTEMS: tuple[SystemOnServer, ...] = (
    ("reactive", "daphne"),
    ("reactive", "uvicorn"),
    ("reactive-redis", "daphne"),
    ("tables", "daphne"),
    ("dcrf", "uvicorn"),
    ("poll-100ms", "daphne"),
)

PLANS = {
    "full": Plan(
        name="full",
        repeats=3,
        loadgen_processes=4,
        drain_timeout_s=15.0,
        latency_systems=EVERY_SYSTEM,
        latency_subscribers=(1, 100, 1000, 5000),
        latency_instances=100,
        latency_rates=(10.0, 200.0),
        latency_window_s=(2.0, 1.5),
        fanout_systems=FANOUT_SYSTEMS,
        fanout_subscribers=(100, 1000, 10000),
        fanout_writes=(10, 8, 4),
        fanout_rates=(5.0, 2.0, 0.5),
        redis_distinct_subscriptions=1000,
        writes_connections=8,
        writes_seconds=2.0,
        writes_sockets=1000,
        writes_subscriptions_per_socket=10,
        sustained_subscriptions=1000,
        sustained_rates=(100.0, 250.0, 500.0, 1000.0, 1500.0),
        sustained_window_s=2.0,
        chat_channels=10,
        chat_messages=30,
        chat_sockets=100,
        chat_writes=150,
        chat_rate=50.0,
        # Short slices of one kind, many of them: a slice's ratio to the plain slice beside it is
        # taken within tens of ms, before the shared machine's speed drifts. Rounds of 300 of every
        # kind were too coarse: unwatched and watched creates (the same work) came out at 1.48x
        # and 1.31x in one run; slices of 30, 150 triplets, agreed within 0.01x.
        overhead_slice=30,
        overhead_slices=150,
        overhead_iterations=300,
        overhead_repeats=35,
        overhead_count_iterations=1000,
        profile_subscribers=(1000, 10000),
        profile_rates=(2.0, 0.5),  # as the fan-out's: each write's fan-out done before the next
        profile_seconds=20.0,
        rt_writes=50,
        rt_spacing_s=0.1,
        rt_idle_s=3.0,
        lag_counters=100,
        lag_rate=500.0,
        lag_seconds=5.0,
        lag_warmup_seconds=1.0,
        lag_writers=2,
        external_subscribers=1,
        external_writes=300,
        external_rate=50.0,
        external_warmup=10,
    ),
    "quick": Plan(
        name="quick",
        repeats=1,
        loadgen_processes=2,
        drain_timeout_s=8.0,
        latency_systems=QUICK_SYSTEMS,
        latency_subscribers=(10,),
        latency_instances=5,
        latency_rates=(20.0,),
        latency_window_s=(0.5,),
        fanout_systems=(("reactive", "daphne"), ("reactive-redis", "daphne"), ("dcrf", "uvicorn")),
        fanout_subscribers=(20,),
        fanout_writes=(3,),
        fanout_rates=(5.0,),
        redis_distinct_subscriptions=20,
        writes_connections=2,
        writes_seconds=0.25,
        writes_sockets=10,
        writes_subscriptions_per_socket=2,
        sustained_subscriptions=10,
        sustained_rates=(50.0,),
        sustained_window_s=0.5,
        chat_channels=3,
        chat_messages=5,
        chat_sockets=6,
        chat_writes=15,
        chat_rate=30.0,
        overhead_slice=5,
        overhead_slices=3,
        overhead_iterations=100,
        overhead_repeats=1,
        overhead_count_iterations=0,
        profile_subscribers=(),
        profile_rates=(),
        profile_seconds=0.0,
        rt_writes=3,
        rt_spacing_s=0.05,
        rt_idle_s=0.3,
        lag_counters=10,
        lag_rate=50.0,
        lag_seconds=0.5,
        lag_warmup_seconds=0.2,
        lag_writers=2,
        external_subscribers=1,
        external_writes=10,
        external_rate=20.0,
        external_warmup=2,
    ),
}
