"""The load generators of a run, as the benchmark drives them: several ``bench.loadgen``
processes for the receiving sockets and pollers, and one more for the writes.

Socket ``i`` of a run lives in receiver process ``i % receivers``; a command for some sockets is
split between the processes that hold them and sent to all at once. The processes' CPU time is
read from ``/proc`` (``load_cpu_seconds``): it is printed beside every figure, so a saturated load
generator shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
from pathlib import Path
from typing import Any

import orjson

from bench import Broken
from harness import procfs
from harness.processes import ROOT, django_env

READY_TIMEOUT_S = 60.0
STREAM_LIMIT = 1 << 30  # a collect's reply holds every delivery of a window


class LoadProcess:
    """One ``python -m bench.loadgen`` and its pending commands."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.ids = itertools.count(1)
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, name: str, workdir: Path) -> LoadProcess:
        log = workdir / f"{name}.log"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.loadgen",
            cwd=ROOT,
            env=django_env("bench.settings"),  # PYTHONPATH; no Django is set up
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log.open("wb"),
            limit=STREAM_LIMIT,
            start_new_session=True,
        )
        self = cls(name, process, log)
        self.ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[0] = self.ready
        await asyncio.wait_for(self.ready, READY_TIMEOUT_S)
        return self

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = orjson.loads(line)
            future = self.pending.pop(message.get("id", 0), None)
            if future is None or future.done():
                continue
            if "error" in message:
                future.set_exception(Broken(f"load generator {self.name}: {message['error']}"))
            else:
                future.set_result(message.get("result", message))
        error = Broken(f"load generator {self.name} exited:\n{self.tail()}")
        for future in self.pending.values():
            if not future.done():
                future.set_exception(error)
        self.pending.clear()

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        return ""

    async def ask(self, cmd: str, **args: Any) -> Any:
        if self.process.returncode is not None:
            raise Broken(f"load generator {self.name} is not running:\n{self.tail()}")
        request_id = next(self.ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        assert self.process.stdin is not None
        self.process.stdin.write(orjson.dumps({"id": request_id, "cmd": cmd, **args}) + b"\n")
        await self.process.stdin.drain()
        return await future

    @property
    def pid(self) -> int:
        return self.process.pid

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                assert self.process.stdin is not None
                self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        self.reader.cancel()


class LoadGenerators:
    """``receivers`` processes holding sockets and pollers, and one writer process."""

    def __init__(self, receivers: list[LoadProcess], writer: LoadProcess) -> None:
        self.receivers = receivers
        self.writer = writer

    @classmethod
    async def start(cls, count: int, workdir: Path) -> LoadGenerators:
        processes = await asyncio.gather(
            *(LoadProcess.start(f"loadgen-{i}", workdir) for i in range(count)),
            LoadProcess.start("loadgen-writer", workdir),
        )
        return cls(list(processes[:-1]), processes[-1])

    @property
    def processes(self) -> list[LoadProcess]:
        return [*self.receivers, self.writer]

    def owner(self, index: int) -> LoadProcess:
        return self.receivers[index % len(self.receivers)]

    def split(self, items: list[dict[str, Any]]) -> list[tuple[LoadProcess, list[dict[str, Any]]]]:
        """``items`` (each with an ``index``) grouped by the process holding that socket."""
        groups: dict[int, list[dict[str, Any]]] = {}
        for item in items:
            groups.setdefault(item["index"] % len(self.receivers), []).append(item)
        return [(self.receivers[i], group) for i, group in sorted(groups.items())]

    async def each(self, cmd: str, **args: Any) -> list[Any]:
        """The same command to every receiver process at once."""
        return await asyncio.gather(*(p.ask(cmd, **args) for p in self.receivers))

    async def open(
        self, sockets: list[dict[str, Any]], concurrency: int, timeout: float = 600
    ) -> dict[str, Any]:
        """Open WebSockets (``[{"index", "kind", "host", "port", "path"}]``), ``concurrency`` at
        once in all, spread over the processes."""
        per_process = max(1, concurrency // len(self.receivers))
        answers = await asyncio.wait_for(
            asyncio.gather(
                *(p.ask("open", sockets=group, concurrency=per_process) for p, group in self.split(sockets))
            ),
            timeout,
        )
        return merge_counts(answers)

    async def subscribe(self, subscriptions: list[dict[str, Any]], timeout: float = 120) -> dict[str, Any]:
        answers = await asyncio.gather(
            *(
                p.ask("subscribe", subscriptions=group, timeout=timeout)
                for p, group in self.split(subscriptions)
            )
        )
        return merge_counts(answers)

    async def poll(self, pollers: list[dict[str, Any]], host: str, port: int, period_ms: float) -> None:
        answers = await asyncio.gather(
            *(
                p.ask(
                    "poll",
                    pollers=group,
                    host=host,
                    port=port,
                    period_ms=period_ms,
                    path="/reactive/api/query",
                )
                for p, group in self.split(pollers)
            )
        )
        errors = [e for a in answers for e in a["errors"]]
        if errors:
            raise Broken(f"pollers failed to start: {errors[0]}")

    async def mark(self) -> None:
        await self.each("mark")

    async def quiet(self, quiet_ms: float, timeout: float) -> bool:
        """Until no socket received anything for ``quiet_ms``; False if ``timeout`` came first."""
        answers = await self.each("quiet", quiet_ms=quiet_ms, timeout=timeout)
        return not any(a["timed_out"] for a in answers)

    async def settled(self, final: dict[int, int], quiet_ms: float, timeout: float) -> bool:
        """Until every socket has its counter's ``final`` value and nothing arrives for
        ``quiet_ms``; False if ``timeout`` came first."""
        answers = await self.each(
            "settled", final={str(k): v for k, v in final.items()}, quiet_ms=quiet_ms, timeout=timeout
        )
        return not any(a["timed_out"] for a in answers)

    async def collect(self, updates: bool = False) -> dict[str, Any]:
        """Every process's window, merged."""
        answers = await self.each("collect", updates=updates)
        merged: dict[str, Any] = {
            "deliveries": [d for a in answers for d in a["deliveries"]],
            "updates": [u for a in answers for u in (a["updates"] or [])] if updates else None,
            "latest": [row for a in answers for row in a["latest"]],
            "closed": [c for a in answers for c in a["closed"]][:10],
            "errors": [e for a in answers for e in a["errors"]][:10],
        }
        for name in ("bytes_in", "bytes_out", "messages", "polls", "late_polls", "closed_count"):
            merged[name] = sum(a[name] for a in answers)
        return merged

    async def close(self, indices: list[int] | None = None) -> None:
        """Close these sockets and pollers (every one by default) and stop polling."""
        if indices is None:
            await self.each("close")
            return
        groups = self.split([{"index": i} for i in indices])
        await asyncio.gather(*(p.ask("close", indices=[g["index"] for g in group]) for p, group in groups))

    def load_cpu_seconds(self) -> float:
        """CPU time of every load-generator process (receivers and writer)."""
        return sum(procfs.cpu_seconds(p.pid) for p in self.processes)

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.processes), return_exceptions=True)


def merge_counts(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the counts of per-process answers; keep the first errors and the slowest time."""
    merged: dict[str, Any] = {"errors": [e for a in answers for e in a.get("errors", [])][:10]}
    for answer in answers:
        for name, value in answer.items():
            if name == "seconds":
                merged[name] = max(merged.get(name, 0), value)
            elif isinstance(value, int) and name != "errors":
                merged[name] = merged.get(name, 0) + value
    return merged
