"""One WebSocket to the server: opening it, and the tasks that read and write it.

Holds ``open_socket`` (origin, headers, options) and ``Connection`` (the socket, the queue of
messages to write, the reader and writer tasks, detaching and closing). It does not know what a
frame means, nor what happens when a socket drops: received messages and the end of the socket
go to the callbacks the client gives (``lifecycle.py`` for the states, ``client.py`` for frames).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .errors import ReactiveClientError
from .frames import Frame

logger = logging.getLogger("reactive.client")

CLOSE_TIMEOUT = 2.0

Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]


def default_origin(url: str) -> str:
    """``http://host[:port]`` (``https`` for ``wss``) from a WebSocket URL."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme in ("wss", "https") else "http"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return f"{scheme}://{netloc}"


async def open_socket(url: str, headers: dict[str, str], options: dict[str, Any]) -> ClientConnection:
    """Open the WebSocket; raises what ``websockets`` raises when the handshake fails.

    No size limit on received messages: the server bounds what it sends. An ``Origin`` derived
    from ``url`` unless ``headers`` carry one, since servers check it against ``ALLOWED_HOSTS``.
    ``options`` (the client's ``ws_options``) override both.
    """
    kwargs: dict[str, Any] = {"max_size": None}
    if headers:
        kwargs["additional_headers"] = headers
    if not any(key.lower() == "origin" for key in headers):
        kwargs["origin"] = default_origin(url)
    kwargs.update(options)
    return await connect(url, **kwargs)


class Connection:
    """One WebSocket, the queue of messages to write, and the tasks reading and writing it.

    The reader hands every message to ``on_message(conn, message)`` and, when the socket ends,
    calls ``on_end(conn, cancelled)`` unless the connection was detached first. ``cancelled``
    says the reader was cancelled from outside (the event loop shutting down) rather than the
    socket closing. One writer task writes in the order of ``send``, so callers never block.

    ``handshake`` resolves with the ``connected`` frame; ``ready`` is set by the client once the
    session state was re-sent; ``detached`` means the client no longer uses this connection and
    anything it still receives is ignored; ``version`` is the highest transition version the
    client saw on it (PROTOCOL.md guarantee 4 holds per connection).
    """

    def __init__(
        self,
        ws: ClientConnection,
        *,
        on_message: Callable[[Connection, str | bytes], None],
        on_end: Callable[[Connection, bool], None],
    ) -> None:
        self.ws = ws
        self.handshake: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self.ready = False
        self.detached = False
        self.version = 0
        self._on_message = on_message
        self._on_end = on_end
        self._outbox: asyncio.Queue[tuple[str | bytes, bool, asyncio.Future[None] | None]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    def start(self, spawn: Spawn) -> None:
        """Start the reader and writer with ``spawn(coroutine, name)`` (the client tracks them)."""
        self._reader = spawn(self._read(), "reactive-client-reader")
        self._writer = spawn(self._write(), "reactive-client-writer")

    def send(
        self, data: str | bytes, *, text: bool = True, written: asyncio.Future[None] | None = None
    ) -> None:
        """Queue ``data`` (a text frame, or binary with ``text=False``); ``written`` resolves once
        it is written, or fails with ``connection_lost``."""
        self._outbox.put_nowait((data, text, written))

    def detach(self) -> None:
        """Stop using this connection: stop writing, fail what was not written and the handshake."""
        self.detached = True
        self.ready = False
        if self._writer is not None:
            self._writer.cancel()
        while not self._outbox.empty():
            _, _, written = self._outbox.get_nowait()
            if written is not None and not written.done():
                written.set_exception(
                    ReactiveClientError("connection_lost", "Connection lost before the frame was sent")
                )
        if not self.handshake.done():
            self.handshake.set_exception(
                ReactiveClientError("connection_lost", "Connection lost during the handshake")
            )
            self.handshake.exception()  # retrieved: no "exception was never retrieved" warning

    async def close(self) -> None:
        """Close the socket (waiting at most ``CLOSE_TIMEOUT``) and stop both tasks."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.close()
        current = asyncio.current_task()
        tasks = [task for task in (self._reader, self._writer) if task is not None and task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if self.detached:
                    break
                try:
                    self._on_message(self, message)
                except Exception:
                    logger.exception("reactive client: error while handling a frame")
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            # Cancelled from outside (e.g. the event loop shutting down): don't reconnect.
            if not self.detached:
                self._on_end(self, True)
            raise
        if not self.detached:
            self._on_end(self, False)

    async def _write(self) -> None:
        while True:
            data, text, written = await self._outbox.get()
            try:
                await self.ws.send(data, text=text)
            except (ConnectionClosed, asyncio.CancelledError) as exc:
                # Cancelled by detach() mid-send: the frame being written fails like the queued ones.
                if written is not None and not written.done():
                    written.set_exception(
                        ReactiveClientError("connection_lost", "Connection lost while sending")
                    )
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return  # the reader notices the loss
            if written is not None and not written.done():
                written.set_result(None)
