"""The whole run: every scenario of a plan on every system it names, one after another, into one
report.

Each (scenario, system, ASGI server) gets fresh servers and fresh load-generator processes, and
stops them before the next one starts, so the systems never share the machine with each other's
load. A system that breaks (cannot start, cannot subscribe, loses an update) is recorded where
it broke; for ``reactive`` that is a failure of the run (``report["problems"]``), for a baseline
a note (``report["notes"]``): a baseline's limits are results, ours are bugs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import Broken
from bench.external import external_cases
from bench.fanout import distinct_footprint, fanout_cells
from bench.generators import LoadGenerators
from bench.lag import lag_cases
from bench.latency import latency_cells
from bench.overhead import count_instructions, run_overhead
from bench.plans import Plan
from bench.population import Population
from bench.precision import precision_of
from bench.profile import profile_fanout
from bench.roundtrips import round_trip_cases
from bench.servers import Databases
from bench.systems import SYSTEMS, Running, prime_redis, running
from bench.throughput import WRITES_SERVERS, sustained_rates, sustained_runs, write_phases

# Systems whose failures fail the run: our engine, on either backend (table-level is our engine too).
OURS = {"reactive", "reactive-redis", "tables"}
PRIMER_INDEX = 90_000_000  # the Redis deployment's priming sockets
SCENARIOS = (
    "latency", "fanout", "external", "writes", "precision", "tracking", "profile", "roundtrips", "lag",
)  # fmt: skip
PER_SYSTEM = ("fanout", "latency", "external", "roundtrips", "lag")  # system by system, in this order
EMBEDDED = ("reactive", "daphne")
REDIS = ("reactive-redis", "daphne")


class Suite:
    def __init__(
        self, plan: Plan, workdir: Path, results: Path, report: dict[str, Any], systems: set[str] | None
    ) -> None:
        self.plan = plan
        self.workdir = workdir
        self.results = results
        self.report = report
        self.only = systems
        self.databases = Databases(workdir)

    def wanted(self, pairs: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
        return [(name, server) for name, server in pairs if self.only is None or name in self.only]

    # Bookkeeping ---------------------------------------------------------------------------

    def failed(self, system: str, where: str, message: str) -> None:
        entry = f"{where} on {system}: {message}"
        (self.report["problems"] if system.split("/")[0] in OURS else self.report["notes"]).append(entry)
        print(f"    {'FAILED' if system.split('/')[0] in OURS else 'note'}: {entry[:400]}", flush=True)

    def stopped(self, deployed: Running, where: str) -> None:
        for problem in deployed.problems:
            if "died" in problem:
                self.failed(deployed.name, where, problem)
            else:
                self.report["notes"].append(f"{where} on {deployed.name}: {problem[:1500]}")

    @contextlib.contextmanager
    def system(self, name: str, server: str, where: str) -> Iterator[Running | None]:
        """The system running (None if it could not start: recorded)."""
        print(f"  {where}: {SYSTEMS[name].label} on {server} ...", flush=True)
        started = time.monotonic()
        deployed: Running | None = None
        try:
            with running(SYSTEMS[name], server, self.workdir, self.databases) as deployed:
                if deployed.versions:
                    self.report["machine"].setdefault("redis_backend", deployed.versions)
                yield deployed
        except Broken as exc:
            self.failed(f"{name}/{server}", where, str(exc))
        finally:
            if deployed is not None:
                self.stopped(deployed, where)
            print(f"    ({time.monotonic() - started:.0f} s)", flush=True)

    @contextlib.contextmanager
    def systems(self, pairs: list[tuple[str, str]], where: str) -> Iterator[dict[str, Running] | None]:
        """Several (system, ASGI server) started at once (each start is mostly waiting), by
        ``Running.name`` (``"reactive/daphne"``); None if one could not start."""
        with contextlib.ExitStack() as stack:
            managers = {f"{name}/{server}": self.system(name, server, where) for name, server in pairs}
            with ThreadPoolExecutor(len(managers)) as pool:
                entering = {key: pool.submit(manager.__enter__) for key, manager in managers.items()}
            up: dict[str, Running | None] = {}
            for key, future in entering.items():
                try:
                    up[key] = future.result()
                except BaseException:
                    continue
                stack.push(managers[key].__exit__)
            for future in entering.values():
                future.result()  # re-raise what failed to start in an unexpected way
            yield None if any(deployed is None for deployed in up.values()) else up  # type: ignore[misc]

    def on(self, deployed: Running, body: Callable[[LoadGenerators], Awaitable[Any]], where: str) -> Any:
        """Run ``body`` with fresh load generators against ``deployed`` (primed if Redis)."""

        async def main() -> Any:
            generators = await LoadGenerators.start(self.plan.loadgen_processes, self.workdir)
            try:
                if deployed.system.flavour == "redis":
                    await prime_redis(deployed, generators, PRIMER_INDEX)
                return await body(generators)
            finally:
                await generators.stop()

        try:
            return asyncio.run(main())
        except Broken as exc:
            self.failed(deployed.name, where, str(exc))
            return None

    def population(self, deployed: Running, generators: LoadGenerators) -> Population:
        return Population(deployed, generators, strict=deployed.system.name in OURS)

    def check_cells(self, where: str, cells: list[dict[str, Any]]) -> None:
        """Losses and failed writes: problems for our systems, notes for the baselines."""
        for cell in cells:
            for window in cell.get("windows", []):
                name = f"{cell['system']}/{cell['server']}"
                if window["lost"]:
                    self.failed(name, where, f"N={cell['subscribers']}: {window['lost']} subscriptions "
                                "never got their counter's final value")  # fmt: skip
                if window["write_errors"]:
                    self.failed(
                        name,
                        where,
                        f"N={cell['subscribers']}: {window['write_errors']} writes failed: "
                        f"{window['write_error_sample']}",
                    )
                if window["closed_sockets"]:
                    self.failed(
                        name,
                        where,
                        f"N={cell['subscribers']}: {window['closed_sockets']} sockets closed: "
                        f"{window.get('closed_reasons')}",
                    )

    # Scenarios ---------------------------------------------------------------------------

    def per_system(self, scenarios: list[str]) -> None:
        """Fan-out, latency and the Redis diagnostics, system by system, on one deployment per
        system: fan-out first, on the fresh server, since it reads the server's memory growth."""
        wanted = {
            "latency": self.wanted(self.plan.latency_systems),
            "fanout": self.wanted(self.plan.fanout_systems),
            "roundtrips": self.wanted((REDIS,)),
            "lag": self.wanted((REDIS,)),
            "external": self.wanted((EMBEDDED,)),
        }
        wanted = {scenario: pairs if scenario in scenarios else [] for scenario, pairs in wanted.items()}
        pairs = list(dict.fromkeys(pair for scenario in PER_SYSTEM for pair in wanted[scenario]))
        for name, server in pairs:
            self.on_system(
                name, server, [scenario for scenario in PER_SYSTEM if (name, server) in wanted[scenario]]
            )

    def on_system(self, name: str, server: str, group: list[str]) -> None:
        where = " + ".join(group)
        with self.system(name, server, where) as deployed:
            if deployed is None:
                return

            async def body(generators: LoadGenerators) -> Any:
                population = self.population(deployed, generators)
                results: dict[str, Any] = {}
                for scenario in group:
                    if scenario == "latency":
                        results["latency"] = await latency_cells(population, self.plan)
                    elif scenario == "fanout":
                        results["fanout"] = await fanout_cells(population, self.plan)
                        if deployed.system.flavour == "redis":
                            await population.close()
                            results["distinct"] = await distinct_footprint(
                                population, self.plan.redis_distinct_subscriptions
                            )
                    elif scenario == "external":
                        with (self.workdir / "external-writers.log").open("ab") as log:
                            results["external"] = await external_cases(
                                population, self.plan, self.databases, log
                            )
                    elif scenario == "roundtrips":
                        results["roundtrips"] = await round_trip_cases(population, self.plan)
                    elif scenario == "lag":
                        with (self.workdir / "lag-writers.log").open("ab") as log:
                            results["lag"] = await lag_cases(population, self.plan, deployed.env, log)
                    await population.close()
                return results

            results = self.on(deployed, body, where) or {}
        if "latency" in results:
            self.report["latency"] += results["latency"]
            self.check_cells("latency", results["latency"])
        if "fanout" in results:
            self.report["fanout"] += results["fanout"]
            self.check_cells("fan-out", results["fanout"])
        if results.get("distinct"):
            self.report["redis_distinct"] = results["distinct"]
        if "external" in results:
            self.report["external"] = results["external"]
            self.check_cells(
                "external writes",
                [
                    {"system": name, "server": server, "subscribers": case, "windows": figures["windows"]}
                    for case, figures in results["external"]["cases"].items()
                ],
            )
        if "roundtrips" in results:
            self.report["roundtrips"] = results["roundtrips"]
            for problem in results["roundtrips"].get("problems", []):
                self.failed(f"{name}/{server}", "round trips", problem)
        if "lag" in results:
            lag = results["lag"]
            self.report["lag"] = lag
            self.check_cells(
                "lag",
                [
                    {
                        "system": name,
                        "server": server,
                        "subscribers": lag["counters"],
                        "windows": lag["windows"],
                    }
                ],
            )

    def writes(self) -> None:
        names = [n for n in ("plain", "reactive", "dcrf", "tables") if self.only is None or n in self.only]
        if "reactive" not in names or "plain" not in names:
            return
        servers = WRITES_SERVERS
        print(
            "  writes: plain Django and reactive (Daphne, uvicorn), DCRF, table-level (Daphne), "
            "side by side ...",
            flush=True,
        )
        started = time.monotonic()
        pairs = [(name, server) for name in ("plain", "reactive") for server in servers]
        with self.systems([*pairs, ("dcrf", "daphne"), ("tables", "daphne")], "writes") as systems:
            if systems is None:
                return

            async def body(generators: LoadGenerators) -> Any:
                result = {"phases": await write_phases(systems, generators, self.plan, servers)}
                for server in servers:
                    population = self.population(systems[f"reactive/{server}"], generators)
                    key = "sustained" if server == "daphne" else f"sustained_{server}"
                    result[key] = await sustained_rates(population, self.plan)
                    await population.close()
                return result

            result = self.on(systems["reactive/daphne"], body, "writes")
            if result:
                self.report["writes"] = result
                for phase in result["phases"].values():
                    for label, row in phase.items():
                        if label.startswith("_"):
                            continue
                        if row["errors"]:
                            sample = [r["errors"] for r in row["runs"]][:1]
                            self.failed(
                                f"{row['system']}/{row['server']}",
                                "writes",
                                f"{label}: {row['errors']} errors: {sample}",
                            )
                for server, sustained in sustained_runs(result):
                    windows = [w for step in sustained["steps"] for w in step["windows"]]
                    cell = {"system": "reactive", "server": server, "subscribers": sustained["subscriptions"]}
                    self.check_cells("writes (sustained)", [{**cell, "windows": windows}])
        print(f"  writes done ({time.monotonic() - started:.0f} s)", flush=True)

    def precision(self) -> None:
        names = [name for name in ("reactive", "tables") if self.only is None or name in self.only]
        if not names:
            return
        with self.systems([(name, "daphne") for name in names], "precision") as systems:
            if systems is None:
                return

            async def body(generators: LoadGenerators) -> Any:
                return {
                    deployed.system.name: await precision_of(
                        deployed, generators, self.plan, offset * 1_000_000
                    )
                    for offset, deployed in enumerate(systems.values())
                }

            results = self.on(systems[f"{names[0]}/daphne"], body, "precision") or {}
            for name, result in results.items():
                self.report["precision"][name] = result
                for window in result["windows"]:
                    if window["write_errors"]:
                        self.failed(f"{name}/daphne", "precision", f"{window['write_errors']} writes failed: "
                                    f"{window['write_error_sample']}")  # fmt: skip

    def tracking(self) -> None:
        if self.only is not None and "reactive" not in self.only:
            return
        print(
            f"  tracking overhead (ORM, in-process): {self.plan.overhead_slices} triplets of slices "
            f"of {self.plan.overhead_slice} ops, per operation ...",
            flush=True,
        )
        try:
            self.report["tracking"] = run_overhead(self.plan, self.workdir)
        except Broken as exc:
            self.failed("reactive/none", "tracking overhead", str(exc))
            return
        iterations = self.plan.overhead_count_iterations
        if not iterations or os.environ.get("DATABASE_URL"):
            return  # Postgres: the server's share of a write is in another process
        if shutil.which("valgrind") is None:
            print("  instructions per write: not counted (valgrind is not installed)", flush=True)
            return
        print(f"  instructions per write (callgrind): {iterations} ops ...", flush=True)
        try:
            self.report["tracking"]["instructions"] = count_instructions(iterations, self.workdir)
        except Broken as exc:
            self.failed("reactive/none", "tracking overhead, instructions", str(exc))

    def profile(self) -> None:
        if not self.plan.profile_subscribers or (self.only is not None and "reactive" not in self.only):
            return
        self.report["profile"] = []
        for server in ("daphne", "uvicorn"):
            for n, rate in zip(self.plan.profile_subscribers, self.plan.profile_rates, strict=True):
                with self.system("reactive", server, f"profile, N={n:,}") as deployed:
                    if deployed is None:
                        continue

                    async def body(generators: LoadGenerators, deployed: Running = deployed, n: int = n,
                                   rate: float = rate) -> Any:  # fmt: skip
                        return await profile_fanout(
                            self.population(deployed, generators), self.plan, self.results, n, rate
                        )

                    result = self.on(deployed, body, f"profile, N={n:,}")
                    if result:
                        self.report["profile"].append(result)

    def run(self, scenarios: list[str]) -> None:
        began = time.monotonic()
        self.per_system(scenarios)
        self.report["seconds"]["per system"] = round(time.monotonic() - began, 1)
        for scenario in ("writes", "precision", "tracking", "profile"):
            if scenario in scenarios:
                began = time.monotonic()
                getattr(self, scenario)()
                self.report["seconds"][scenario] = round(time.monotonic() - began, 1)
