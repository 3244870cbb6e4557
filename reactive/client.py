"""An asyncio client for the reactive wire protocol (``PROTOCOL.md``, version 1).

Used by the project's tests and benchmarks, and usable from scripts. It depends only on
``websockets`` and ``orjson``; it never imports Django, so it works in processes without
settings::

    async with ReactiveClient("ws://localhost:8000/reactive/ws/") as client:
        sub = client.subscribe("chat.list_messages", {"channel": 1})
        print(await sub.first())
        await client.mutation("chat.send", {"channel": 1, "body": "hi"})
        print(await sub.next())

One background reader task and one writer task run per connection. When the socket drops and
``reconnect`` is true, the client reconnects with exponential backoff and full jitter, sends
``connect`` with the same ``session_id``, re-sends ``authenticate`` (if it was ever called),
``subscribe`` for every live subscription (same ids) and every unanswered mutation (same
``request_id``, so the server returns the stored result instead of running it again), and fails
every in-flight action with ``connection_lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

__all__ = ["ReactiveClient", "ReactiveClientError", "Subscription", "run_mutation", "run_query"]

logger = logging.getLogger("reactive.client")

PROTOCOL_VERSION = 1
FRAME_LOG_SIZE = 10_000
SUBSCRIPTION_HISTORY_SIZE = 10_000
_CLOSE_TIMEOUT = 2.0

Frame = dict[str, Any]
Predicate = Callable[[Any], bool]


class ReactiveClientError(Exception):
    """An error reported by the server (or by the client itself, e.g. ``connection_lost``).

    ``code`` is the protocol's machine code (``invalid_args``, ``user_error``, ...),
    ``message`` is for people, ``data`` is the optional payload (DRF-shaped field errors for
    ``invalid_args``, the data given to ``ReactiveError`` for ``user_error``). ``frame`` is the
    raw frame that carried the error, when there was one.
    """

    def __init__(self, code: str, message: str = "", data: Any = None, *, frame: Frame | None = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        self.frame = frame
        super().__init__(f"{code}: {message}" if message else code)

    @classmethod
    def from_error(cls, error: Any, *, frame: Frame | None = None) -> ReactiveClientError:
        """Build from a protocol error object ``{"code", "message", "data"?}``."""
        if not isinstance(error, dict):
            return cls("bad_message", f"Malformed error object: {error!r}", frame=frame)
        return cls(
            str(error.get("code", "server_error")),
            str(error.get("message", "")),
            error.get("data"),
            frame=frame,
        )

    def __repr__(self) -> str:
        return f"ReactiveClientError(code={self.code!r}, message={self.message!r}, data={self.data!r})"


def _short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _default_origin(url: str) -> str:
    """``http://host[:port]`` (``https`` for ``wss``) from a WebSocket URL."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme in ("wss", "https") else "http"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return f"{scheme}://{netloc}"


class _Ended(Exception):
    """Internal: a subscription waiter was woken because the subscription ended."""


class Subscription:
    """A live query. An async iterator of its values.

    Attributes (kept up to date by the client's reader task):

    - ``id``, ``name``, ``args``: what was subscribed.
    - ``value``: the last value received (kept when an error arrives afterwards).
    - ``error``: the current error object ``{"code", "message", "data"?}``, or ``None`` while
      the current state is a value.
    - ``version``: the version of the transition that carried the last update, or ``None``.
    - ``has_value``: whether a value was ever received.
    - ``updates``: how many updates (values or errors) were received.

    Every method that hands a value to the caller (``first``, ``wait_for``, ``next``,
    ``__anext__``) marks the current update as seen; iteration then yields only later updates,
    one per update received (none is skipped once iteration started).
    """

    def __init__(self, client: ReactiveClient, sub_id: int, name: str, args: dict[str, Any]) -> None:
        self.client = client
        self.id = sub_id
        self.name = name
        self.args = args
        self.value: Any = None
        self.error: dict[str, Any] | None = None
        self.version: int | None = None
        self.has_value = False
        self.updates = 0
        self._seen = 0  # update number last handed to the caller
        self._recording = False
        self._history: deque[tuple[int, dict[str, Any] | None, Any]] = deque(maxlen=SUBSCRIPTION_HISTORY_SIZE)
        self._waiters: list[asyncio.Future[None]] = []
        self._ended: str | None = None  # "unsubscribed", "closed" or "connection_lost"
        self._end_exc: ReactiveClientError | None = None

    def __repr__(self) -> str:
        state = f"error={self.error!r}" if self.error else f"value={_short(self.value, 80)}"
        return f"<Subscription {self.id} {self.name} {self.args!r} updates={self.updates} {state}>"

    @property
    def live(self) -> bool:
        """Whether the subscription is still active (not unsubscribed, client not closed)."""
        return self._ended is None

    # -- called by the client -------------------------------------------------------------

    def _apply(self, *, value: Any = None, error: Any = None, is_error: bool, version: int | None) -> None:
        self.updates += 1
        if is_error:
            self.error = error if isinstance(error, dict) else {"code": "bad_message", "message": repr(error)}
        else:
            self.value = value
            self.error = None
            self.has_value = True
        if version is not None:
            self.version = version
        if self._recording:
            self._history.append((self.updates, self.error, self.value))

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _end(self, reason: str, exc: ReactiveClientError | None = None) -> None:
        if self._ended is None:
            self._ended = reason
            self._end_exc = exc
        self._wake()

    # -- waiting -------------------------------------------------------------------------

    async def _changed(self) -> None:
        if self._ended is not None:
            raise _Ended
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)

    def _ended_error(self) -> ReactiveClientError:
        if self._end_exc is not None:
            return self._end_exc
        return ReactiveClientError(
            self._ended or "closed", f"Subscription {self.id} ({self.name}) is {self._ended or 'closed'}"
        )

    def _mark_seen(self) -> None:
        self._seen = self.updates
        self._history.clear()

    def _current(self) -> Any:
        if self.error is not None:
            raise ReactiveClientError.from_error(self.error)
        return self.value

    def _describe(self) -> str:
        state = f"error {self.error!r}" if self.error else f"value {_short(self.value)}"
        if not self.updates:
            state = "no update yet"
        return f"subscription {self.id} {self.name}({_short(self.args, 120)}); last: {state}"

    async def first(self, timeout: float | None = 10.0) -> Any:
        """The current value once there is one (right after ``subscribe``: the initial value).

        Raises ``ReactiveClientError`` if the current state is an error, ``TimeoutError`` if
        nothing arrives in time.
        """
        try:
            async with asyncio.timeout(timeout):
                while not self.updates:
                    try:
                        await self._changed()
                    except _Ended:
                        raise self._ended_error() from None
        except TimeoutError:
            raise TimeoutError(
                f"Timed out after {timeout}s waiting for the first value of {self._describe()}"
            ) from None
        self._mark_seen()
        return self._current()

    async def wait_for(self, predicate: Predicate, timeout: float | None = 10.0) -> Any:
        """Wait until the current value satisfies ``predicate`` and return it.

        The current value is checked first. Error states are skipped (errors are values that
        may be replaced by a later update); the ``TimeoutError`` message shows the last state.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if self.has_value and self.error is None and predicate(self.value):
                        self._mark_seen()
                        return self.value
                    try:
                        await self._changed()
                    except _Ended:
                        raise self._ended_error() from None
        except TimeoutError:
            raise TimeoutError(
                f"Timed out after {timeout}s waiting for a value matching the predicate on {self._describe()}"
            ) from None

    async def next(self, timeout: float | None = 10.0) -> Any:
        """Like ``__anext__`` with a timeout: the next update not yet seen."""
        try:
            async with asyncio.timeout(timeout):
                return await self.__anext__()
        except TimeoutError:
            raise TimeoutError(
                f"Timed out after {timeout}s waiting for the next update of {self._describe()}"
            ) from None
        except StopAsyncIteration:
            raise self._ended_error() from None

    def __aiter__(self) -> AsyncIterator[Any]:
        self._start_recording()
        return self

    def _start_recording(self) -> None:
        if not self._recording:
            self._recording = True
            if self.updates > self._seen:
                self._history.append((self.updates, self.error, self.value))

    async def __anext__(self) -> Any:
        """The next update not yet seen: its value, or ``ReactiveClientError`` for an error.

        The subscription stays live after an error: iterate again to get later updates. Ends
        (``StopAsyncIteration``) on ``unsubscribe`` or ``close``; raises
        ``ReactiveClientError("connection_lost")`` if the connection died for good.
        """
        self._start_recording()
        while True:
            while self._history and self._history[0][0] <= self._seen:
                self._history.popleft()
            if self._history:
                seq, error, value = self._history.popleft()
                self._seen = seq
                if error is not None:
                    raise ReactiveClientError.from_error(error)
                return value
            if self.updates > self._seen:  # history overflowed: give the current state
                self._seen = self.updates
                return self._current()
            try:
                await self._changed()
            except _Ended:
                if self._ended == "connection_lost":
                    raise self._ended_error() from None
                raise StopAsyncIteration from None

    async def unsubscribe(self) -> None:
        """Stop the live query (idempotent). Iterators end, waiters raise."""
        if self._ended is not None:
            return
        self.client._unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.unsubscribe()


class _Request:
    __slots__ = ("conn", "frame", "future", "kind", "name", "request_id")

    def __init__(
        self, kind: str, request_id: int, name: str, frame: Frame, future: asyncio.Future[Frame]
    ) -> None:
        self.kind = kind
        self.request_id = request_id
        self.name = name
        self.frame = frame
        self.future = future
        self.conn: _Connection | None = None  # the connection it was last sent on


class _Connection:
    """One WebSocket and its reader/writer tasks."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.outbox: asyncio.Queue[tuple[str | bytes, bool, asyncio.Future[None] | None]] = asyncio.Queue()
        self.reader: asyncio.Task[None] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.connected: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self.ready = False  # handshake done, state re-sent
        self.detached = False  # no longer the client's connection: ignore what it receives
        self.version = 0  # highest transition version seen on this connection


class ReactiveClient:
    """A client for one WebSocket to a reactive server.

    ``url`` is the WebSocket URL (e.g. ``ws://localhost:8000/reactive/ws/``). ``headers`` are
    sent with the handshake (e.g. a ``Cookie`` with a Django session, an ``Origin``); when they
    carry no ``Origin`` one is derived from ``url`` (``http://host:port``), since servers
    check it against ``ALLOWED_HOSTS``. ``session_id`` defaults to a random 22-character
    urlsafe string, stable for the client's lifetime (mutation replay relies on it).
    ``ws_options`` are extra keyword arguments for ``websockets.asyncio.client.connect``.

    Public state: ``connected`` (the last ``connected`` frame), ``version`` (highest
    transition version seen on the current connection), ``reconnects``, ``frames`` (bounded
    log of received frames), ``sent_frames`` (bounded log of sent frames), ``errors`` (``error``
    frames that concern no subscription or pending request), ``protocol_violations``
    (descriptions of server behaviour that breaks PROTOCOL.md; tests assert it stays empty).
    """

    def __init__(
        self,
        url: str,
        *,
        session_id: str | None = None,
        headers: dict[str, str] | None = None,
        reconnect: bool = True,
        backoff_initial: float = 0.1,
        backoff_max: float = 16.0,
        send_connect: bool = True,
        client_name: str = "reactive.client/python",
        connect_timeout: float = 10.0,
        ws_options: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.session_id = session_id if session_id is not None else secrets.token_urlsafe(16)
        self.headers = dict(headers or {})
        self.reconnect = reconnect
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.send_connect = send_connect
        self.client_name = client_name
        self.connect_timeout = connect_timeout
        self.ws_options = dict(ws_options or {})

        self.connected: Frame | None = None
        self.version = 0
        self.reconnects = 0
        self.frames: deque[Frame] = deque(maxlen=FRAME_LOG_SIZE)
        self.sent_frames: deque[Frame | str | bytes] = deque(maxlen=FRAME_LOG_SIZE)
        self.errors: list[Frame] = []
        self.protocol_violations: list[str] = []

        self._subs: dict[int, Subscription] = {}
        self._next_sub_id = 1
        self._next_request_id = 1
        self._pending: dict[int, _Request] = {}
        self._pings: deque[tuple[asyncio.Future[float], float]] = deque()
        self._token: str | None = None
        self._token_set = False
        self._frame_seq = 0  # number of frames received so far
        self._recent: deque[tuple[int, Frame]] = deque(maxlen=FRAME_LOG_SIZE)
        self._frame_waiters: list[tuple[Callable[[Frame], bool] | None, int, asyncio.Future[Frame]]] = []
        self._callbacks: list[Callable[[Frame], Any]] = []

        self._conn: _Connection | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._closed = False  # close() called
        self._dead: ReactiveClientError | None = None  # connection lost for good

    def __repr__(self) -> str:
        state = "ready" if self.is_connected else "closed" if self._closed else "disconnected"
        return f"<ReactiveClient {self.url} session={self.session_id} {state}>"

    # -- public state --------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """Whether a connection is open and its handshake is done."""
        return self._conn is not None and self._conn.ready

    @property
    def subscriptions(self) -> dict[int, Subscription]:
        """The live subscriptions by id (a copy)."""
        return dict(self._subs)

    @property
    def frames_received(self) -> int:
        """How many frames were received so far (a mark for ``next_frame(since=...)``)."""
        return self._frame_seq

    # -- lifecycle -----------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the socket; with ``send_connect``, send ``connect`` and wait for ``connected``.

        Raises what ``websockets`` raises when the handshake fails (e.g. ``InvalidStatus`` for a
        rejected origin), ``ReactiveClientError`` when the server answers ``connect`` with an
        ``error``, ``TimeoutError`` when ``connected`` does not come in ``connect_timeout``.
        """
        if self._closed:
            raise RuntimeError("This ReactiveClient is closed; create a new one")
        if self._conn is not None:
            raise RuntimeError("Already connected")
        self._started = True
        self._dead = None
        await self._open()

    async def close(self) -> None:
        """Close the socket, stop every task, fail what is pending. Idempotent."""
        if self._closed:
            return
        self._closed = True
        exc = ReactiveClientError("closed", "Client closed")
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        conn = self._conn
        if conn is not None:
            self._detach(conn)
            await self._close_ws(conn)
        self._fail_all(exc, end_reason="closed")
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> ReactiveClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def reconnect_now(self) -> None:
        """Drop the current connection and reconnect at once (no backoff), as after a drop.

        Subscriptions are re-sent, pending mutations replayed with the same ``request_id``,
        in-flight actions fail with ``connection_lost``. Returns once the new connection is
        ready; if it cannot be opened, raises (and, with ``reconnect``, keeps retrying).
        """
        if self._closed:
            raise RuntimeError("This ReactiveClient is closed")
        self._started = True
        self._dead = None
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
            self._reconnect_task = None
        conn = self._conn
        if conn is not None:
            self._connection_lost(conn, schedule=False)
            await self._close_ws(conn)
        try:
            await self._open()
        except Exception:
            if self.reconnect and not self._closed:
                self._start_reconnect_loop()
            raise
        self.reconnects += 1

    # -- connection machinery ------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _ws_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_size": None}
        if self.headers:
            kwargs["additional_headers"] = self.headers
        if not any(key.lower() == "origin" for key in self.headers):
            kwargs["origin"] = _default_origin(self.url)
        kwargs.update(self.ws_options)
        return kwargs

    async def _open(self) -> None:
        ws = await connect(self.url, **self._ws_kwargs())
        conn = _Connection(ws)
        self._conn = conn
        self.version = 0
        conn.reader = self._spawn(self._reader(conn), "reactive-client-reader")
        conn.writer = self._spawn(self._writer(conn), "reactive-client-writer")
        try:
            if self.send_connect:
                frame: Frame = {
                    "type": "connect",
                    "protocol": PROTOCOL_VERSION,
                    "session_id": self.session_id,
                }
                if self.client_name:
                    frame["client"] = self.client_name
                self._enqueue(conn, frame)
                try:
                    async with asyncio.timeout(self.connect_timeout):
                        await asyncio.shield(conn.connected)
                except TimeoutError:
                    raise TimeoutError(
                        f"Timed out after {self.connect_timeout}s waiting for 'connected' from {self.url}"
                    ) from None
        except BaseException:
            if self._conn is conn:
                self._detach(conn)
            await self._close_ws(conn)
            raise
        if conn.detached:
            raise ReactiveClientError("connection_lost", "Connection lost during the handshake")
        self._on_ready(conn)

    def _on_ready(self, conn: _Connection) -> None:
        """Re-send the session state on a fresh connection. Synchronous: nothing interleaves."""
        conn.ready = True
        if self._token_set:
            self._enqueue(conn, {"type": "authenticate", "token": self._token})
        for sub in self._subs.values():
            self._enqueue(conn, {"type": "subscribe", "id": sub.id, "query": sub.name, "args": sub.args})
        for req in self._pending.values():
            if req.kind == "mutation" or req.conn is None:
                req.conn = conn
                self._enqueue(conn, req.frame)
        for _ in self._pings:
            self._enqueue(conn, {"type": "ping"})

    def _detach(self, conn: _Connection) -> None:
        conn.detached = True
        conn.ready = False
        if self._conn is conn:
            self._conn = None
        if conn.writer is not None:
            conn.writer.cancel()
        while not conn.outbox.empty():
            _, _, fut = conn.outbox.get_nowait()
            if fut is not None and not fut.done():
                fut.set_exception(
                    ReactiveClientError("connection_lost", "Connection lost before the frame was sent")
                )
        if not conn.connected.done():
            conn.connected.set_exception(
                ReactiveClientError("connection_lost", "Connection lost during the handshake")
            )
            conn.connected.exception()  # retrieved: no "exception was never retrieved" warning

    async def _close_ws(self, conn: _Connection) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await conn.ws.close()
        tasks = [t for t in (conn.reader, conn.writer) if t is not None and t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _connection_lost(self, conn: _Connection, *, schedule: bool = True) -> None:
        """The socket of a ready (or handshaking) connection went away."""
        was_ready = conn.ready
        self._detach(conn)
        if self._closed or not was_ready:
            return  # close() or _open() handles it
        lost = ReactiveClientError("connection_lost", "Connection lost while action was in flight")
        for rid, req in list(self._pending.items()):
            if req.kind == "action" and req.conn is conn:
                del self._pending[rid]
                if not req.future.done():
                    req.future.set_exception(lost)
        if not schedule:
            return
        if self.reconnect:
            self._start_reconnect_loop()
        else:
            self._dead = ReactiveClientError("connection_lost", "Connection lost (reconnect is off)")
            self._fail_all(self._dead, end_reason="connection_lost")

    def _start_reconnect_loop(self) -> None:
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = self._spawn(self._reconnect_loop(), "reactive-client-reconnect")

    async def _reconnect_loop(self) -> None:
        attempt = 0
        while not self._closed:
            cap = min(self.backoff_max, self.backoff_initial * (2**attempt))
            await asyncio.sleep(random.uniform(0, cap))
            attempt += 1
            try:
                await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("reconnect attempt %d to %s failed: %r", attempt, self.url, exc)
                continue
            self.reconnects += 1
            logger.debug("reconnected to %s after %d attempt(s)", self.url, attempt)
            return

    def _fail_all(self, exc: ReactiveClientError, *, end_reason: str) -> None:
        for req in self._pending.values():
            if not req.future.done():
                req.future.set_exception(exc)
        self._pending.clear()
        while self._pings:
            fut, _ = self._pings.popleft()
            if not fut.done():
                fut.set_exception(exc)
        for _, _, fut in self._frame_waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._frame_waiters.clear()
        subs = list(self._subs.values())
        self._subs.clear()
        for sub in subs:
            sub._end(end_reason, exc if end_reason == "connection_lost" else None)

    async def _reader(self, conn: _Connection) -> None:
        try:
            async for message in conn.ws:
                if conn.detached:
                    break
                try:
                    self._handle_message(conn, message)
                except Exception:
                    logger.exception("reactive client: error while handling a frame")
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            # Cancelled from outside (e.g. the event loop shutting down): don't reconnect.
            if not conn.detached:
                self._detach(conn)
            raise
        if not conn.detached:
            self._connection_lost(conn)

    async def _writer(self, conn: _Connection) -> None:
        while True:
            data, text, fut = await conn.outbox.get()
            try:
                await conn.ws.send(data, text=text)
            except (ConnectionClosed, asyncio.CancelledError) as exc:
                # Cancelled by _detach mid-send: the frame being written fails like the queued ones.
                if fut is not None and not fut.done():
                    fut.set_exception(ReactiveClientError("connection_lost", "Connection lost while sending"))
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return  # the reader notices the loss
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _enqueue(self, conn: _Connection, frame: Frame, fut: asyncio.Future[None] | None = None) -> None:
        self.sent_frames.append(frame)
        conn.outbox.put_nowait((orjson.dumps(frame), True, fut))

    def _send_if_ready(self, frame: Frame) -> _Connection | None:
        conn = self._conn
        if conn is not None and conn.ready:
            self._enqueue(conn, frame)
            return conn
        return None

    def _check_usable(self) -> None:
        if self._closed:
            raise ReactiveClientError("closed", "Client closed")
        if self._dead is not None:
            raise self._dead

    # -- receiving -----------------------------------------------------------------------

    def _violation(self, text: str) -> None:
        logger.warning("reactive protocol violation: %s", text)
        self.protocol_violations.append(text)

    def _handle_message(self, conn: _Connection, message: str | bytes) -> None:
        try:
            frame = orjson.loads(message)
        except orjson.JSONDecodeError:
            self._violation(f"received a frame that is not JSON: {_short(message)}")
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            self._violation(f"received a frame that is not an object with a type: {_short(frame)}")
            return
        self._frame_seq += 1
        self.frames.append(frame)
        self._recent.append((self._frame_seq, frame))

        handler = self._handlers.get(frame["type"])
        if handler is not None:
            handler(self, conn, frame)

        if self._frame_waiters:
            self._notify_frame_waiters(self._frame_seq, frame)
        for callback in self._callbacks:
            try:
                callback(frame)
            except Exception:
                logger.exception("reactive client: on_frame callback failed")

    def _on_connected(self, conn: _Connection, frame: Frame) -> None:
        self.connected = frame
        if not conn.connected.done():
            conn.connected.set_result(frame)

    def _on_transition(self, conn: _Connection, frame: Frame) -> None:
        version = frame.get("version")
        updates = frame.get("updates")
        if not isinstance(version, int) or not isinstance(updates, list):
            self._violation(f"malformed transition: {_short(frame)}")
            return
        if version < conn.version:
            self._violation(
                f"transition version {version} is lower than {conn.version} seen before on this connection"
            )
        else:
            conn.version = version
            self.version = version
        touched: list[Subscription] = []
        for update in updates:
            if not isinstance(update, dict) or "id" not in update:
                self._violation(f"malformed update in transition {version}: {_short(update)}")
                continue
            sub = self._subs.get(update["id"])
            if sub is None:
                if not isinstance(update["id"], int) or not 0 < update["id"] < self._next_sub_id:
                    self._violation(f"update for a subscription id never used: {update['id']!r}")
                continue  # unsubscribed, the update was in flight
            if "error" in update:
                sub._apply(error=update["error"], is_error=True, version=version)
            elif "value" in update:
                sub._apply(value=update["value"], is_error=False, version=version)
            else:
                self._violation(f"update without value or error in transition {version}: {_short(update)}")
                continue
            touched.append(sub)
        for sub in touched:  # every subscription updated before any waiter is woken
            sub._wake()

    def _on_result(self, conn: _Connection, frame: Frame) -> None:
        req = self._pending.pop(frame.get("request_id"), None)  # type: ignore[arg-type]
        if req is not None and not req.future.done():
            req.future.set_result(frame)

    def _on_error(self, conn: _Connection, frame: Frame) -> None:
        if (
            not conn.connected.done()
            and self.send_connect
            and "id" not in frame
            and "request_id" not in frame
        ):
            self.errors.append(frame)
            conn.connected.set_exception(ReactiveClientError.from_error(frame.get("error"), frame=frame))
            return
        if "id" in frame and frame["id"] in self._subs:
            sub = self._subs[frame["id"]]
            sub._apply(error=frame.get("error"), is_error=True, version=None)
            sub._wake()
            return
        if "request_id" in frame:
            req = self._pending.pop(frame["request_id"], None)
            if req is not None:
                if not req.future.done():
                    req.future.set_exception(ReactiveClientError.from_error(frame.get("error"), frame=frame))
                return
        self.errors.append(frame)

    def _on_pong(self, conn: _Connection, frame: Frame) -> None:
        if self._pings:
            fut, started = self._pings.popleft()
            if not fut.done():
                fut.set_result(time.perf_counter() - started)

    _handlers: dict[str, Callable[[ReactiveClient, _Connection, Frame], None]] = {
        "connected": _on_connected,
        "transition": _on_transition,
        "mutation_result": _on_result,
        "action_result": _on_result,
        "error": _on_error,
        "pong": _on_pong,
    }

    def _notify_frame_waiters(self, seq: int, frame: Frame) -> None:
        remaining = []
        for predicate, since, fut in self._frame_waiters:
            if fut.done():
                continue
            if seq <= since:
                remaining.append((predicate, since, fut))
                continue
            try:
                matched = predicate is None or predicate(frame)
            except Exception as exc:
                fut.set_exception(exc)
                continue
            if matched:
                fut.set_result(frame)
            else:
                remaining.append((predicate, since, fut))
        self._frame_waiters = remaining

    # -- subscriptions -------------------------------------------------------------------

    def subscribe(self, name: str, args: dict[str, Any] | None = None) -> Subscription:
        """Start a live query. The ``subscribe`` frame goes out now if connected, else on connect.

        Ids are ints from 1 up, never reused by this client.
        """
        self._check_usable()
        sub = Subscription(self, self._next_sub_id, name, dict(args or {}))
        self._next_sub_id += 1
        self._subs[sub.id] = sub
        self._send_if_ready({"type": "subscribe", "id": sub.id, "query": name, "args": sub.args})
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if self._subs.pop(sub.id, None) is not None:
            self._send_if_ready({"type": "unsubscribe", "id": sub.id})
        sub._end("unsubscribed")

    async def query(
        self, name: str, args: dict[str, Any] | None = None, *, timeout: float | None = 10.0
    ) -> Any:
        """Subscribe, return the first value (raise ``ReactiveClientError`` on error), unsubscribe."""
        sub = self.subscribe(name, args)
        try:
            return await sub.first(timeout=timeout)
        finally:
            await sub.unsubscribe()

    # -- requests ------------------------------------------------------------------------

    async def _request(
        self, kind: str, name: str, args: dict[str, Any] | None, timeout: float | None
    ) -> Frame:
        self._check_usable()
        request_id = self._next_request_id
        self._next_request_id += 1
        frame: Frame = {"type": kind, "request_id": request_id, "name": name, "args": dict(args or {})}
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        req = _Request(kind, request_id, name, frame, fut)
        self._pending[request_id] = req
        req.conn = self._send_if_ready(frame)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise TimeoutError(
                f"Timed out after {timeout}s waiting for the result of {kind} {name!r} "
                f"(request_id {request_id})"
            ) from None
        finally:
            self._pending.pop(request_id, None)

    async def mutation_result(
        self, name: str, args: dict[str, Any] | None = None, *, timeout: float | None = 10.0
    ) -> Frame:
        """Run a mutation and return the raw ``mutation_result`` frame (``ok`` true or false).

        An ``error`` frame that names the request (e.g. ``rate_limited``, ``bad_message``) raises
        ``ReactiveClientError`` (its ``frame`` is the error frame). A pending mutation is
        re-sent with the same ``request_id`` after a reconnect.
        """
        return await self._request("mutation", name, args, timeout)

    async def mutation(
        self, name: str, args: dict[str, Any] | None = None, *, timeout: float | None = 10.0
    ) -> Any:
        """Run a mutation; return its value. Raises ``ReactiveClientError(code, message, data)``.

        Resolves when ``mutation_result`` arrives, which the server sends after every
        transition the commit caused, so subscriptions already show the write.
        """
        frame = await self._request("mutation", name, args, timeout)
        if not frame.get("ok"):
            raise ReactiveClientError.from_error(frame.get("error"), frame=frame)
        return frame.get("value")

    async def action(
        self, name: str, args: dict[str, Any] | None = None, *, timeout: float | None = 10.0
    ) -> Any:
        """Run an action; return its value. Raises ``ReactiveClientError``.

        Never replayed: if the connection drops while it is in flight, raises
        ``ReactiveClientError("connection_lost")``. (Called while disconnected, it is sent once
        the client has reconnected.)
        """
        frame = await self._request("action", name, args, timeout)
        if not frame.get("ok"):
            raise ReactiveClientError.from_error(frame.get("error"), frame=frame)
        return frame.get("value")

    async def authenticate(self, token: str | None) -> None:
        """Send ``authenticate`` (``None`` signs out). Re-sent after every reconnect.

        The protocol has no reply; a rejected token shows up as an ``error`` frame (see
        ``errors``/``next_frame``). Later frames are processed after it, in order.
        """
        self._check_usable()
        self._token = token
        self._token_set = True
        self._send_if_ready({"type": "authenticate", "token": token})

    async def ping(self, timeout: float | None = 10.0) -> float:
        """Send ``ping``, wait for ``pong``; return the round trip in seconds.

        Pongs carry no id: they answer pending pings in order. A ping pending across a
        reconnect is sent again on the new connection.
        """
        self._check_usable()
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        entry = (fut, time.perf_counter())
        self._pings.append(entry)
        self._send_if_ready({"type": "ping"})
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise TimeoutError(f"Timed out after {timeout}s waiting for 'pong'") from None
        finally:
            with contextlib.suppress(ValueError):
                self._pings.remove(entry)

    # -- raw frames ----------------------------------------------------------------------

    async def send_raw(self, frame: str | bytes | dict[str, Any]) -> None:
        """Send a frame as is: ``str`` as a text frame, ``bytes`` as a binary frame, ``dict``
        as JSON text. Returns once it is written. For protocol tests (malformed frames);
        the client's own state (subscriptions, pending requests) is not touched.
        """
        self._check_usable()
        conn = self._conn
        if conn is None or not conn.ready:
            raise ReactiveClientError("connection_lost", "Not connected")
        if isinstance(frame, dict):
            data: str | bytes = orjson.dumps(frame)
            text = True
        else:
            data, text = frame, isinstance(frame, str)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent_frames.append(frame)
        conn.outbox.put_nowait((data, text, fut))
        await fut

    async def next_frame(
        self,
        predicate: Callable[[Frame], bool] | None = None,
        timeout: float | None = 10.0,
        *,
        since: int | None = None,
    ) -> Frame:
        """The next received frame (any type) that matches ``predicate``.

        By default only frames received after the call count. Pass ``since=mark`` with
        ``mark = client.frames_received`` taken earlier to also consider frames received
        after that mark (still in the recent log).
        """
        start = self._frame_seq if since is None else since
        for seq, frame in self._recent:
            if seq > start and (predicate is None or predicate(frame)):
                return frame
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        entry = (predicate, start, fut)
        self._frame_waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise TimeoutError(
                f"Timed out after {timeout}s waiting for a frame matching {predicate!r}"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._frame_waiters.remove(entry)

    def on_frame(self, callback: Callable[[Frame], Any]) -> None:
        """Call ``callback(frame)`` for every received frame, after the client processed it."""
        self._callbacks.append(callback)


# -- synchronous helpers -------------------------------------------------------------------


def run_mutation(url: str, name: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
    """Connect, run one mutation, close; for scripts. ``timeout=`` and client options in ``kw``."""
    timeout = kw.pop("timeout", 10.0)

    async def main() -> Any:
        async with ReactiveClient(url, **kw) as client:
            return await client.mutation(name, args, timeout=timeout)

    return asyncio.run(main())


def run_query(url: str, name: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
    """Connect, read one query's current value, close; for scripts."""
    timeout = kw.pop("timeout", 10.0)

    async def main() -> Any:
        async with ReactiveClient(url, **kw) as client:
            return await client.query(name, args, timeout=timeout)

    return asyncio.run(main())
