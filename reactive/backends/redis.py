"""The Redis backend: many server processes, one worker, one truth.

- The change log is a Redis stream, appended after the outermost commit by whichever process
  committed (web, admin, shell, management command): one Lua call allocates the version and
  appends the record.
- The read-set index lives in Redis (``reactive/lua/register.lua``, ``match.lua``): one round
  trip to register an instance's read set, one to match a change record.
- Hubs send their subscribe and release requests to a second stream; the worker (``manage.py
  reactive_worker``, holding a lease) reads both streams, runs the invalidator, and sends each
  server process one message per batch through the channel layer (channels_redis), numbered so
  a process that misses one resyncs from the instances' latest results stored in Redis.
- Each server process heartbeats; the worker releases the instances of a process that stops.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import orjson
import redis

from ..changes import ChangeRecord, RowChange, RowImage
from ..index import entries_of
from ..readsets import ReadSet
from ..settings import reactive_settings
from .base import Backend, Batch, ChangeLog, DropHub, Ensure, ReadSetIndex, Release, Request

logger = logging.getLogger("reactive.redis")

PREFIX = "reactive:"
VERSION = PREFIX + "version"
LOG = PREFIX + "log"
REQUESTS = PREFIX + "requests"
PROGRESS = PREFIX + "progress"  # hash: version, requests (the worker's position in both streams)
LEASE = PREFIX + "lease"
EPOCH = PREFIX + "epoch"  # the leading worker's epoch: gone if Redis lost its data
HUBS = PREFIX + "hubs"  # sorted set: hub id -> heartbeat deadline (unix seconds)
INSTANCE = PREFIX + "instance:"  # hash per live instance, for a new worker after a failover
INSTANCE_IDS = PREFIX + "live"  # set of live instance ids

HEARTBEAT_SECONDS = 2.0
HUB_TIMEOUT_SECONDS = 10.0
LEASE_MS = 5000
REQUESTS_LENGTH = 100_000
WATCHED_CACHE_SECONDS = 1.0

_LUA = Path(__file__).resolve().parent.parent / "lua"


def key_text(value: Hashable) -> str:
    """A canonical value as text, identical for reads (index) and writes (row images)."""
    if value is None:
        return "~"
    if value is True or value is False:
        return "b1" if value else "b0"
    if isinstance(value, int):
        return f"i{value}"
    if isinstance(value, float):
        return f"f{value!r}"
    if isinstance(value, str):
        return "s" + value
    if isinstance(value, bytes):
        return "x" + value.hex()
    if isinstance(value, tuple):
        return "t(" + ",".join(key_text(item) for item in value) + ")"
    return "r" + repr(value)


def image_text(image: RowImage | None) -> dict[str, str] | None:
    return None if image is None else {column: key_text(value) for column, value in image.items()}


def index_entries(read_set: ReadSet) -> list[list[str]]:
    return [
        [table, ",".join(scheme), "\x1f".join(key_text(value) for value in values)]
        for table, scheme, values in entries_of(read_set)
    ]


def _script(client: redis.Redis, name: str) -> Any:
    return client.register_script((_LUA / f"{name}.lua").read_text())


class RedisLog(ChangeLog):
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._append = _script(client, "append")

    def append(self, rows: tuple[RowChange, ...], opaque_tables: frozenset[str]) -> int:
        record = {
            "rows": [[row.table, image_text(row.old), image_text(row.new)] for row in rows],
            "opaque": sorted(opaque_tables),
        }
        payload = orjson.dumps(record)
        return int(self._append(keys=[VERSION, LOG], args=[payload, reactive_settings.CHANGE_LOG_LENGTH]))

    def head(self) -> int:
        return int(self.client.get(VERSION) or 0)

    def read_after(self, version: int, limit: int) -> list[ChangeRecord]:
        entries = self.client.xrange(LOG, min=f"({version}-0", max="+", count=limit)
        return [record_of(entry_id, fields) for entry_id, fields in entries]


def record_of(entry_id: bytes, fields: dict[bytes, bytes]) -> ChangeRecord:
    """A change record read back from the stream; its row images hold key texts."""
    data = orjson.loads(fields[b"d"])
    rows = tuple(RowChange(table, old, new) for table, old, new in data["rows"])
    return ChangeRecord(int(entry_id.split(b"-")[0]), rows, frozenset(data["opaque"]))


class RedisIndex(ReadSetIndex):
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._register = _script(client, "register")
        self._match = _script(client, "match")
        self._watched: dict[str, tuple[float, frozenset[str] | None]] = {}

    def watched_columns(self, table: str) -> frozenset[str] | None:
        # A stale answer is safe: a column missing from a row image, or a table written as a
        # whole, widens the match. A second's cache saves a round trip per write.
        now = time.monotonic()
        cached = self._watched.get(table)
        if cached is not None and now - cached[0] < WATCHED_CACHE_SECONDS:
            return cached[1]
        schemes = self.client.smembers(PREFIX + "schemes:" + table)
        columns = frozenset(c for s in schemes for c in s.decode().split(",") if c) if schemes else None
        self._watched[table] = (now, columns)
        return columns

    def set(self, instance_id: str, read_set: ReadSet) -> None:
        self._register(args=[PREFIX, instance_id, orjson.dumps(index_entries(read_set))])

    def remove(self, instance_id: str) -> None:
        self._register(args=[PREFIX, instance_id, ""])

    def match(self, record: ChangeRecord) -> set[str]:
        return self.match_all([record])

    def match_all(self, records: list[ChangeRecord]) -> set[str]:
        # One match.lua call per change record, all of a pass's in one pipelined round trip.
        if not records:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for record in records:
            payload = orjson.dumps(
                {
                    "rows": [[r.table, r.old, r.new] for r in record.rows],
                    "opaque": sorted(record.opaque_tables),
                }
            )
            self._match(args=[PREFIX, payload], client=pipe)
        return {member.decode() for members in pipe.execute() for member in members}

    def set_all(self, read_sets: dict[str, ReadSet]) -> None:
        if not read_sets:
            return
        pipe = self.client.pipeline(transaction=False)
        for instance_id, read_set in read_sets.items():
            self._register(args=[PREFIX, instance_id, orjson.dumps(index_entries(read_set))], client=pipe)
        pipe.execute()

    def instance_ids(self) -> set[str]:
        return {member.decode() for member in self.client.smembers(PREFIX + "instances")}


def _request_payload(request: Request) -> bytes:
    if isinstance(request, Ensure):
        return orjson.dumps(
            {
                "k": "ensure",
                "r": request.request_id,
                "h": request.hub_id,
                "n": request.name,
                "a": request.args,
                "u": request.user_id,
            }
        )
    if isinstance(request, Release):
        return orjson.dumps({"k": "release", "h": request.hub_id, "i": request.instance_id})
    return orjson.dumps({"k": "drop", "h": request.hub_id})


def _request_of(payload: bytes) -> Request:
    data = orjson.loads(payload)
    if data["k"] == "ensure":
        return Ensure(data["r"], data["h"], data["n"], data["a"], data["u"])
    if data["k"] == "release":
        return Release(data["h"], data["i"])
    return DropHub(data["h"])


class RedisBackend(Backend):
    def __init__(self, url: str | None = None) -> None:
        url = url or reactive_settings.REDIS_URL
        if not url:
            raise ValueError("The redis backend needs REACTIVE['REDIS_URL'] or REDIS_URL.")
        self.url = url
        self.client = redis.Redis.from_url(url, max_connections=200, health_check_interval=10)
        self.log = RedisLog(self.client)
        self.index = RedisIndex(self.client)
        self._renew = _script(self.client, "renew")
        self._hubs: dict[str, Any] = {}
        self._hub_tasks: dict[str, list[asyncio.Task]] = {}
        self._requests_cursor = "0-0"
        self._sender: _LayerSender | None = None
        self._hub_seq: dict[str, int] = {}
        self.epoch = uuid.uuid4().hex
        self._live_hubs: tuple[float, set[str]] = (0.0, set())
        self._in_process_worker: threading.Thread | None = None
        self.invalidator = None  # set when this process runs the worker

    # Server process side -----------------------------------------------------------------

    def submit(self, request: Request) -> None:
        self.client.xadd(REQUESTS, {"d": _request_payload(request)}, maxlen=REQUESTS_LENGTH, approximate=True)

    async def connect_hub(self, hub) -> None:
        from channels.layers import get_channel_layer

        # Subscribed before the hub is announced: no batch sent to it can be missed.
        hub.hub_id = await get_channel_layer().new_channel("reactive.hub.")
        self._hubs[hub.hub_id] = hub
        await asyncio.to_thread(self.client.zadd, HUBS, {hub.hub_id: time.time() + HUB_TIMEOUT_SECONDS})
        self._hub_tasks[hub.hub_id] = [
            hub.loop.create_task(self._receive_batches(hub)),
            hub.loop.create_task(self._heartbeat(hub)),
        ]
        if reactive_settings.RUN_WORKER_IN_SERVER and self._in_process_worker is None:
            from ..worker import Worker

            self._in_process_worker = threading.Thread(
                target=Worker(self).run_forever, name="reactive-worker", daemon=True
            )
            self._in_process_worker.start()

    def disconnect_hub(self, hub) -> None:
        if self._hubs.pop(hub.hub_id, None) is None:
            return
        for task in self._hub_tasks.pop(hub.hub_id, []):
            task.cancel()
        try:
            self.client.zrem(HUBS, hub.hub_id)
            self.submit(DropHub(hub.hub_id))
        except redis.RedisError:
            logger.warning("Could not tell the worker that %s is gone; it times out instead", hub.hub_id)

    async def _heartbeat(self, hub) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await asyncio.to_thread(
                    self.client.zadd, HUBS, {hub.hub_id: time.time() + HUB_TIMEOUT_SECONDS}
                )
            except redis.RedisError as exc:
                hub.fail(f"heartbeat failed: {exc}")
                return

    async def _receive_batches(self, hub) -> None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        expected: tuple[str, int] | None = None  # the first message sets the worker's epoch
        while True:
            try:
                message = await layer.receive(hub.hub_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                hub.fail(f"receiving batches failed: {exc}")
                return
            epoch, seq = message["epoch"], message["seq"]
            if (epoch, seq) != (expected or (epoch, 0)):
                # A message was lost (channels_redis drops when its connection does), or a new
                # worker took over: refresh every local instance from its stored latest result.
                await self._resync(hub)
            expected = (epoch, seq + 1)
            hub.apply_batch(_batch_of(message, hub.hub_id))

    async def _resync(self, hub) -> None:
        stored = await asyncio.to_thread(self._stored_results, list(hub.instances))
        batch = Batch(version=int(stored.pop("__version__")))
        from .base import InstanceUpdate

        for instance_id, (payload, is_error) in stored.items():
            batch.updates.append(InstanceUpdate(instance_id, payload, is_error))
        hub.apply_batch(batch)

    def _stored_results(self, instance_ids: list[str]) -> dict[str, Any]:
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(PROGRESS, "version")
        for instance_id in instance_ids:
            pipe.hmget(INSTANCE + instance_id, "payload", "error")
        version, *results = pipe.execute()
        stored: dict[str, Any] = {"__version__": int(version or 0)}
        for instance_id, (payload, is_error) in zip(instance_ids, results, strict=True):
            if payload is not None:
                stored[instance_id] = (payload, is_error == b"1")
        return stored

    # Worker side -------------------------------------------------------------------------

    def next_work(self, after: int, timeout: float) -> tuple[list[ChangeRecord], list[Request]]:
        streams = {LOG: f"{after}-0", REQUESTS: self._requests_cursor}
        response = self.client.xread(streams, count=1000, block=max(1, int(timeout * 1000)))
        records: list[ChangeRecord] = []
        requests: list[Request] = []
        for stream, entries in response or []:
            if stream == LOG.encode():
                records = [record_of(entry_id, fields) for entry_id, fields in entries]
            else:
                requests = [_request_of(fields[b"d"]) for _, fields in entries]
                if entries:
                    self._requests_cursor = entries[-1][0].decode()
        return records, requests

    def deliver(self, batch: Batch) -> None:
        if self._sender is None:
            self._sender = _LayerSender()
        messages = {}
        # Every live process (for the batch's version), and every process the batch concerns,
        # even one that has not shown up in the (cached) live set yet.
        targets = self.live_hubs() | {reply.hub_id for reply in batch.replies}
        targets |= {hub_id for hubs in batch.audience.values() for hub_id in hubs}
        for hub_id in targets:
            messages[hub_id] = {
                "type": "reactive.batch",
                "version": batch.version,
                "updates": [],
                "replies": [],
                "resubscribe": [],
            }
        for update in batch.updates:
            for hub_id in batch.audience.get(update.instance_id, ()):
                messages[hub_id]["updates"].append([update.instance_id, update.payload, update.is_error])
        for reply in batch.replies:
            messages[reply.hub_id]["replies"].append(
                [reply.request_id, reply.instance_id, reply.payload, reply.is_error, reply.identity_bound]
            )
        for instance_id in batch.resubscribe:
            for hub_id in batch.audience.get(instance_id, ()):
                messages[hub_id]["resubscribe"].append(instance_id)
        for hub_id, message in messages.items():
            seq = self._hub_seq.get(hub_id, 0)
            self._hub_seq[hub_id] = seq + 1
            message["epoch"], message["seq"] = self.epoch, seq
        self._sender.send_all(messages)

    def live_hubs(self) -> set[str]:
        now = time.monotonic()
        if now - self._live_hubs[0] > HEARTBEAT_SECONDS / 2:
            # Hubs dead for a minute leave the set (their instances were released long before).
            self.client.zremrangebyscore(HUBS, "-inf", time.time() - 60)
            members = self.client.zrangebyscore(HUBS, time.time(), "+inf")
            self._live_hubs = (now, {member.decode() for member in members})
            for hub_id in set(self._hub_seq) - self._live_hubs[1]:
                del self._hub_seq[hub_id]
        return self._live_hubs[1]

    # The worker's durable state, for a standby that takes over -----------------------------

    def save_progress(self, version: int) -> None:
        self.client.hset(PROGRESS, mapping={"version": version, "requests": self._requests_cursor})

    def load_progress(self) -> int:
        version, requests = self.client.hmget(PROGRESS, "version", "requests")
        if requests is not None:
            self._requests_cursor = requests.decode()
        else:
            # First worker ever: requests sent before it started are served from the start.
            self._requests_cursor = "0-0"
        return int(version) if version is not None else self.log.head()

    def store_instances(self, changed: list, dropped: set[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for instance in changed:
            pipe.hset(
                INSTANCE + instance.id,
                mapping={
                    "name": instance.function.name,
                    "args": orjson.dumps(instance.raw_args),
                    "user": orjson.dumps(instance.user_id),
                    "bound": "1" if instance.identity_bound else "0",
                    "payload": instance.payload,
                    "error": "1" if instance.is_error else "0",
                    "hubs": orjson.dumps(sorted(instance.hubs)),
                },
            )
            pipe.sadd(INSTANCE_IDS, instance.id)
        for instance_id in dropped:
            pipe.delete(INSTANCE + instance_id)
            pipe.srem(INSTANCE_IDS, instance_id)
        pipe.execute()

    def load_instances(self) -> list[dict[str, Any]]:
        loaded = []
        for member in self.client.smembers(INSTANCE_IDS):
            data = self.client.hgetall(INSTANCE + member.decode())
            if not data:
                continue
            loaded.append(
                {
                    "id": member.decode(),
                    "name": data[b"name"].decode(),
                    "args": orjson.loads(data[b"args"]),
                    "user_id": orjson.loads(data[b"user"]),
                    "identity_bound": data[b"bound"] == b"1",
                    "payload": data[b"payload"],
                    "is_error": data[b"error"] == b"1",
                    "hubs": set(orjson.loads(data[b"hubs"])),
                }
            )
        return loaded

    def mark_state(self) -> None:
        self.epoch = uuid.uuid4().hex
        self._hub_seq.clear()
        self.client.set(EPOCH, self.epoch)

    def state_intact(self) -> bool:
        return self.client.get(EPOCH) == self.epoch.encode()

    def other_leader_since(self) -> bool:
        current = self.client.get(EPOCH)
        return current is not None and current != self.epoch.encode()

    def acquire_lease(self, token: str) -> bool:
        if self.client.set(LEASE, token, nx=True, px=LEASE_MS):
            return True
        return bool(self._renew(keys=[LEASE], args=[token, LEASE_MS]))

    def release_lease(self, token: str) -> None:
        if self.client.get(LEASE) == token.encode():
            self.client.delete(LEASE)

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
        self.client.close()


def _batch_of(message: dict[str, Any], hub_id: str) -> Batch:
    from .base import InstanceUpdate, Subscribed

    batch = Batch(version=message["version"])
    batch.updates = [InstanceUpdate(i, payload, err) for i, payload, err in message["updates"]]
    batch.replies = [
        Subscribed(request_id, hub_id, instance_id, payload, err, bound)
        for request_id, instance_id, payload, err, bound in message["replies"]
    ]
    batch.resubscribe = list(message["resubscribe"])
    return batch


class _LayerSender:
    """Sends the worker's messages through the channel layer from an event loop of its own,
    in order (one task, one queue)."""

    def __init__(self) -> None:
        from channels.layers import get_channel_layer

        self.layer = get_channel_layer()
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue[dict[str, Any] | None] | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="reactive-sender", daemon=True)
        self.thread.start()
        self.ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.queue = asyncio.Queue()
        self.ready.set()
        self.loop.run_until_complete(self._send_forever())

    async def _send_forever(self) -> None:
        assert self.queue is not None
        while True:
            messages = await self.queue.get()
            if messages is None:
                return
            for hub_id, message in messages.items():
                try:
                    await self.layer.send(hub_id, message)
                except Exception as exc:  # the hub resyncs when it sees the gap
                    logger.warning("Sending a batch to %s failed: %s", hub_id, exc)

    def send_all(self, messages: dict[str, dict[str, Any]]) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, messages)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)
        self.thread.join(timeout=5)
