"""The WebSocket consumer: one per client connection, speaking PROTOCOL.md.

Pushed frames never pass through the channel layer or a thread: the process's hub calls
``push_transition``, which queues the text and starts this socket's writer at once if it is not
running; the writer hands frames straight to the ASGI server (``sending.py``). User code (mutations,
actions, token checks) runs in the user-code pool (``executors.py``), one mutation at a time per
connection, in the order sent, and at most ``MAX_CONCURRENT_CALLS`` calls at once. Each mutation
and action runs as the user as Django sees them at that moment (``identity.py``), not as they
were when the socket opened.

Isolation: whatever a client sends is answered on the request it concerns. A frame that makes
the server fail unexpectedly gets a ``server_error`` naming it, and the connection goes on;
what the connection keeps (arguments, queued requests) is bounded by settings.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.core.exceptions import SynchronousOnlyOperation

from ..engine.execution import call_action, call_mutation, guarded, server_error
from ..errors import BadMessage, LimitExceeded, ProtocolError, RateLimited, TooLarge, Unauthenticated
from ..functions.registry import Function, get_function
from ..settings import reactive_settings
from . import protocol
from .executors import run_user_code
from .hub import Hub, get_hub
from .identity import ANONYMOUS, Identity, identity_of_token
from .installation import app_installed, require_app_installed
from .sending import server_send, start_eagerly
from .throttling import ConnectionCounter, TokenBucket

logger = logging.getLogger("reactive.consumers")


# Close codes (Daphne accepts only 1000 and 3000-4999 from an application).
CLOSE_RESTART = 4012  # the server lost its backend: reconnect (with backoff) and subscribe again
CLOSE_TOO_MANY_CONNECTIONS = 4008  # a per-user or per-address connection cap was reached

# Open connections of this process, per user and per client address.
_per_user = ConnectionCounter()
_per_address = ConnectionCounter()


@dataclass(slots=True)
class Subscription:
    function: Function
    canonical_args: bytes  # what the hub and the invalidator see (never the raw frame)
    instance_id: str | None = None
    request_id: int | None = None


class ReactiveConsumer(AsyncWebsocketConsumer):
    hub: Hub
    # No channel-layer channel per socket: pushes come from the process's hub. (An alias that
    # is not configured gives no layer; with channels_redis that saves a Redis subscription and
    # a receive loop per socket.)
    channel_layer_alias = "reactive.none"

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels 4.2+ hops to a thread (close_old_connections) before every handler; this
        # consumer does its database work in its own threads, so the hot path skips the hop.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        user, session = self.scope.get("user"), self.scope.get("session")
        try:
            identity = Identity.of_handshake(user, session)
        except SynchronousOnlyOperation:  # a session that no middleware has loaded yet
            identity = await run_user_code(Identity.of_handshake, user, session)
        self.set_identity(identity)
        self._rechecking = self._recheck_again = False
        self.session_id: str | None = None
        self.subscriptions: dict[int, Subscription] = {}
        self.last_version = 0
        self.inflight = 0
        self.inflight_bytes = 0
        self.args_bytes = 0
        self.closed = False
        self._counted: list[tuple[ConnectionCounter, object]] = []
        self.bucket = TokenBucket(
            reactive_settings.RATE_LIMIT_PER_SECOND,
            reactive_settings.RATE_LIMIT_BURST,
            reactive_settings.CLOCK,
        )
        self._calls = asyncio.Semaphore(reactive_settings.MAX_CONCURRENT_CALLS)
        self.max_message_bytes = reactive_settings.MAX_MESSAGE_BYTES
        self._outbox: collections.deque[str] = collections.deque()
        self._outbox_bytes = 0
        self._writing = False  # a writer is sending the outbox (or waiting for the client to read)
        self._send_to_server = server_send(self.base_send)
        # Set when the client reads slower than its values change: transitions stop queueing
        # and mutation results wait in _held for the one catch-up transition.
        self._lagging = False
        self._held: list[str] = []
        self._mutations: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()
        # For the admin's dashboard (server/stats.py).
        self.connected_at, self.frames_sent, self.bytes_sent = time.time(), 0, 0
        await self.accept()
        refusal = self._count_connection()
        if refusal is not None:
            self.closed = True
            await self.send(text_data=protocol.error_frame(refusal))
            await self.close(code=CLOSE_TOO_MANY_CONNECTIONS)
            return
        if not app_installed():
            # No hub (its backend needs the app's tables): every frame but a ping is answered
            # with what to add (receive() checks).
            self.hub = None  # type: ignore[assignment]
            return
        self.hub = await get_hub()
        self.hub.consumers.add(self)
        self._spawn(self._run_mutations())

    def _count_connection(self) -> LimitExceeded | None:
        """Count this connection against the per-user and per-address caps, or say which it hits."""
        client = self.scope.get("client") or ("", 0)
        caps = [(_per_address, ("address", client[0]), reactive_settings.MAX_CONNECTIONS_PER_ADDRESS)]
        if self.user_id is not None:
            caps.append((_per_user, ("user", self.user_id), reactive_settings.MAX_CONNECTIONS_PER_USER))
        for counter, key, limit in caps:
            if not counter.acquire(key, limit):
                self._release_counts()
                return LimitExceeded(f"Too many connections for this {key[0]}: at most {limit} per server.")
            self._counted.append((counter, key))
        return None

    def _release_counts(self) -> None:
        for counter, key in self._counted:
            counter.release(key)
        self._counted.clear()

    async def disconnect(self, code: int) -> None:
        self._release_counts()
        if getattr(self, "closed", True):
            return
        self.closed = True
        for task in self._tasks:
            task.cancel()
        if self.hub is None:
            return
        self.hub.consumers.discard(self)
        for sub_id, subscription in list(self.subscriptions.items()):
            self.hub.unsubscribe(self, sub_id, subscription.instance_id)
        self.subscriptions.clear()
        self.args_bytes = 0

    def close_for_restart(self) -> None:
        """Close so that the client reconnects and subscribes again (the backend went away)."""
        self._spawn(self.close(code=CLOSE_RESTART))

    def set_identity(self, identity: Identity) -> None:
        self.identity = identity
        self.user_id = identity.user_id

    # Outgoing ----------------------------------------------------------------------------

    def push(self, text: str) -> None:
        if not self.closed:
            self._outbox.append(text)
            self._outbox_bytes += len(text)
            self._start_writer()

    def push_transition(self, version: int, frame: str) -> None:
        self.last_version = max(self.last_version, version)
        if self.lagging:
            # Memory stays bounded for a client that stops reading (on a server with
            # back-pressure): once it has read what is queued, one transition brings every
            # subscription up to date.
            self._lagging = True
            self._start_writer()
            return
        self.push(frame)

    @property
    def lagging(self) -> bool:
        """Whether the client reads slower than its values change (``MAX_QUEUED_BYTES``)."""
        return self._lagging or self._outbox_bytes > reactive_settings.MAX_QUEUED_BYTES

    def push_result(self, text: str) -> None:
        """A mutation result: after every transition its commit caused (guarantee 6)."""
        if self._lagging:
            self._held.append(text)
        else:
            self.push(text)

    def push_error(self, error: ProtocolError, **reference: int) -> None:
        self.push(protocol.error_frame(error, **reference))

    def _catch_up(self) -> None:
        """Queue one transition with the current value of every subscription, then what waited."""
        self._lagging = False
        entries = []
        for sub_id, subscription in self.subscriptions.items():
            entry = self.hub.entry(subscription.instance_id, sub_id)
            if entry is not None:
                entries.append(entry)
        self.last_version = max(self.last_version, self.hub.processed_version)
        self.push(protocol.transition_frame(self.last_version, entries))
        held, self._held = self._held, []
        for text in held:
            self.push(text)

    def _start_writer(self) -> None:
        """Send the outbox now, unless a writer already is; a writer that has to wait for the
        client to read goes on in a task, and the caller (the hub, for every socket) goes on."""
        if self._writing or self.closed:
            return
        self._writing = True
        try:
            rest = start_eagerly(self._write_outbox())
        except Exception:
            logger.exception("Connection writer failed")
            return
        if rest is not None:
            self._spawn(rest)

    async def _write_outbox(self) -> None:
        try:
            while self._outbox or self._lagging:
                if not self._outbox:
                    self._catch_up()
                    continue
                text = self._outbox.popleft()
                self._outbox_bytes -= len(text)
                await self._send_to_server({"type": "websocket.send", "text": text})
                self.frames_sent += 1
                self.bytes_sent += len(text)
        except (OSError, RuntimeError) as exc:
            # The socket went away under a send (servers raise on sending after a close); the
            # disconnect handler does the cleanup.
            logger.debug("Send failed on a closing connection: %s", exc)
            self._outbox.clear()
            self._outbox_bytes = 0
        finally:
            self._writing = False

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("Connection task failed", exc_info=task.exception())

    # Incoming ----------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame: Any = None
        try:
            if text_data is None:
                raise BadMessage("Binary frames are not supported: send JSON text frames.")
            # A character is at most 4 bytes in UTF-8: encode only frames that may be too large.
            if len(text_data) * 4 > self.max_message_bytes:
                size = len(text_data.encode())
                if size > self.max_message_bytes:
                    raise TooLarge(f"Frame of {size} bytes exceeds {self.max_message_bytes}.")
            # Every frame counts, malformed ones too; parsed first so a refusal names its request.
            try:
                frame = protocol.parse_frame(text_data)
            except BadMessage as bad:
                if not self.bucket.take():
                    limited = RateLimited()
                    limited.frame_ref = getattr(bad, "frame_ref", None)  # type: ignore[attr-defined]
                    raise limited from None
                raise
            if not self.bucket.take():
                raise RateLimited()
            if frame["type"] != "ping":
                require_app_installed()
            frame["_size"] = len(text_data)  # characters: close enough to bytes for a bound
            await getattr(self, "on_" + frame["type"])(frame)
        except ProtocolError as error:
            reference = getattr(error, "frame_ref", None) or protocol.reference_of(frame)
            self.push_error(error, **reference)
        except Exception as exc:
            # A bug or a failure in handling this frame fails this frame alone.
            frame_type = frame.get("type") if isinstance(frame, dict) else None
            self.push_error(server_error(f"the {frame_type!r} frame", exc), **protocol.reference_of(frame))

    async def on_connect(self, frame: dict[str, Any]) -> None:
        self.session_id = frame["session_id"]
        self.push(
            protocol.dumps(
                {
                    "type": "connected",
                    "protocol": protocol.PROTOCOL_VERSION,
                    "version": max(self.last_version, self.hub.processed_version),
                    "limits": {
                        "max_message_bytes": self.max_message_bytes,
                        "max_subscriptions": reactive_settings.MAX_SUBSCRIPTIONS,
                    },
                }
            )
        )

    async def on_ping(self, frame: dict[str, Any]) -> None:
        self.push('{"type":"pong"}')

    async def on_subscribe(self, frame: dict[str, Any]) -> None:
        sub_id = frame["id"]
        if sub_id in self.subscriptions:
            raise BadMessage(f"Subscription id {sub_id} is already live.")
        if len(self.subscriptions) >= reactive_settings.MAX_SUBSCRIPTIONS:
            raise LimitExceeded(
                f"At most {reactive_settings.MAX_SUBSCRIPTIONS} live subscriptions per connection."
            )
        function = get_function(frame["query"], "query")
        try:
            valid = function.validate(frame["args"])
        except SynchronousOnlyOperation:  # a field that queries the database
            valid = await self._call(function.validate, frame["args"])
        size = len(valid.canonical)
        if size > reactive_settings.MAX_ARGS_BYTES:
            raise TooLarge(f"Arguments of {size} bytes exceed {reactive_settings.MAX_ARGS_BYTES}.")
        if self.args_bytes + size > reactive_settings.MAX_CONNECTION_ARGS_BYTES:
            raise LimitExceeded(
                f"The live subscriptions of a connection may hold at most "
                f"{reactive_settings.MAX_CONNECTION_ARGS_BYTES} bytes of arguments."
            )
        if sub_id in self.subscriptions or self.closed:
            raise BadMessage(f"Subscription id {sub_id} is already live.")
        self.subscriptions[sub_id] = Subscription(function, valid.canonical)
        self.args_bytes += size
        try:
            self.hub.subscribe(self, sub_id, function.name, valid.canonical)
        except BaseException:
            self._forget(sub_id)
            raise

    async def on_unsubscribe(self, frame: dict[str, Any]) -> None:
        subscription = self._forget(frame["id"])
        if subscription is not None:
            self.hub.unsubscribe(self, frame["id"], subscription.instance_id)

    def _forget(self, sub_id: int) -> Subscription | None:
        subscription = self.subscriptions.pop(sub_id, None)
        if subscription is not None:
            self.args_bytes -= len(subscription.canonical_args)
        return subscription

    async def on_mutation(self, frame: dict[str, Any]) -> None:
        self._count_inflight(frame)
        self._mutations.put_nowait(frame)

    async def on_action(self, frame: dict[str, Any]) -> None:
        self._count_inflight(frame)
        self._spawn(self._run_action(frame))

    async def on_authenticate(self, frame: dict[str, Any]) -> None:
        token = frame["token"]
        if token is None:
            self.switch_identity(ANONYMOUS)
            return
        identity = await self._call(identity_of_token, token)
        if identity is None:
            # Whoever the socket was before, a refused token leaves it signed out.
            self.switch_identity(ANONYMOUS)
            raise Unauthenticated("Invalid or expired token.")
        self.switch_identity(identity)

    def switch_identity(self, identity: Identity) -> None:
        """Act as ``identity`` from now on; subscriptions that read the user run again as it."""
        previous = self.user_id
        self.set_identity(identity)
        if identity.user_id == previous:
            return
        # Only subscriptions whose query read the identity (or may yet) run again.
        for sub_id, subscription in list(self.subscriptions.items()):
            if subscription.instance_id is None or self.hub.is_identity_bound(subscription.instance_id):
                self.resubscribe(sub_id)

    def _count_inflight(self, frame: dict[str, Any]) -> None:
        if self.inflight >= reactive_settings.MAX_INFLIGHT_REQUESTS:
            raise LimitExceeded(f"At most {reactive_settings.MAX_INFLIGHT_REQUESTS} requests in flight.")
        size = frame["_size"]
        if self.inflight_bytes + size > reactive_settings.MAX_INFLIGHT_BYTES:
            raise LimitExceeded(
                f"At most {reactive_settings.MAX_INFLIGHT_BYTES} bytes of requests in flight; "
                "wait for results before sending more."
            )
        self.inflight += 1
        self.inflight_bytes += size

    def _done_inflight(self, frame: dict[str, Any]) -> None:
        self.inflight -= 1
        self.inflight_bytes -= frame["_size"]

    async def _call(self, func, *args: Any, **kwargs: Any) -> Any:
        """Run user code for this connection: in the user-code pool, a bounded number at once."""
        async with self._calls:
            return await run_user_code(func, *args, **kwargs)

    async def _as_current_user(self, call: Callable[..., Any], name: str, args: Any, **kwargs: Any) -> Any:
        """Run ``call(name, args, user=user)`` as user code, as the user this socket's sign-in
        gives now (loaded again in that thread, as Django would for a request). If the sign-in has
        ended, the call runs as nobody and the socket becomes anonymous."""
        identity = self.identity
        loaded: list[Any] = []

        def run() -> Any:
            loaded.append(guarded(name, identity.load_user))
            return guarded(name, call, name, args, user=loaded[0], **kwargs)

        try:
            return await self._call(run)
        finally:
            if loaded:
                self._confirm(identity, loaded[0])

    def _confirm(self, identity: Identity, user: Any) -> None:
        """``identity`` was just loaded as ``user``: if it has ended and is still this socket's,
        the socket becomes anonymous."""
        if user is None and identity.user_id is not None and identity is self.identity:
            self.switch_identity(ANONYMOUS)

    # Requests ----------------------------------------------------------------------------

    async def _run_mutations(self) -> None:
        while True:
            frame = await self._mutations.get()
            try:
                await self._run_mutation(frame)
            finally:
                self._done_inflight(frame)

    async def _run_mutation(self, frame: dict[str, Any]) -> None:
        request_id = frame["request_id"]
        try:
            try:
                outcome = await self._as_current_user(
                    call_mutation,
                    frame["name"],
                    frame["args"],
                    session_id=self.session_id,
                    request_id=request_id,
                )
            except ProtocolError as error:
                self.push(protocol.failed_result_frame("mutation_result", request_id, error))
                return
            # Read your own writes: the result follows every transition the commit caused.
            version = outcome.version
            if version is None:  # the log was unreachable; the hub is closing this socket
                version = self.hub.processed_version
            await self.hub.wait_processed(version)
            self.push_result(protocol.mutation_result_frame(request_id, outcome.payload, version))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the runner goes on: later mutations still get their results
            error = server_error(f"mutation {frame.get('name')!r}", exc)
            self.push(protocol.failed_result_frame("mutation_result", request_id, error))

    async def _run_action(self, frame: dict[str, Any]) -> None:
        request_id = frame["request_id"]
        try:
            payload = await self._as_current_user(call_action, frame["name"], frame["args"])
            self.push(protocol.action_result_frame(request_id, payload))
        except ProtocolError as error:
            self.push(protocol.failed_result_frame("action_result", request_id, error))
        except Exception as exc:
            error = server_error(f"action {frame.get('name')!r}", exc)
            self.push(protocol.failed_result_frame("action_result", request_id, error))
        finally:
            self._done_inflight(frame)

    # Called by the hub -------------------------------------------------------------------

    def awaiting(self, sub_id: int, request_id: int) -> None:
        subscription = self.subscriptions[sub_id]
        subscription.request_id, subscription.instance_id = request_id, None

    def is_awaiting(self, sub_id: int, request_id: int) -> bool:
        subscription = self.subscriptions.get(sub_id)
        return not self.closed and subscription is not None and subscription.request_id == request_id

    def attached(self, sub_id: int, instance_id: str) -> None:
        subscription = self.subscriptions[sub_id]
        subscription.instance_id, subscription.request_id = instance_id, None

    def resubscribe(self, sub_id: int) -> None:
        """Subscribe again as the current user (after sign-in, or a query that began to read it)."""
        subscription = self.subscriptions.get(sub_id)
        if subscription is None or self.closed:
            return
        self.hub.unsubscribe(self, sub_id, subscription.instance_id)
        subscription.instance_id = subscription.request_id = None
        self.hub.subscribe(self, sub_id, subscription.function.name, subscription.canonical_args)

    def recheck_identity(self) -> None:
        """A commit may have ended this socket's sign-in (the hub saw its user or session among a
        batch's ``revoked``): load it again, in a worker thread, and sign out if it has ended."""
        if self._rechecking:
            # The running check may have read before that commit: run one more after it.
            self._recheck_again = True
            return
        self._rechecking = True
        self._spawn(self._recheck())

    async def _recheck(self) -> None:
        try:
            while not self.closed:
                self._recheck_again = False
                identity = self.identity
                if identity.user_id is None:
                    return
                try:
                    user = await self._call(identity.load_user)
                except Exception as exc:
                    # Mutations and actions still load the user before they run; the next
                    # revocation or call checks again.
                    logger.warning("Could not re-check the sign-in of %r: %s", identity, exc, exc_info=exc)
                    return
                self._confirm(identity, user)
                if not self._recheck_again:
                    return
        finally:
            self._rechecking = False
