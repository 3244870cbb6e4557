"""The Redis backend: many server processes, one worker, one truth.

- The change log is the database's ``reactive_changelog`` table (``backends/changelog.py``):
  whichever process commits (web, admin, shell, management command) appends its record inside
  its own transaction, so writers need no Redis to commit and nothing is lost if a writer dies
  or Redis is down; the worker tails it in commit order and resumes from its saved version.
- The read-set index lives in Redis (``reactive/lua/register.lua``, ``match.lua``): one round
  trip to register an instance's read set, one to match a change record.
- Hubs send their subscribe and release requests to a stream; the worker (``manage.py
  reactive_worker``, holding a lease) reads it and the change log, runs the invalidator, and sends each
  server process one message per batch through the channel layer (channels_redis), numbered so
  a process that misses one resyncs from the instances' latest results stored in Redis.
- Each server process heartbeats; the worker releases the instances of a process that stops.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import redis
from channels.layers import get_channel_layer

from ...records import ANYONE, ChangeRecord
from ...settings import reactive_settings
from ..base import STATS_TTL_SECONDS, Backend, BackendUnavailable, Batch, DropHub, InstanceUpdate, Request
from ..changelog import DatabaseLog, LogTail
from .index import RedisIndex
from .keys import (
    EPOCH,
    HEARTBEAT_SECONDS,
    HUB_TIMEOUT_SECONDS,
    HUBS,
    INSTANCE,
    INSTANCE_IDS,
    LEASE,
    LEASE_MS,
    PROGRESS,
    REQUESTS,
    REQUESTS_LENGTH,
    STATS,
    STATS_SNAPSHOT,
    script,
)
from .transport import LayerSender, batch_of, request_of, request_payload

logger = logging.getLogger("reactive.redis")

PING = "reactive.ping"  # what a hub sends itself to check that the channel layer delivers


class RedisBackend(Backend):
    def __init__(self, url: str | None = None) -> None:
        url = url or reactive_settings.REDIS_URL
        if not url:
            raise ValueError("The redis backend needs REACTIVE['REDIS_URL'] or REDIS_URL.")
        super().__init__()
        self.url = url
        self.client = redis.Redis.from_url(url, max_connections=200, health_check_interval=10)
        self.log = DatabaseLog()
        self.index = RedisIndex(self.client)
        self._renew = script(self.client, "renew")
        self._hubs: dict[str, Any] = {}
        self._hub_tasks: dict[str, list[asyncio.Task]] = {}
        self._heard: dict[str, float] = {}  # hub id -> when its last message arrived (monotonic)
        # Worker side: the change log's tail and the requests read ahead by a thread, both
        # waited for on one condition. ``_requests_cursor`` is the last request handed to the
        # invalidator (saved with the progress), ``_read_cursor`` the last one read from Redis.
        self._wakeup = threading.Condition()
        self.tail = LogTail(self.log, self._wakeup)
        self._requests: collections.deque[tuple[str, Request]] = collections.deque()
        self._requests_cursor = "0-0"
        self._read_cursor = "0-0"
        self._read_generation = 0
        self._read_error: Exception | None = None
        self._reader: threading.Thread | None = None
        self._reading = threading.Event()  # set while this process leads (a standby reads none)
        self._closed = threading.Event()
        self._sender: LayerSender | None = None
        self._hub_seq: dict[str, int] = {}
        self.epoch = uuid.uuid4().hex
        self._live_hubs: tuple[float, set[str]] = (0.0, set())
        # Small deployments run the worker in every server process; one holds the lease.
        self.worker_in_server = reactive_settings.RUN_WORKER_IN_SERVER
        self._io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="reactive-redis")

    # Server process side -----------------------------------------------------------------

    def submit(self, request: Request) -> None:
        payload = request_payload(request)
        try:
            self.client.xadd(REQUESTS, {"d": payload}, maxlen=REQUESTS_LENGTH, approximate=True)
        except redis.RedisError as exc:
            raise BackendUnavailable(str(exc)) from exc

    async def _in_io_thread(self, func, *args: Any) -> Any:
        """Blocking Redis calls of the hub's own work, on threads no user code can occupy."""
        return await asyncio.get_running_loop().run_in_executor(self._io, func, *args)

    async def connect_hub(self, hub) -> None:
        try:
            await self._in_io_thread(self.client.ping)  # fail fast while Redis is down
        except redis.RedisError as exc:
            raise BackendUnavailable(str(exc)) from exc
        # Subscribed before the hub is announced: no batch sent to it can be missed.
        hub.hub_id = await get_channel_layer().new_channel("reactive.hub.")
        self._hubs[hub.hub_id] = hub
        await self._in_io_thread(self.client.zadd, HUBS, {hub.hub_id: time.time() + HUB_TIMEOUT_SECONDS})
        self._heard[hub.hub_id] = time.monotonic()
        self._hub_tasks[hub.hub_id] = [
            hub.loop.create_task(self._receive_batches(hub)),
            hub.loop.create_task(self._heartbeat(hub)),
        ]

    def disconnect_hub(self, hub) -> None:
        if self._hubs.pop(hub.hub_id, None) is None:
            return
        for task in self._hub_tasks.pop(hub.hub_id, []):
            task.cancel()
        self._heard.pop(hub.hub_id, None)
        try:
            self.client.zrem(HUBS, hub.hub_id)
            self.submit(DropHub(hub.hub_id))
        except redis.RedisError:
            logger.warning("Could not tell the worker that %s is gone; it times out instead", hub.hub_id)

    async def _heartbeat(self, hub) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                previous = await self._in_io_thread(self._beat, hub.hub_id)
            except redis.RedisError as exc:
                hub.fail(f"heartbeat failed: {exc}")
                return
            if previous is None or previous < time.time():
                # The deadline passed before this beat (the process was stalled): the worker may
                # have released this process's instances. Subscribe them again, at once.
                hub.rejoin()
            # The worker sends something every second; when it is silent (busy, or failing over)
            # the hub pings itself through the channel layer. If not even that arrives, the
            # layer has lost this process's subscription (a Redis restart can leave it so): a new
            # hub subscribes afresh, and its sockets' clients reconnect to it.
            silent = time.monotonic() - self._heard.get(hub.hub_id, time.monotonic())
            if silent > 2 * HEARTBEAT_SECONDS:
                hub.fail(f"nothing arrived through the channel layer for {silent:.0f} s")
                return
            if silent > HEARTBEAT_SECONDS:
                try:
                    await get_channel_layer().send(hub.hub_id, {"type": PING})
                except Exception as exc:
                    hub.fail(f"the channel layer is unreachable: {exc}")
                    return

    def _beat(self, hub_id: str) -> float | None:
        """Push this hub's deadline forward; return the deadline it had (None: forgotten)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.zscore(HUBS, hub_id)
        pipe.zadd(HUBS, {hub_id: time.time() + HUB_TIMEOUT_SECONDS})
        previous, _ = pipe.execute()
        return previous

    async def _receive_batches(self, hub) -> None:
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
            self._heard[hub.hub_id] = time.monotonic()
            if message["type"] == PING:
                continue
            epoch, seq = message["epoch"], message["seq"]
            if (epoch, seq) != (expected or (epoch, 0)):
                # A message was lost (channels_redis drops when its connection does), or a new
                # worker took over: refresh every local instance from its stored latest result.
                await self._resync(hub)
            expected = (epoch, seq + 1)
            hub.apply_batch(batch_of(message, hub.hub_id))

    async def _resync(self, hub) -> None:
        stored = await self._in_io_thread(self._stored_results, list(hub.instances))
        # The lost message may have ended sign-ins: every signed-in socket is checked again.
        batch = Batch(version=int(stored.pop("__version__")), revoked=frozenset({ANYONE}))
        for instance_id, (payload, is_error) in stored.items():
            batch.updates.append(InstanceUpdate(instance_id, payload, is_error))
        hub.apply_batch(batch)
        # The lost message may have held replies to subscribes: ask again (attaching twice is
        # harmless; a reply that was lost would otherwise leave its subscription waiting).
        hub.resubmit_pending()

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

    def log_committed(self, version: int) -> None:
        self.tail.committed_here()

    def next_work(self, after: int, timeout: float) -> tuple[list[ChangeRecord], list[Request]]:
        self._start_reader()
        with self._wakeup:
            if not self.tail.changed and not self._requests and self._read_error is None:
                self._wakeup.wait(self.tail.wait_seconds(timeout))
            error, self._read_error = self._read_error, None
            if error is not None:  # the worker retries; the records stay in the log meanwhile
                raise BackendUnavailable(f"reading requests failed: {error}") from error
            taken = list(self._requests)
            self._requests.clear()
        if taken:
            self._requests_cursor = taken[-1][0]
        return self.tail.read(after), [request for _, request in taken]

    def _start_reader(self) -> None:
        self._reading.set()
        if self._reader is None:
            self._reader = threading.Thread(target=self._read_requests, name="reactive-requests", daemon=True)
            self._reader.start()

    def _read_requests(self) -> None:
        """Read hubs' requests ahead, blocking on Redis, so that the worker can wait for them and
        for the change log at once."""
        while not self._closed.is_set():
            if not self._reading.wait(0.5):
                continue
            with self._wakeup:
                cursor, generation = self._read_cursor, self._read_generation
            try:
                response = self.client.xread({REQUESTS: cursor}, count=1000, block=1000)
            except Exception as exc:  # Redis is gone: the worker hears of it and retries
                with self._wakeup:
                    self._read_error = exc
                    self._wakeup.notify_all()
                self._closed.wait(0.5)
                continue
            entries = [entry for _, stream_entries in response or [] for entry in stream_entries]
            if not entries:
                continue
            with self._wakeup:
                if generation != self._read_generation:
                    continue  # the worker moved the cursor (load_progress) meanwhile
                for entry_id, fields in entries:
                    self._requests.append((entry_id.decode(), request_of(fields[b"d"])))
                self._read_cursor = entries[-1][0].decode()
                self._wakeup.notify_all()

    def deliver(self, batch: Batch) -> None:
        if self._sender is None:
            self._sender = LayerSender()
        messages = {}
        # Every live process (for the batch's version), and every process the batch concerns,
        # even one that has not shown up in the (cached) live set yet.
        targets = self.live_hubs() | {reply.hub_id for reply in batch.replies}
        targets |= {hub_id for hubs in batch.audience.values() for hub_id in hubs}
        targets |= batch.released_hubs
        for hub_id in targets:
            messages[hub_id] = {
                "type": "reactive.batch",
                "version": batch.version,
                "updates": [],
                "replies": [],
                "resubscribe": [],
                "released": hub_id in batch.released_hubs,
            }
            if batch.revoked:  # every process: any of its sockets may be signed in as them
                messages[hub_id]["revoked"] = sorted(batch.revoked)
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

    # Statistics for the dashboard: every process's, through Redis --------------------------

    def publish_stats(self, source: str, snapshot: bytes) -> None:
        ttl_ms = int(STATS_TTL_SECONDS * 1000)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(STATS_SNAPSHOT + source, snapshot, px=ttl_ms)
        pipe.zadd(STATS, {source: time.time() + STATS_TTL_SECONDS})
        pipe.execute()

    def stats_snapshots(self) -> list[bytes]:
        now = time.time()
        self.client.zremrangebyscore(STATS, "-inf", now)
        sources = self.client.zrangebyscore(STATS, now, "+inf")
        if not sources:
            return []
        snapshots = self.client.mget([STATS_SNAPSHOT + source.decode() for source in sources])
        return [snapshot for snapshot in snapshots if snapshot is not None]

    # The worker's durable state, for a standby that takes over -----------------------------

    def save_progress(self, version: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(PROGRESS, mapping={"version": version, "requests": self._requests_cursor})
        # Requests the worker has read are not needed again (a standby resumes after the saved
        # cursor): the stream holds only what is still to be read.
        pipe.xtrim(REQUESTS, minid=self._requests_cursor, approximate=False)
        pipe.execute()

    def load_progress(self) -> int:
        version, requests = self.client.hmget(PROGRESS, "version", "requests")
        # First worker ever: requests sent before it started are served from the start.
        cursor = requests.decode() if requests is not None else "0-0"
        with self._wakeup:
            self._requests_cursor = self._read_cursor = cursor
            self._read_generation += 1
            self._requests.clear()
        return int(version) if version is not None else self.log.head()

    def store_instances(self, changed: list, dropped: set[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for instance in changed:
            pipe.hset(
                INSTANCE + instance.id,
                mapping={
                    "name": instance.function.name,
                    "args": orjson.dumps(instance.canonical_args),
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
        if self._renew(keys=[LEASE], args=[token, LEASE_MS]):
            return True
        self._reading.clear()  # another worker leads: stop reading its requests
        return False

    def release_lease(self, token: str) -> None:
        if self.client.get(LEASE) == token.encode():
            self.client.delete(LEASE)

    def close(self) -> None:
        super().close()
        self._closed.set()
        self.tail.close()
        self._io.shutdown(wait=False)
        if self._sender is not None:
            self._sender.close()
        self.client.close()
