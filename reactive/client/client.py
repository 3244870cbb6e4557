"""``ReactiveClient``: one session with a reactive server; ``run_query``/``run_mutation``.

Holds the session (its id, the identity token, what a fresh connection re-sends), the public
API (``subscribe``, ``query``, ``mutation``, ``action``, ``authenticate``, ``ping``) and what
each received frame means. The connection's states are ``lifecycle.py``'s (the base class),
the socket ``connection.py``'s, pending requests ``requests.py``'s, live queries
``subscription.py``'s. No test instrumentation lives here: ``reactive.client.testing``
observes the wire through the three methods under "extension points".
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any, Self

from .connection import Connection
from .errors import ReactiveClientError
from .frames import PROTOCOL_VERSION, Frame, MalformedFrame, decode, short
from .lifecycle import ConnectionLifecycle
from .requests import RequestTracker
from .subscription import Subscription, SubscriptionSet, subscribe_frame

logger = logging.getLogger("reactive.client")


class ReactiveClient(ConnectionLifecycle):
    """A client for one WebSocket to a reactive server.

    ``url`` is the WebSocket URL (e.g. ``ws://localhost:8000/reactive/ws/``). ``headers`` are
    sent with the handshake (e.g. a ``Cookie`` with a Django session, an ``Origin``); when they
    carry no ``Origin`` one is derived from ``url`` (``http://host:port``), since servers
    check it against ``ALLOWED_HOSTS``. ``session_id`` defaults to a random 22-character
    urlsafe string, stable for the client's lifetime (mutation replay relies on it).
    ``ws_options`` are extra keyword arguments for ``websockets.asyncio.client.connect``.

    Public state: ``connected`` (the last ``connected`` frame), ``version`` (highest
    transition version seen on the current connection), ``reconnects``, ``errors`` (``error``
    frames that concern no subscription or pending request).
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
        super().__init__(
            url,
            headers=headers,
            reconnect=reconnect,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            ws_options=ws_options,
        )
        self.session_id = session_id if session_id is not None else secrets.token_urlsafe(16)
        self.send_connect = send_connect
        self.client_name = client_name
        self.connect_timeout = connect_timeout

        self.connected: Frame | None = None
        self.version = 0
        self.errors: list[Frame] = []

        self._subscriptions = SubscriptionSet()
        self._requests = RequestTracker()
        self._token: str | None = None
        self._token_set = False

    def __repr__(self) -> str:
        state = "ready" if self.is_connected else "closed" if self._closed else "disconnected"
        return f"<ReactiveClient {self.url} session={self.session_id} {state}>"

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def subscriptions(self) -> dict[int, Subscription]:
        """The live subscriptions by id (a copy)."""
        return self._subscriptions.by_id()

    # -- what each step of the connection states does (lifecycle.py) ----------------------

    async def _handshake(self, conn: Connection) -> None:
        self.version = 0  # versions are per connection (PROTOCOL.md guarantee 4)
        if not self.send_connect:
            return
        frame: Frame = {"type": "connect", "protocol": PROTOCOL_VERSION, "session_id": self.session_id}
        if self.client_name:
            frame["client"] = self.client_name
        self._enqueue(conn, frame)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await asyncio.shield(conn.handshake)
        except TimeoutError:
            raise TimeoutError(
                f"Timed out after {self.connect_timeout}s waiting for 'connected' from {self.url}"
            ) from None

    def _on_ready(self, conn: Connection) -> None:
        if self._token_set:
            self._enqueue(conn, {"type": "authenticate", "token": self._token})
        for frame in self._subscriptions.subscribe_frames():
            self._enqueue(conn, frame)
        for frame in self._requests.resend_on(conn):
            self._enqueue(conn, frame)

    def _on_lost(self, conn: Connection) -> None:
        self._requests.lose_actions(conn)

    def _fail_all(self, exc: ReactiveClientError, *, end_reason: str) -> None:
        self._requests.fail_all(exc)
        self._stopped(exc)
        self._subscriptions.end_all(end_reason, exc if end_reason == "connection_lost" else None)

    # -- extension points ------------------------------------------------------------------
    # Overridden by reactive.client.testing.InstrumentedClient to log frames, wait for them and
    # record violations: the instrumented client then runs exactly this class's code.

    def _frame_received(self, frame: Frame) -> None:
        """Every received frame, after the client handled it (even if handling raised)."""

    def _protocol_violation(self, description: str) -> None:
        """The server broke PROTOCOL.md; the offending frame or update was ignored."""
        logger.warning("reactive protocol violation: %s", description)

    def _stopped(self, exc: ReactiveClientError) -> None:
        """The client stopped for good (closed, or lost with reconnect off); ``exc`` says why."""

    # -- receiving -----------------------------------------------------------------------

    def _handle_message(self, conn: Connection, message: str | bytes) -> None:
        try:
            frame = decode(message)
        except MalformedFrame as exc:
            self._protocol_violation(str(exc))
            return
        handler = self._handlers.get(frame["type"])
        try:
            if handler is not None:
                handler(self, conn, frame)
        finally:
            self._frame_received(frame)

    def _on_connected(self, conn: Connection, frame: Frame) -> None:
        self.connected = frame
        if not conn.handshake.done():
            conn.handshake.set_result(frame)

    def _on_transition(self, conn: Connection, frame: Frame) -> None:
        version = frame.get("version")
        updates = frame.get("updates")
        if not isinstance(version, int) or not isinstance(updates, list):
            self._protocol_violation(f"malformed transition: {short(frame)}")
            return
        if version < conn.version:
            self._protocol_violation(
                f"transition version {version} is lower than {conn.version} seen before on this connection"
            )
        else:
            conn.version = version
            self.version = version
        self._subscriptions.apply_transition(version, updates, self._protocol_violation)

    def _on_result(self, conn: Connection, frame: Frame) -> None:
        self._requests.resolve(frame)

    def _on_error(self, conn: Connection, frame: Frame) -> None:
        handshaking = not conn.handshake.done() and self.send_connect
        if handshaking and "id" not in frame and "request_id" not in frame:
            self.errors.append(frame)  # the server refused `connect`: _open() raises it
            conn.handshake.set_exception(ReactiveClientError.from_error(frame.get("error"), frame=frame))
            return
        if "id" in frame:
            sub = self._subscriptions.get(frame["id"])
            if sub is not None:
                sub._apply(error=frame.get("error"), is_error=True, version=None)
                sub._wake()
                return
        if "request_id" in frame and self._requests.reject(frame):
            return
        self.errors.append(frame)

    def _on_pong(self, conn: Connection, frame: Frame) -> None:
        self._requests.pong()

    _handlers: dict[str, Callable[[ReactiveClient, Connection, Frame], None]] = {
        "connected": _on_connected,
        "transition": _on_transition,
        "mutation_result": _on_result,
        "action_result": _on_result,
        "error": _on_error,
        "pong": _on_pong,
    }

    # -- subscriptions -------------------------------------------------------------------

    def subscribe(self, name: str, args: dict[str, Any] | None = None) -> Subscription:
        """Start a live query. The ``subscribe`` frame goes out now if connected, else on connect.

        Ids are ints from 1 up, never reused by this client.
        """
        self._check_usable()
        sub = self._subscriptions.add(self, name, args)
        self._send_if_ready(subscribe_frame(sub))
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if self._subscriptions.remove(sub):
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
        request = self._requests.start(kind, name, args)
        request.conn = self._send_if_ready(request.frame)
        try:
            async with asyncio.timeout(timeout):
                return await request.future
        except TimeoutError:
            raise TimeoutError(
                f"Timed out after {timeout}s waiting for the result of {kind} {name!r} "
                f"(request_id {request.request_id})"
            ) from None
        finally:
            self._requests.finish(request)

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
        ``errors``). Later frames are processed after it, in order.
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
        ping = self._requests.add_ping()
        self._send_if_ready({"type": "ping"})
        answer, _ = ping
        try:
            async with asyncio.timeout(timeout):
                return await answer
        except TimeoutError:
            raise TimeoutError(f"Timed out after {timeout}s waiting for 'pong'") from None
        finally:
            self._requests.drop_ping(ping)


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
