"""A load-generator process: ``python -m bench.loadgen``, driven by ``bench/generators.py``.

It holds receiving sockets (reactive or DCRF WebSockets), HTTP pollers and writers, and answers
one JSON line on stdout per JSON line on stdin (``{"id", "cmd", ...}`` -> ``{"id", "result"}`` or
``{"id", "error"}``); commands run concurrently. Several of these processes share the sockets
of a run, so no single Python process serialises the receipt of a fan-out.

While a window records (``mark`` .. ``collect``) receipts cost one timestamped append each
(``wire.WebSocketClient``); frames are decoded at ``collect``. Outside windows a background
task parses once a second, which answers the servers' keep-alive pings.

Every value the benchmark pushes or polls is a counter row ``{"key", "value", "stamp",
"intended"}``: a delivery is ``[receipt ns, key, value, stamp, intended, socket]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.wire import HttpConnection, WebSocketClient, open_http, open_websocket

monotonic_ns = time.monotonic_ns
BACKGROUND_PARSE_SECONDS = 1.0
WRITE_TIMEOUT_S = 30.0  # an open-loop write not answered by then failed (a saturated baseline)
# The counter value in a pushed row, as our server (orjson) and DCRF (json) write it.
VALUE_IN_FRAME = re.compile(rb'"value": ?(\d+)[,}]')

Delivery = list[int]  # [receipt ns, key, value, stamp, intended, socket index]


def counter_of(value: Any) -> tuple[int, int, int, int] | None:
    """(key, value, stamp, intended) of a pushed counter row, else None."""
    if isinstance(value, dict) and "stamp" in value and value.get("value") is not None:
        return value["key"], value["value"], value["stamp"], value["intended"]
    return None


def answer_router() -> tuple[dict[int, asyncio.Future[tuple[int, dict]]], Callable[[int, bytes], None]]:
    """A socket's pending requests (request id -> future) and the frame callback that resolves
    each with its answer's receipt time and frame."""
    answers: dict[int, asyncio.Future[tuple[int, dict]]] = {}

    def on_message(t: int, payload: bytes) -> None:
        frame = orjson.loads(payload)
        future = answers.pop(frame.get("request_id"), None)
        if future is not None and not future.done():
            future.set_result((t, frame))

    return answers, on_message


@dataclass
class Receiver:
    """A receiving WebSocket: what it subscribed to, which replies it waits for, what it saw."""

    index: int
    kind: str  # "reactive" or "dcrf"
    socket: WebSocketClient
    keys: list[int] = field(default_factory=list)  # the counters it follows
    waiting: set[int] = field(default_factory=set)  # subscription ids (reactive) / request ids (dcrf)
    latest: dict[int, int] = field(default_factory=dict)  # counter key -> last value seen
    errors: list[str] = field(default_factory=list)
    bytes_at_mark: int = 0
    messages: int = 0

    def decode(self, deliveries: list[Delivery] | None, updates: list[list[int]] | None) -> None:
        """Decode the parsed messages: counter deliveries (kept if ``deliveries`` is a list),
        ``[socket, subscription id, version]`` per reactive update (kept if ``updates`` is)."""
        messages, self.socket.messages = self.socket.messages, []
        self.messages += len(messages)
        for t, payload in messages:
            try:
                frame = orjson.loads(payload)
            except orjson.JSONDecodeError:
                self.errors.append(f"not JSON: {payload[:80]!r}")
                continue
            if self.kind == "reactive":
                kind = frame.get("type")
                if kind == "transition":
                    version = frame["version"]
                    for update in frame["updates"]:
                        sub_id = update["id"]
                        self.waiting.discard(sub_id)
                        if "error" in update:
                            self.errors.append(f"subscription {sub_id}: {update['error']}")
                            continue
                        if updates is not None:
                            updates.append([self.index, sub_id, version])
                        self._counter(t, update.get("value"), deliveries)
                elif kind == "error":
                    self.errors.append(str(frame.get("error")))
            else:
                if "response_status" in frame:
                    self.waiting.discard(frame.get("request_id"))
                    if frame["response_status"] >= 400:
                        self.errors.append(str(frame.get("errors")))
                else:
                    self._counter(t, frame, deliveries)

    def last_value_received(self) -> int | None:
        """The value of the last counter row received, from the raw bytes of the last chunks (no
        decode: cheap enough to ask while pushes arrive); None if nothing came since the last
        parse."""
        tail = b"".join(data for _, data in self.socket.chunks[-2:])
        found = VALUE_IN_FRAME.findall(tail)
        return int(found[-1]) if found else None

    def _counter(self, t: int, value: Any, deliveries: list[Delivery] | None) -> None:
        row = counter_of(value)
        if row is None:
            return
        key, count, stamp, intended = row
        if count > self.latest.get(key, -1):
            self.latest[key] = count
        if deliveries is not None:
            deliveries.append([t, key, count, stamp, intended, self.index])


@dataclass
class Poller:
    """A client polling the HTTP query endpoint on a fixed period, on its own keep-alive
    connection; a poll that returns a new counter value is a delivery."""

    index: int
    connection: HttpConnection
    path: str
    body: bytes
    responses: list[tuple[int, int, bytes]] = field(default_factory=list)
    latest: dict[int, int] = field(default_factory=dict)
    polls: int = 0
    late: int = 0  # polls sent after their slot because the previous answer came late
    errors: list[str] = field(default_factory=list)
    bytes_at_mark: tuple[int, int] = (0, 0)

    async def run(self, start_ns: int, period_ns: int, stop: asyncio.Event) -> None:
        slot = start_ns
        while not stop.is_set():
            delay = slot - monotonic_ns()
            if delay > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay / 1e9)
                if stop.is_set():
                    return
            elif delay < -period_ns // 10:
                self.late += 1
            try:
                self.responses.append(await self.connection.request("POST", self.path, self.body))
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return
            self.polls += 1
            slot = max(slot + period_ns, monotonic_ns())

    def decode(self, deliveries: list[Delivery] | None) -> None:
        responses, self.responses = self.responses, []
        for t, status, body in responses:
            if status != 200:
                self.errors.append(f"HTTP {status}: {body[:100]!r}")
                continue
            row = counter_of(orjson.loads(body).get("value"))
            if row is None:
                continue
            key, count, stamp, intended = row
            if count > self.latest.get(key, -1):
                self.latest[key] = count
                if deliveries is not None:
                    deliveries.append([t, key, count, stamp, intended, self.index])


class HttpPool:
    """Keep-alive connections for open-loop writes: an idle one, or a new one up to ``limit``."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: list[HttpConnection] = []
        self.count = 0
        self.freed = asyncio.Condition()

    async def warm(self, count: int) -> None:
        for _ in range(count):
            self.idle.append(await open_http(self.host, self.port))
            self.count += 1

    async def acquire(self) -> HttpConnection:
        async with self.freed:
            while True:
                while self.idle:
                    connection = self.idle.pop()
                    if not connection.closed:
                        return connection
                    self.count -= 1
                if self.count < self.limit:
                    self.count += 1
                    break
                await self.freed.wait()
        try:
            return await open_http(self.host, self.port)
        except BaseException:
            self.count -= 1
            raise

    async def release(self, connection: HttpConnection) -> None:
        async with self.freed:
            if connection.closed:
                self.count -= 1
            else:
                self.idle.append(connection)
            self.freed.notify()

    def close(self) -> None:
        for connection in self.idle:
            connection.close()


class LoadGenerator:
    def __init__(self) -> None:
        self.receivers: dict[int, Receiver] = {}
        self.pollers: dict[int, Poller] = {}
        self.poll_stop = asyncio.Event()
        self.poll_tasks: list[asyncio.Task] = []
        self.recording = False
        self.background = asyncio.get_running_loop().create_task(self._parse_in_background())

    async def _parse_in_background(self) -> None:
        while True:
            await asyncio.sleep(BACKGROUND_PARSE_SECONDS)
            if not self.recording:
                self._digest(None, None)

    def _digest(self, deliveries: list[Delivery] | None, updates: list[list[int]] | None) -> None:
        for receiver in self.receivers.values():
            receiver.socket.parse()
            receiver.decode(deliveries, updates)
        for poller in self.pollers.values():
            poller.decode(deliveries)

    # Commands ------------------------------------------------------------------------------

    async def cmd_open(self, sockets: list[dict[str, Any]], concurrency: int = 12) -> dict[str, Any]:
        """Open WebSockets: ``[{"index", "kind", "host", "port", "path"}]``, ``concurrency`` at a time."""
        semaphore = asyncio.Semaphore(concurrency)
        errors: list[str] = []
        started = time.monotonic()

        async def open_one(spec: dict[str, Any]) -> None:
            async with semaphore:
                for attempt in range(3):
                    try:
                        socket = await open_websocket(spec["host"], spec["port"], spec["path"])
                        self.receivers[spec["index"]] = Receiver(spec["index"], spec["kind"], socket)
                        return
                    except (TimeoutError, OSError) as exc:
                        if attempt == 2:
                            errors.append(f"{type(exc).__name__}: {exc}")
                        await asyncio.sleep(0.2 * (attempt + 1))

        await asyncio.gather(*(open_one(spec) for spec in sockets))
        return {
            "opened": len(sockets) - len(errors),
            "errors": errors[:10],
            "error_count": len(errors),
            "seconds": round(time.monotonic() - started, 3),
        }

    async def cmd_subscribe(
        self, subscriptions: list[dict[str, Any]], timeout: float = 60, concurrency: int = 200
    ) -> dict[str, Any]:
        """Send each socket's frames (``[{"index", "frames", "wait"}]``: the subscription or request
        ids whose first answer to wait for), then wait for every answer."""
        started = time.monotonic()
        for position, spec in enumerate(subscriptions):
            receiver = self.receivers[spec["index"]]
            receiver.waiting.update(spec["wait"])
            receiver.keys += spec.get("keys", [])
            for text in spec["frames"]:
                receiver.socket.send_text(text)
            if position % concurrency == concurrency - 1:
                await asyncio.sleep(0)  # let the server's answers in
        targets = [self.receivers[spec["index"]] for spec in subscriptions]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._digest(None, None)
            if not any(r.waiting for r in targets) or all(r.socket.closed for r in targets if r.waiting):
                break
            await asyncio.sleep(0.02)
        self._digest(None, None)
        pending = [r for r in targets if r.waiting]
        errors = [e for r in targets for e in r.errors[:1]]
        return {
            "ready": len(targets) - len(pending),
            "pending": len(pending),
            "closed": sum(r.socket.closed for r in targets),
            "errors": errors[:10],
            "error_count": sum(len(r.errors) for r in targets),
            "seconds": round(time.monotonic() - started, 3),
        }

    async def cmd_poll(
        self, pollers: list[dict[str, Any]], host: str, port: int, period_ms: float, path: str
    ) -> dict[str, Any]:
        """Start pollers (``[{"index", "body"}]``), spread evenly over the period; returns once each
        has its first answer."""
        period_ns = int(period_ms * 1e6)
        self.poll_stop.clear()
        start = monotonic_ns() + 50_000_000
        for position, spec in enumerate(pollers):
            connection = await open_http(host, port)
            poller = Poller(spec["index"], connection, path, orjson.dumps(spec["body"]))
            self.pollers[spec["index"]] = poller
            offset = period_ns * position // max(1, len(pollers))
            self.poll_tasks.append(asyncio.create_task(poller.run(start + offset, period_ns, self.poll_stop)))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
            not p.latest and not p.errors for p in self.pollers.values()
        ):
            await asyncio.sleep(0.05)
            self._digest(None, None)
        return {
            "pollers": len(self.pollers),
            "errors": [e for p in self.pollers.values() for e in p.errors][:10],
        }

    async def cmd_stop_poll(self) -> dict[str, Any]:
        self.poll_stop.set()
        await asyncio.gather(*self.poll_tasks, return_exceptions=True)
        self.poll_tasks.clear()
        return {"stopped": len(self.pollers)}

    async def cmd_mark(self) -> dict[str, Any]:
        """Start a measured window: what arrived before it is decoded and dropped."""
        self._digest(None, None)
        for receiver in self.receivers.values():
            receiver.bytes_at_mark = receiver.socket.bytes_in
            receiver.messages = 0
        for poller in self.pollers.values():
            poller.bytes_at_mark = (poller.connection.bytes_in, poller.connection.bytes_out)
            poller.polls = 0
            poller.late = 0
        self.recording = True
        return {"marked": monotonic_ns()}

    async def cmd_quiet(self, quiet_ms: float, timeout: float) -> dict[str, Any]:
        """Wait until nothing arrived for ``quiet_ms`` (or ``timeout`` s); pollers never go quiet."""
        deadline = time.monotonic() + timeout
        while True:
            last = max((r.socket.last_arrival() for r in self.receivers.values()), default=0)
            idle_ms = (monotonic_ns() - last) / 1e6
            if idle_ms >= quiet_ms or time.monotonic() >= deadline:
                return {"last_arrival": last, "timed_out": idle_ms < quiet_ms}
            await asyncio.sleep(min(quiet_ms, max(1.0, quiet_ms - idle_ms)) / 1000)

    async def cmd_settled(self, final: dict[str, int], quiet_ms: float, timeout: float) -> dict[str, Any]:
        """Wait until every socket following one counter has received its ``final`` value
        (``{key: value}``), and nothing arrived for ``quiet_ms``; or ``timeout`` s. Sockets
        following several counters count as settled once quiet."""
        deadline = time.monotonic() + timeout
        final_values = {int(key): value for key, value in final.items()}
        pending = [r for r in self.receivers.values() if len(r.keys) == 1 and r.keys[0] in final_values]
        while True:
            quiet = await self.cmd_quiet(quiet_ms, max(0.0, deadline - time.monotonic()))
            pending = [
                r
                for r in pending
                if max(r.last_value_received() or -1, r.latest.get(r.keys[0], -1)) < final_values[r.keys[0]]
            ]
            if (not pending and not quiet["timed_out"]) or time.monotonic() >= deadline:
                return {"unsettled": len(pending), "timed_out": time.monotonic() >= deadline}
            await asyncio.sleep(quiet_ms / 4000)

    async def cmd_collect(self, updates: bool = False) -> dict[str, Any]:
        """End the window: its deliveries, bytes and messages; each socket's latest values."""
        self.recording = False
        deliveries: list[Delivery] = []
        update_list: list[list[int]] | None = [] if updates else None
        self._digest(deliveries, update_list)
        receivers = self.receivers.values()
        pollers = self.pollers.values()
        return {
            "deliveries": deliveries,
            "updates": update_list,
            "bytes_in": sum(r.socket.bytes_in - r.bytes_at_mark for r in receivers)
            + sum(p.connection.bytes_in - p.bytes_at_mark[0] for p in pollers),
            "bytes_out": sum(p.connection.bytes_out - p.bytes_at_mark[1] for p in pollers),
            "messages": sum(r.messages for r in receivers),
            "polls": sum(p.polls for p in pollers),
            "late_polls": sum(p.late for p in pollers),
            "latest": [[r.index, key, value] for r in receivers for key, value in r.latest.items()]
            + [[p.index, key, value] for p in pollers for key, value in p.latest.items()],
            "closed": [[r.index, r.socket.close_reason] for r in receivers if r.socket.closed][:10],
            "closed_count": sum(r.socket.closed for r in receivers),
            "errors": [e for r in receivers for e in r.errors[:1]][:10]
            + [e for p in pollers for e in p.errors[:1]][:10],
        }

    async def cmd_write_open(
        self,
        host: str,
        port: int,
        keys: list[int],
        rate: float,
        count: int,
        max_connections: int = 64,
        requests: list[list[Any]] | None = None,
        mutations: int = 0,
    ) -> dict[str, Any]:
        """``count`` writes ``POST /bench/bump?key=K&intended=NS`` on an open-loop schedule
        (``rate``/s): each goes at its slot, answered or not. Returns ``[intended, sent, done,
        status, key, value, stamp]`` per write (done, value, stamp 0 on failure) and the errors.
        ``requests`` (``[path, JSON body]`` or ``[path, JSON body, headers]`` each) replaces the
        bumps: any POSTs on the schedule (key, value and stamp are then 0). ``mutations`` > 0: the
        same write as the mutation ``benchapp.increment`` over that many WebSockets, round robin
        (status 200 when ok)."""
        if mutations:
            return await self._mutations_open(host, port, keys, rate, count, mutations)
        pool = HttpPool(host, port, max_connections)
        await pool.warm(min(8, max_connections))
        period_ns = int(1e9 / rate)
        start = monotonic_ns() + 20_000_000
        records: list[list[int]] = []
        errors: list[str] = []
        tasks = []

        async def one(record: list[int], key: int, request: list[Any] | None) -> None:
            connection = await pool.acquire()
            try:
                headers = None
                if request is None:
                    path, payload = f"/bench/bump?key={key}&intended={record[0]}", b""
                else:
                    path, payload = request[0], orjson.dumps(request[1])
                    headers = request[2] if len(request) > 2 else None
                t, status, body = await connection.request(
                    "POST", path, payload, timeout=WRITE_TIMEOUT_S, headers=headers
                )
                record[2], record[3] = t, status
                if status != 200:
                    errors.append(f"HTTP {status}: {body[:200]!r}")
                elif request is None:
                    answer = orjson.loads(body)
                    record[5], record[6] = answer["value"], answer["stamp"]
                elif not orjson.loads(body).get("ok", True):
                    record[3] = 0
                    errors.append(f"not ok: {body[:200]!r}")
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                connection.close()
            finally:
                await pool.release(connection)

        for i in range(count):
            intended = start + i * period_ns
            delay = intended - monotonic_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            key = keys[i % len(keys)] if keys else 0
            record = [intended, monotonic_ns(), 0, 0, key, 0, 0]
            records.append(record)
            tasks.append(asyncio.create_task(one(record, key, requests[i] if requests else None)))
        await asyncio.gather(*tasks)
        pool.close()
        return {"records": records, "errors": errors[:10], "error_count": len(errors)}

    async def _mutations_open(
        self, host: str, port: int, keys: list[int], rate: float, count: int, connections: int
    ) -> dict[str, Any]:
        answers, on_message = answer_router()
        sockets = [await open_websocket(host, port, "/reactive/ws/", on_message) for _ in range(connections)]
        period_ns = int(1e9 / rate)
        start = monotonic_ns() + 20_000_000
        records: list[list[int]] = []
        errors: list[str] = []
        tasks = []

        async def one(record: list[int], request_id: int, socket: WebSocketClient) -> None:
            future = asyncio.get_running_loop().create_future()
            answers[request_id] = future
            args = {"key": record[4], "intended": record[0]}
            frame = {"type": "mutation", "request_id": request_id, "name": "benchapp.increment", "args": args}
            socket.send_text(orjson.dumps(frame))
            try:
                t, frame = await asyncio.wait_for(future, WRITE_TIMEOUT_S)
            except TimeoutError:
                answers.pop(request_id, None)
                errors.append("TimeoutError: no mutation_result")
                return
            record[2] = t
            if frame.get("ok"):
                record[3], record[5], record[6] = 200, frame["value"]["value"], frame["value"]["stamp"]
            else:
                errors.append(str(frame.get("error")))

        try:
            for i in range(count):
                intended = start + i * period_ns
                delay = intended - monotonic_ns()
                if delay > 0:
                    await asyncio.sleep(delay / 1e9)
                record = [intended, monotonic_ns(), 0, 0, keys[i % len(keys)], 0, 0]
                records.append(record)
                tasks.append(asyncio.create_task(one(record, i + 1, sockets[i % connections])))
            await asyncio.gather(*tasks)
        finally:
            for socket in sockets:
                socket.close()
        return {"records": records, "errors": errors[:10], "error_count": len(errors)}

    async def cmd_write_closed(
        self, mode: str, host: str, port: int, keys: list[int], connections: int, seconds: float
    ) -> dict[str, Any]:
        """Closed loop: ``connections`` clients each write, wait for the answer, write again, for
        ``seconds``. ``mode``: ``view`` (``POST /bench/bump``), ``http-mutation`` (``POST
        /reactive/api/mutation``) or ``ws-mutation`` (a ``mutation`` frame on a WebSocket).
        Returns the writes completed, the errors and each write's round trip (µs)."""
        stop_at = monotonic_ns() + int(seconds * 1e9)
        round_trips: list[int] = []
        errors: list[str] = []
        counter = iter(range(1 << 62))

        async def http_client(client: int) -> None:
            connection = await open_http(host, port)
            try:
                while monotonic_ns() < stop_at:
                    key = keys[next(counter) % len(keys)]
                    sent = monotonic_ns()
                    if mode == "view":
                        t, status, body = await connection.request(
                            "POST", f"/bench/bump?key={key}&intended={sent}"
                        )
                    else:
                        payload = orjson.dumps(
                            {"name": "benchapp.increment", "args": {"key": key, "intended": sent}}
                        )
                        t, status, body = await connection.request("POST", "/reactive/api/mutation", payload)
                    if status != 200:
                        errors.append(f"HTTP {status}: {body[:200]!r}")
                        return
                    round_trips.append((t - sent) // 1000)
            finally:
                connection.close()

        async def ws_client(client: int) -> None:
            answers, on_message = answer_router()
            socket = await open_websocket(host, port, "/reactive/ws/", on_message)
            try:
                request_id = 0
                while monotonic_ns() < stop_at:
                    request_id += 1
                    key = keys[next(counter) % len(keys)]
                    sent = monotonic_ns()
                    future = asyncio.get_running_loop().create_future()
                    answers[request_id] = future
                    socket.send_text(
                        orjson.dumps(
                            {
                                "type": "mutation",
                                "request_id": request_id,
                                "name": "benchapp.increment",
                                "args": {"key": key, "intended": sent},
                            }
                        )
                    )
                    t, frame = await asyncio.wait_for(future, 60)
                    if not frame.get("ok"):
                        errors.append(str(frame.get("error")))
                        return
                    round_trips.append((t - sent) // 1000)
            finally:
                socket.close()

        client = ws_client if mode == "ws-mutation" else http_client
        started = monotonic_ns()
        results = await asyncio.gather(*(client(i) for i in range(connections)), return_exceptions=True)
        errors += [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
        return {
            "completed": len(round_trips),
            "seconds": (monotonic_ns() - started) / 1e9,
            "round_trips_us": round_trips,
            "errors": errors[:10],
            "error_count": len(errors),
        }

    async def cmd_close(self, indices: list[int] | None = None) -> dict[str, Any]:
        """Close the sockets and pollers ``indices`` (all of them by default)."""
        if indices is None:
            await self.cmd_stop_poll()
        chosen = set(self.receivers) | set(self.pollers) if indices is None else set(indices)
        for index in chosen:
            receiver = self.receivers.pop(index, None)
            if receiver is not None:
                receiver.socket.close()
            poller = self.pollers.pop(index, None)
            if poller is not None:
                poller.connection.close()
        await asyncio.sleep(0.1)
        return {"closed": len(chosen)}

    async def cmd_cpu(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"cpu_seconds": usage.ru_utime + usage.ru_stime}


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(message) + b"\n")
    sys.stdout.buffer.flush()


async def serve() -> None:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes | None] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin.buffer:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read_stdin, daemon=True).start()
    generator = LoadGenerator()
    tasks: set[asyncio.Task] = set()

    async def run(request: dict[str, Any]) -> None:
        request_id = request.pop("id")
        try:
            handler = getattr(generator, "cmd_" + request.pop("cmd"))
            _reply({"id": request_id, "result": await handler(**request)})
        except Exception as exc:
            _reply(
                {"id": request_id, "error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-1500:]}"}
            )

    _reply({"ready": True})
    while (line := await lines.get()) is not None:
        task = asyncio.create_task(run(orjson.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await generator.cmd_close()


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(serve())


if __name__ == "__main__":
    main()
