"""The hub: one per server process (per event loop), the fan-out point for its sockets.

The invalidator sends one message per changed query instance to each process that watches it;
the hub turns it into frames for its own sockets. A result is encoded once per change, its update
entry once per subscription id (clients number their subscriptions from 1, so most sockets share
it), and a frame once per distinct list of entries: a thousand sockets watching one instance get
the same frame text. A batch is applied synchronously (no ``await`` inside), so every socket's
frames for one commit form one ``transition``, and a subscribe or a mutation result can never
slip into the middle of a batch.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from django.db import connection

from ..backends import get_backend
from ..backends.base import BackendUnavailable, Batch, Ensure, Release
from ..engine import worker
from ..engine.execution import server_error
from ..engine.instances import candidate_ids, instance_base
from ..functions import encoding
from . import protocol, stats
from .identity import Identity

logger = logging.getLogger("reactive.hub")

# How long a new hub waits for this process's worker to take its first turn at the lease.
WORKER_START_SECONDS = 10.0
# How long a new hub may take to connect to the backend.
CONNECT_SECONDS = 10.0


class Subscriber(Protocol):
    """What the hub needs of a connection (``consumer.Subscriber`` implements it)."""

    user_id: object | None
    identity: Identity

    def push_transition(self, version: int, frame: str) -> None:
        """Queue this ``transition`` frame, at ``version`` (the hub's: never below the socket's)."""

    def awaiting(self, sub_id: int, request_id: int) -> None:
        """Subscription ``sub_id`` waits for the reply to request ``request_id``."""

    def is_awaiting(self, sub_id: int, request_id: int) -> bool:
        """Whether ``sub_id`` still waits for ``request_id`` (not unsubscribed or re-sent)."""

    def attached(self, sub_id: int, instance_id: str) -> None:
        """Subscription ``sub_id`` now follows ``instance_id``."""

    def resubscribe(self, sub_id: int) -> None:
        """Subscribe ``sub_id`` again as the connection's current user."""

    def close_for_restart(self) -> None:
        """Close the connection so that the client reconnects (the backend is unreachable)."""

    def recheck_identity(self) -> None:
        """A commit may have ended the connection's sign-in: check it again (in the background)."""


class LocalInstance:
    """A live query instance as this process sees it: its latest value and local subscribers."""

    __slots__ = ("identity_bound", "subscribers", "tail")

    def __init__(self, payload: bytes, is_error: bool, identity_bound: bool) -> None:
        self.subscribers: dict[Subscriber, set[int]] = {}
        self.identity_bound = identity_bound
        self.set_value(payload, is_error)

    def set_value(self, payload: bytes, is_error: bool) -> None:
        self.tail = protocol.entry_tail(payload, is_error)

    def entry(self, sub_id: int) -> str:
        """This instance's value as one entry of a transition's ``updates``."""
        return protocol.entry(sub_id, self.tail)

    def entries_by_subscriber(self) -> dict[Subscriber, list[str]]:
        """Each local subscriber's entries of this value, each entry made once per subscription id
        (the text is shared by every socket that numbered its subscription alike)."""
        made: dict[int, str] = {}
        out: dict[Subscriber, list[str]] = {}
        for consumer, sub_ids in self.subscribers.items():
            entries = out[consumer] = []
            for sub_id in sub_ids:
                entry = made.get(sub_id)
                if entry is None:
                    entry = made[sub_id] = protocol.entry(sub_id, self.tail)
                entries.append(entry)
        return out


@dataclass(slots=True)
class _Pending:
    """An Ensure in flight: who asked, what was sent, and the instance ids it may map to."""

    consumer: Subscriber
    sub_id: int
    request: Ensure
    candidates: tuple[str, ...]


class Hub:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.hub_id = f"hub.{uuid.uuid4().hex}"
        self.loop = loop
        self.backend = get_backend()
        self.instances: dict[str, LocalInstance] = {}
        self.processed_version = 0  # the log's head once connected (a database read)
        self._requests: dict[int, _Pending] = {}
        self._request_ids = itertools.count(1)
        # Instance ids an in-flight Ensure may map to: not released while one may land on them.
        self._pending_candidates: Counter[str] = Counter()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_ids = itertools.count()
        self.closed = False
        self.consumers: set[Subscriber] = set()
        self._stats_task: asyncio.Task | None = None
        self.connected = loop.create_task(self._connect())

    async def _connect(self) -> None:
        # Bounded: a backend that does not answer fails this hub, and the next connection
        # makes a new one, rather than every later socket waiting on this one for ever.
        try:
            async with asyncio.timeout(CONNECT_SECONDS):
                head = await asyncio.to_thread(_log_head, self.backend)
                self.processed_version = max(self.processed_version, head)
                await self.backend.connect_hub(self)
        except BaseException:
            self.close()  # the next socket makes a new hub (the backend may be back by then)
            raise
        self._stats_task = self.loop.create_task(stats.publish_forever(self))  # the admin's dashboard
        started = worker.ensure_running(self.backend)
        if started is not None:
            # A mutation's result waits for the batch of its commit: the worker must be reading.
            await asyncio.to_thread(started.started.wait, WORKER_START_SECONDS)

    # Called by consumers (event loop) ----------------------------------------------------

    def subscribe(self, consumer: Subscriber, sub_id: int, name: str, canonical_args: bytes) -> None:
        """Attach a subscription; its first value reaches the consumer as a transition."""
        user_id = consumer.user_id
        base = instance_base(name, canonical_args)
        candidates = candidate_ids(base, user_id)
        for candidate in candidates:
            instance = self.instances.get(candidate)
            if instance is not None:
                self._attach(instance, candidate, consumer, sub_id)
                version = self.processed_version
                consumer.push_transition(
                    version, protocol.transition_frame(version, [instance.entry(sub_id)])
                )
                return
        request_id = next(self._request_ids)
        request = Ensure(request_id, self.hub_id, name, encoding.loads(canonical_args), user_id)
        self._requests[request_id] = _Pending(consumer, sub_id, request, candidates)
        self._pending_candidates.update(candidates)
        consumer.awaiting(sub_id, request_id)
        try:
            self._submit(request)
        except Exception as exc:
            # This request alone fails (the caller answers it with an error frame).
            del self._requests[request_id]
            self._pending_candidates.subtract(candidates)
            raise server_error(f"subscribe {name!r}", exc) from exc

    def unsubscribe(self, consumer: Subscriber, sub_id: int, instance_id: str | None) -> None:
        if instance_id is None:
            return  # still pending: the reply finds the subscription gone and releases
        instance = self.instances.get(instance_id)
        if instance is None:
            return
        sub_ids = instance.subscribers.get(consumer)
        if sub_ids is not None:
            sub_ids.discard(sub_id)
            if not sub_ids:
                del instance.subscribers[consumer]
        self._maybe_release(instance_id)

    async def wait_processed(self, version: int) -> None:
        """Return once every transition caused by commits up to ``version`` has been queued."""
        if self.processed_version >= version:
            return
        future = self.loop.create_future()
        heapq.heappush(self._waiters, (version, next(self._waiter_ids), future))
        await future

    def is_identity_bound(self, instance_id: str) -> bool:
        instance = self.instances.get(instance_id)
        return bool(instance and instance.identity_bound)

    def entry(self, instance_id: str | None, sub_id: int) -> str | None:
        """The current value of a local instance as an update entry for ``sub_id``, if known."""
        instance = self.instances.get(instance_id) if instance_id is not None else None
        return instance.entry(sub_id) if instance is not None else None

    # Called by the backend ---------------------------------------------------------------

    def deliver_threadsafe(self, batch: Batch) -> None:
        try:
            self.loop.call_soon_threadsafe(self.apply_batch, batch)
        except RuntimeError:  # the loop is closed: this hub is gone
            self.close()

    def apply_batch(self, batch: Batch) -> None:
        frames: dict[Subscriber, list[str]] = {}
        for update in batch.updates:
            instance = self.instances.get(update.instance_id)
            if instance is None:
                continue
            instance.set_value(update.payload, update.is_error)
            if frames:
                for consumer, entries in instance.entries_by_subscriber().items():
                    frames.setdefault(consumer, []).extend(entries)
            else:  # the first (often the only) changed instance
                frames = instance.entries_by_subscriber()
        for reply in batch.replies:
            if reply.hub_id != self.hub_id:
                continue
            pending = self._requests.pop(reply.request_id, None)
            if pending is None:
                continue
            consumer, sub_id = pending.consumer, pending.sub_id
            self._pending_candidates.subtract(pending.candidates)
            wanted = consumer.is_awaiting(sub_id, reply.request_id)
            if not reply.instance_id:  # the request failed before it became an instance
                if wanted:
                    entry = protocol.entry(sub_id, protocol.entry_tail(reply.payload, reply.is_error))
                    frames.setdefault(consumer, []).append(entry)
                continue
            instance = self.instances.get(reply.instance_id)
            if instance is None:
                instance = LocalInstance(reply.payload, reply.is_error, reply.identity_bound)
                self.instances[reply.instance_id] = instance
            if wanted:
                self._attach(instance, reply.instance_id, consumer, sub_id)
                frames.setdefault(consumer, []).append(instance.entry(sub_id))
            for candidate in pending.candidates:
                self._maybe_release(candidate)
            self._maybe_release(reply.instance_id)
        for instance_id in batch.resubscribe:
            instance = self.instances.pop(instance_id, None)
            if instance is None:
                continue
            for consumer, sub_ids in instance.subscribers.items():
                for sub_id in sub_ids:
                    consumer.resubscribe(sub_id)
        self._pending_candidates = +self._pending_candidates  # drop zero counts
        if self.hub_id in batch.released_hubs:
            self.rejoin()
        self.processed_version = version = max(self.processed_version, batch.version)
        shared: dict[tuple[str, ...], str] = {}  # entries -> frame: sockets with the same entries share it
        for consumer, entries in frames.items():
            key = tuple(entries)
            frame = shared.get(key)
            if frame is None:
                frame = shared[key] = protocol.transition_frame(version, entries)
            consumer.push_transition(version, frame)
        if batch.revoked:  # a logout, a deactivation, a password change...: rare, so a scan
            for consumer in list(self.consumers):
                if consumer.identity.concerned_by(batch.revoked):
                    consumer.recheck_identity()
        while self._waiters and self._waiters[0][0] <= self.processed_version:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)

    # Internals ---------------------------------------------------------------------------

    def _attach(self, instance: LocalInstance, instance_id: str, consumer: Subscriber, sub_id: int) -> None:
        instance.subscribers.setdefault(consumer, set()).add(sub_id)
        consumer.attached(sub_id, instance_id)

    def _maybe_release(self, instance_id: str) -> None:
        instance = self.instances.get(instance_id)
        if instance is None or instance.subscribers or self._pending_candidates[instance_id] > 0:
            return
        del self.instances[instance_id]
        try:
            self._submit(Release(self.hub_id, instance_id))
        except Exception:  # the instance stays live in the invalidator until this hub goes away
            logger.exception("Could not release %s", instance_id)

    def resubmit_pending(self) -> None:
        """Send every unanswered subscribe request again (the worker attaches idempotently)."""
        for request_id, pending in list(self._requests.items()):
            if pending.consumer.is_awaiting(pending.sub_id, request_id):
                self._submit(pending.request)

    def _submit(self, request: Ensure | Release) -> None:
        """Send a request; an unreachable backend fails the whole hub, anything else raises."""
        try:
            self.backend.submit(request)
        except BackendUnavailable as exc:
            self.fail(f"the backend is unreachable: {exc}")

    def rejoin(self) -> None:
        """The invalidator may have released this process's instances (it missed heartbeats):
        forget every local value and subscribe each subscription again, so that none stays
        silently stale."""
        instances, self.instances = self.instances, {}
        logger.warning("Hub %s rejoins: subscribing %d instances again", self.hub_id, len(instances))
        for instance in instances.values():
            for consumer, sub_ids in instance.subscribers.items():
                for sub_id in list(sub_ids):
                    consumer.resubscribe(sub_id)

    def fail(self, reason: str) -> None:
        """The backend is unreachable: close every socket so that clients reconnect, to a new
        hub, and subscribe afresh once the backend is back."""
        if self.closed:
            return
        logger.warning("Hub %s failed (%s); closing %d sockets", self.hub_id, reason, len(self.consumers))
        self.close()
        for consumer in list(self.consumers):
            consumer.close_for_restart()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._stats_task is not None:
                self._stats_task.cancel()
            for _, _, future in self._waiters:
                if not future.done():
                    future.cancel()
            self.backend.disconnect_hub(self)


def _log_head(backend) -> int:
    """The log's head, read once per hub in a thread of the loop's executor (it then lets go of
    the connection it opened there)."""
    try:
        return backend.log.head()
    finally:
        connection.close()


_hubs: dict[asyncio.AbstractEventLoop, Hub] = {}


async def get_hub() -> Hub:
    """The hub of the running event loop (one per server process; tests run one per loop),
    connected to the backend: it receives every batch sent after its first request."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None or hub.closed or hub.backend is not get_backend() or _failed(hub.connected):
        for other_loop, other in list(_hubs.items()):
            if other_loop.is_closed() or other is hub:
                other.close()
                del _hubs[other_loop]
        hub = _hubs[loop] = Hub(loop)
    try:
        await asyncio.shield(hub.connected)
    except Exception:
        hub.close()  # the next connection makes a new hub (the backend may be back by then)
        raise
    return hub


def _failed(task: asyncio.Task) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)
