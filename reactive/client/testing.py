"""``InstrumentedClient``: the ``ReactiveClient`` that tests and benchmarks use, with the wire in view.

It keeps a log of received frames (``frames``, ``frames_received``), waits for a frame by
predicate (``next_frame``), sends frames as they are, malformed ones included (``send_raw``),
calls back on every received frame (``on_frame``: receipt timestamps in the benchmarks) and
records what the server did against PROTOCOL.md (``protocol_violations``: tests assert it stays
empty). It changes nothing in how the client behaves: it only overrides the client's extension
points (``_frame_received``, ``_protocol_violation``, ``_stopped``), so a test exercises the
product's code. Not named ``TestClient``: pytest would try to collect that from test modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from .client import ReactiveClient
from .errors import ReactiveClientError
from .frames import Frame, encode

__all__ = ["InstrumentedClient"]

logger = logging.getLogger("reactive.client")

FRAME_LOG_SIZE = 10_000

FramePredicate = Callable[[Frame], bool]


class InstrumentedClient(ReactiveClient):
    """A ``ReactiveClient`` that also records what it receives and can send anything.

    Takes the same arguments. Adds ``frames`` (bounded log of received frames, oldest first),
    ``frames_received`` and ``protocol_violations`` (descriptions of server behaviour that
    breaks PROTOCOL.md; the offending frame or update was ignored, and a warning logged).
    """

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.frames: deque[Frame] = deque(maxlen=FRAME_LOG_SIZE)
        self.protocol_violations: list[str] = []
        self._frame_seq = 0  # frames received so far: the last frame in the log has this number
        self._frame_waiters: list[tuple[FramePredicate | None, int, asyncio.Future[Frame]]] = []
        self._callbacks: list[Callable[[Frame], Any]] = []

    @property
    def frames_received(self) -> int:
        """How many frames were received so far (a mark for ``next_frame(since=...)``)."""
        return self._frame_seq

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
            data: str | bytes = encode(frame)
            text = True
        else:
            data, text = frame, isinstance(frame, str)
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.send(data, text=text, written=written)
        await written

    async def next_frame(
        self,
        predicate: FramePredicate | None = None,
        timeout: float | None = 10.0,
        *,
        since: int | None = None,
    ) -> Frame:
        """The next received frame (any type) that matches ``predicate``.

        By default only frames received after the call count. Pass ``since=mark`` with
        ``mark = client.frames_received`` taken earlier to also consider frames received
        after that mark (still in the log).
        """
        start = self._frame_seq if since is None else since
        first_logged = self._frame_seq - len(self.frames) + 1
        for frame in itertools.islice(self.frames, max(0, start + 1 - first_logged), None):
            if predicate is None or predicate(frame):
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

    # -- ReactiveClient's extension points -------------------------------------------------

    def _frame_received(self, frame: Frame) -> None:
        self._frame_seq += 1
        self.frames.append(frame)
        if self._frame_waiters:
            self._notify_frame_waiters(self._frame_seq, frame)
        for callback in self._callbacks:
            try:
                callback(frame)
            except Exception:
                logger.exception("reactive client: on_frame callback failed")

    def _protocol_violation(self, description: str) -> None:
        super()._protocol_violation(description)
        self.protocol_violations.append(description)

    def _stopped(self, exc: ReactiveClientError) -> None:
        for _, _, fut in self._frame_waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._frame_waiters.clear()

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
