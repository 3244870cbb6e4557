"""The connection's states: connecting, losing the socket, reconnecting with backoff, closing.

Holds ``ConnectionLifecycle``, the base class of ``ReactiveClient`` that owns the current
``Connection`` and its tasks and moves between the states drawn below, and the reconnect policy
(``reconnect_with_backoff``: exponential backoff with full jitter). What happens at each step
(the handshake, what a fresh connection re-sends, what a lost one orphans, what each received
frame does) is the client's, through the methods ``ConnectionLifecycle`` leaves to it.
"""

# The connection states (``ConnectionLifecycle``; "opening" is ``_open``):
#
#                       connect(), reconnect_now()
#   +--------------+ -------------------------------> +---------+  `connected` received  +-------+
#   | disconnected |                                  | opening | ---------------------> | ready |
#   +--------------+ <-- handshake failed: connect()  +---------+  (at once without      +-------+
#          ^             or reconnect_now() raises     |     ^     send_connect)             |
#          |                                           |     |                               |
#          |          handshake failed in the loop     v     | sleep, full jitter            | socket
#          |                                      +-------------+                            | closed
#          |                                      | backing off | <------ reconnect on ------+
#          |                                      +-------------+                            |
#          +------------ reconnect off: everything pending fails with `connection_lost` -----+
#
# - Entering ready, the client re-sends its session (``_on_ready``): `authenticate` if it was
#   ever called, `subscribe` for every live subscription, every pending mutation with the same
#   request_id (the server answers a replay from its stored result), every pending ping.
# - Leaving ready because the socket closed fails the actions in flight on it with
#   `connection_lost` (``_on_lost``): they are never replayed.
# - reconnect_now(), in any state but closed: leaves ready as above, then opening at once; if
#   opening fails it raises and, with reconnect on, goes on backing off.
# - close(), in any state: closed for good; everything pending fails with `closed`.

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .connection import Connection, open_socket
from .errors import ReactiveClientError
from .frames import Frame, encode

logger = logging.getLogger("reactive.client")


async def reconnect_with_backoff(
    open_connection: Callable[[], Awaitable[None]],
    *,
    initial: float,
    maximum: float,
    stopped: Callable[[], bool],
    url: str,
) -> bool:
    """Call ``open_connection`` until it succeeds (True) or ``stopped()`` (False).

    Before attempt n (from 0) it sleeps uniformly in ``[0, min(maximum, initial * 2**n)]``:
    full jitter, so that the clients of a restarted server do not all come back at once.
    """
    attempt = 0
    cap = min(maximum, initial)
    while not stopped():
        await asyncio.sleep(random.uniform(0, cap))
        # Doubled from the last cap, not computed as initial * 2**attempt: that int overflows a
        # float after 1,024 attempts (a few hours of an unreachable server) and kills the loop.
        cap = min(maximum, cap * 2)
        attempt += 1
        try:
            await open_connection()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.debug("reconnect attempt %d to %s failed: %r", attempt, url, exc)
            continue
        logger.debug("reconnected to %s after %d attempt(s)", url, attempt)
        return True
    return False


class ConnectionLifecycle:
    """The states drawn at the top of this module, as the base class of ``ReactiveClient``.

    It owns the current ``Connection`` and the tasks, opens, loses, reopens and closes. What
    happens at each step is the subclass's: ``_handshake`` (after the socket opened),
    ``_on_ready`` (re-send the session), ``_on_lost`` (what a lost connection orphans),
    ``_fail_all`` (everything pending, when the client stops) and ``_handle_message``.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None,
        reconnect: bool,
        backoff_initial: float,
        backoff_max: float,
        ws_options: dict[str, Any] | None,
    ) -> None:
        self.url = url
        self.headers = dict(headers or {})
        self.reconnect = reconnect
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.ws_options = dict(ws_options or {})
        self.reconnects = 0

        self._conn: Connection | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False  # close() called
        self._dead: ReactiveClientError | None = None  # connection lost for good

    @property
    def is_connected(self) -> bool:
        """Whether a connection is open and its handshake is done."""
        return self._conn is not None and self._conn.ready

    # -- left to the subclass ------------------------------------------------------------

    async def _handshake(self, conn: Connection) -> None:
        """Opening, once the socket is open; raising fails the opening."""
        raise NotImplementedError

    def _on_ready(self, conn: Connection) -> None:
        """Entering ready (``conn.ready`` is set). Synchronous, so nothing is sent in between."""
        raise NotImplementedError

    def _on_lost(self, conn: Connection) -> None:
        """Leaving ready because the socket of ``conn`` closed."""
        raise NotImplementedError

    def _fail_all(self, exc: ReactiveClientError, *, end_reason: str) -> None:
        """The client stopped (``closed``, or ``connection_lost`` with reconnect off)."""
        raise NotImplementedError

    def _handle_message(self, conn: Connection, message: str | bytes) -> None:
        """A message received on ``conn`` (called by its reader task, one at a time)."""
        raise NotImplementedError

    # -- transitions ---------------------------------------------------------------------

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
            await conn.close()
        self._fail_all(exc, end_reason="closed")
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def reconnect_now(self) -> None:
        """Drop the current connection and reconnect at once (no backoff), as after a drop.

        Subscriptions are re-sent, pending mutations replayed with the same ``request_id``,
        in-flight actions fail with ``connection_lost``. Returns once the new connection is
        ready; if it cannot be opened, raises (and, with ``reconnect``, keeps retrying).
        """
        if self._closed:
            raise RuntimeError("This ReactiveClient is closed")
        self._dead = None
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
            self._reconnect_task = None
        conn = self._conn
        if conn is not None:
            self._connection_lost(conn, schedule=False)
            await conn.close()
        try:
            await self._open()
        except Exception:
            if self.reconnect and not self._closed:
                self._start_reconnect_loop()
            raise
        self.reconnects += 1

    async def _open(self) -> None:
        ws = await open_socket(self.url, self.headers, self.ws_options)
        conn = Connection(ws, on_message=self._handle_message, on_end=self._connection_ended)
        self._conn = conn
        conn.start(self._spawn)
        try:
            await self._handshake(conn)
        except BaseException:
            if self._conn is conn:
                self._detach(conn)
            await conn.close()
            raise
        if conn.detached:
            raise ReactiveClientError("connection_lost", "Connection lost during the handshake")
        conn.ready = True
        self._on_ready(conn)

    def _detach(self, conn: Connection) -> None:
        conn.detach()
        if self._conn is conn:
            self._conn = None

    def _connection_ended(self, conn: Connection, cancelled: bool) -> None:
        if cancelled:  # the event loop is going away: nothing to reconnect for
            self._detach(conn)
        else:
            self._connection_lost(conn)

    def _connection_lost(self, conn: Connection, *, schedule: bool = True) -> None:
        """The socket of a ready (or handshaking) connection went away."""
        was_ready = conn.ready
        self._detach(conn)
        if self._closed or not was_ready:
            return  # close() or _open() handles it
        self._on_lost(conn)
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
        reconnected = await reconnect_with_backoff(
            self._open,
            initial=self.backoff_initial,
            maximum=self.backoff_max,
            stopped=lambda: self._closed,
            url=self.url,
        )
        if reconnected:
            self.reconnects += 1

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- sending on the current connection -------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise ReactiveClientError("closed", "Client closed")
        if self._dead is not None:
            raise self._dead

    def _enqueue(self, conn: Connection, frame: Frame) -> None:
        conn.send(encode(frame))

    def _send_if_ready(self, frame: Frame) -> Connection | None:
        """Send ``frame`` if the current connection is ready and return it, else ``None``: the
        session state the frame carries goes out with ``_on_ready`` once a connection is."""
        conn = self._conn
        if conn is not None and conn.ready:
            self._enqueue(conn, frame)
            return conn
        return None
