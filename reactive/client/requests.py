"""Requests waiting for an answer: mutations and actions (by ``request_id``) and pings (in order).

Holds each request's frame and the future its caller awaits; answers them from result and error
frames; says what a fresh connection must send again; fails what a lost connection orphans. It
sends nothing itself (``client.py`` sends the frames it returns) and holds no subscription: a
one-off query is a subscription that ends after its first value (``ReactiveClient.query``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .errors import ReactiveClientError
from .frames import Frame

if TYPE_CHECKING:
    from .connection import Connection

Ping = tuple["asyncio.Future[float]", float]  # (answered with the round trip, perf_counter at send)


class PendingRequest:
    """A mutation or action sent (or to be sent) and not answered yet."""

    __slots__ = ("conn", "frame", "future", "kind", "name", "request_id")

    def __init__(
        self, kind: str, request_id: int, name: str, frame: Frame, future: asyncio.Future[Frame]
    ) -> None:
        self.kind = kind
        self.request_id = request_id
        self.name = name
        self.frame = frame
        self.future = future
        self.conn: Connection | None = None  # the connection it was last sent on


class RequestTracker:
    """The client's pending requests and pings. Request ids count from 1, never reused."""

    def __init__(self) -> None:
        self._next_id = 1
        self._pending: dict[int, PendingRequest] = {}
        self._pings: deque[Ping] = deque()

    def start(self, kind: str, name: str, args: dict[str, Any] | None) -> PendingRequest:
        """Register a ``mutation`` or ``action`` with the next request id; the caller sends it."""
        request_id = self._next_id
        self._next_id += 1
        frame: Frame = {"type": kind, "request_id": request_id, "name": name, "args": dict(args or {})}
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        request = PendingRequest(kind, request_id, name, frame, future)
        self._pending[request_id] = request
        return request

    def finish(self, request: PendingRequest) -> None:
        """Forget a request its caller stopped waiting for (answered, failed or timed out)."""
        self._pending.pop(request.request_id, None)

    def resolve(self, frame: Frame) -> None:
        """Answer the request a ``mutation_result`` or ``action_result`` names (if still pending)."""
        request = self._pending.pop(frame.get("request_id"), None)  # type: ignore[arg-type]
        if request is not None and not request.future.done():
            request.future.set_result(frame)

    def reject(self, frame: Frame) -> bool:
        """Fail the request an ``error`` frame names; False if no such request is pending."""
        request = self._pending.pop(frame["request_id"], None)
        if request is None:
            return False
        if not request.future.done():
            request.future.set_exception(ReactiveClientError.from_error(frame.get("error"), frame=frame))
        return True

    def resend_on(self, conn: Connection) -> list[Frame]:
        """What a fresh connection must carry, in order: every pending mutation (the server
        answers a replayed ``request_id`` from its stored result), every request never sent
        (made while disconnected), and one ``ping`` per unanswered ping. Actions in flight on a
        lost connection were failed by ``lose_actions``: they are never replayed."""
        frames = []
        for request in self._pending.values():
            if request.kind == "mutation" or request.conn is None:
                request.conn = conn
                frames.append(request.frame)
        frames.extend({"type": "ping"} for _ in self._pings)
        return frames

    def lose_actions(self, conn: Connection) -> None:
        """Fail the actions in flight on ``conn``, which is gone: no one knows if they ran."""
        lost = ReactiveClientError("connection_lost", "Connection lost while action was in flight")
        for request_id, request in list(self._pending.items()):
            if request.kind == "action" and request.conn is conn:
                del self._pending[request_id]
                if not request.future.done():
                    request.future.set_exception(lost)

    def fail_all(self, exc: ReactiveClientError) -> None:
        """Fail every pending request and ping with ``exc`` (the client stopped)."""
        for request in self._pending.values():
            if not request.future.done():
                request.future.set_exception(exc)
        self._pending.clear()
        while self._pings:
            future, _ = self._pings.popleft()
            if not future.done():
                future.set_exception(exc)

    # -- pings: a `pong` carries no id, so it answers the oldest pending ping -----------------

    def add_ping(self) -> Ping:
        ping: Ping = (asyncio.get_running_loop().create_future(), time.perf_counter())
        self._pings.append(ping)
        return ping

    def drop_ping(self, ping: Ping) -> None:
        with contextlib.suppress(ValueError):
            self._pings.remove(ping)

    def pong(self) -> None:
        if self._pings:
            future, started = self._pings.popleft()
            if not future.done():
                future.set_result(time.perf_counter() - started)
