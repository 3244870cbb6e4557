"""Just enough WebSocket and HTTP/1.1 for the load generator, on raw asyncio protocols.

The receiving side does as little as possible while a measurement runs: ``data_received`` stamps
``time.monotonic_ns()`` and keeps the bytes; frames are cut out of them and decoded afterwards
(``WebSocketClient.parse``), so what a receipt costs the load generator is one callback, not a
JSON decode. A frame's receipt time is the arrival of the bytes that completed it.

WebSocket (RFC 6455), client side only: the opening handshake, masked text frames out (a zero
mask: valid, and the payload goes out as is), unmasked server frames in (text, binary,
continuation, ping answered by a pong, close). HTTP/1.1: one keep-alive connection, one request
at a time, responses with ``Content-Length`` or chunked.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
ZERO_MASK = b"\x00\x00\x00\x00"

monotonic_ns = time.monotonic_ns


class HandshakeFailed(ConnectionError):
    """The server did not switch protocols."""


def frame_header(opcode: int, length: int) -> bytes:
    """A client frame's header: FIN, ``opcode``, the masked payload length and a zero mask."""
    if length < 126:
        return bytes((0x80 | opcode, 0x80 | length)) + ZERO_MASK
    if length < 1 << 16:
        return bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big") + ZERO_MASK
    return bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big") + ZERO_MASK


class FrameParser:
    """Server frames out of a byte stream: ``feed(t, data)`` returns the complete messages as
    ``(t, opcode, payload)``, ``t`` being the arrival of the chunk that completed each one."""

    __slots__ = ("_buffer", "_fragment_opcode", "_fragments")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0

    def feed(self, t: int, data: bytes) -> list[tuple[int, int, bytes]]:
        buffer = self._buffer
        buffer += data
        out: list[tuple[int, int, bytes]] = []
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            length, position = second & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    break
                length, position = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                if len(buffer) < 10:
                    break
                length, position = int.from_bytes(buffer[2:10], "big"), 10
            mask = b""
            if second & 0x80:  # servers never mask; tolerate it anyway
                mask, position = bytes(buffer[position : position + 4]), position + 4
            end = position + length
            if len(buffer) < end:
                break
            payload = bytes(buffer[position:end])
            del buffer[:end]
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode, fin = first & 0x0F, first & 0x80
            if opcode == OP_CONTINUATION:
                self._fragments.append(payload)
                if fin:
                    out.append((t, self._fragment_opcode, b"".join(self._fragments)))
                    self._fragments = []
            elif opcode in (OP_TEXT, OP_BINARY) and not fin:
                self._fragment_opcode, self._fragments = opcode, [payload]
            else:
                out.append((t, opcode, payload))
        return out


class WebSocketClient(asyncio.Protocol):
    """One client WebSocket. Bytes received after the handshake are kept in ``chunks`` with their
    arrival time until ``parse()`` turns them into ``messages`` (text and binary payloads with
    their receipt time); pings are answered then. ``on_message``, if given, parses on arrival
    instead (for the few sockets that wait for replies: writers, set-up)."""

    def __init__(
        self, host: str, port: int, path: str, on_message: Callable[[int, bytes], None] | None = None
    ):
        self.host, self.port, self.path = host, port, path
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.chunks: list[tuple[int, bytes]] = []
        self.messages: list[tuple[int, bytes]] = []
        self.parser = FrameParser()
        self.closed = False
        self.close_reason = ""
        self.bytes_in = 0  # bytes parsed so far: frames with their headers (TCP/IP headers aside)
        self.bytes_out = 0
        self._handshake = bytearray()

    # asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: http://{self.host}:{self.port}\r\n\r\n"
        ).encode()
        self.transport.write(request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        t = monotonic_ns()
        if self.opened.done():
            if self.on_message is None:
                self.chunks.append((t, data))  # all a receipt costs while measuring
            else:
                self._deliver(t, data)
            return
        self._handshake += data
        end = self._handshake.find(b"\r\n\r\n")
        if end < 0:
            return
        status = bytes(self._handshake[: self._handshake.find(b"\r\n")])
        rest = bytes(self._handshake[end + 4 :])
        self._handshake = bytearray()
        if b" 101 " not in status + b" ":
            self.opened.set_exception(HandshakeFailed(status.decode(errors="replace")))
            self.transport.close()  # type: ignore[union-attr]
            return
        self.opened.set_result(None)
        if rest:
            if self.on_message is None:
                self.chunks.append((t, rest))
            else:
                self._deliver(t, rest)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.close_reason = self.close_reason or (f"{type(exc).__name__}: {exc}" if exc else "closed")
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(self.close_reason))

    # Frames ------------------------------------------------------------------------------

    def send_text(self, text: str | bytes) -> None:
        payload = text.encode() if isinstance(text, str) else text
        self._send(OP_TEXT, payload)

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        header = frame_header(opcode, len(payload))
        self.transport.write(header + payload)
        self.bytes_out += len(header) + len(payload)

    def _frames(self, t: int, data: bytes) -> list[tuple[int, bytes]]:
        messages = []
        self.bytes_in += len(data)
        for t_frame, opcode, payload in self.parser.feed(t, data):
            if opcode in (OP_TEXT, OP_BINARY):
                messages.append((t_frame, payload))
            elif opcode == OP_PING:
                self._send(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.close_reason = f"closed by the server ({code})"
                self._send(OP_CLOSE, payload[:2])
                self.closed = True
        return messages

    def _deliver(self, t: int, data: bytes) -> None:
        for t_frame, payload in self._frames(t, data):
            self.on_message(t_frame, payload)  # type: ignore[misc]

    def parse(self) -> None:
        """Move every received chunk into ``messages`` (answering pings on the way)."""
        chunks, self.chunks = self.chunks, []
        for t, data in chunks:
            self.messages.extend(self._frames(t, data))

    def last_arrival(self) -> int:
        return self.chunks[-1][0] if self.chunks else 0

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send(OP_CLOSE, (1000).to_bytes(2, "big"))
            self.transport.close()


async def open_websocket(
    host: str,
    port: int,
    path: str,
    on_message: Callable[[int, bytes], None] | None = None,
    timeout: float = 60,
) -> WebSocketClient:
    """A connected ``WebSocketClient`` whose handshake succeeded."""
    loop = asyncio.get_running_loop()
    _, protocol = await asyncio.wait_for(
        loop.create_connection(lambda: WebSocketClient(host, port, path, on_message), host, port), timeout
    )
    await asyncio.wait_for(protocol.opened, timeout)
    return protocol


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: ``request()`` sends one request and returns its
    response's arrival time, status and body."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, int, bytes]] | None = None
        self.closed = False
        self.bytes_in = 0
        self.bytes_out = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        t = monotonic_ns()
        self._buffer += data
        self.bytes_in += len(data)
        response = self._response()
        if response is not None and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((t, *response))

    def _response(self) -> tuple[int, bytes] | None:
        """A complete response cut from the buffer: (status, body), or None if incomplete."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if "content-length" in headers:
            stop = start + int(headers["content-length"])
            if len(buffer) < stop:
                return None
            body = bytes(buffer[start:stop])
            del buffer[:stop]
            return status, body
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body_parts, position = [], start
            while True:
                line_end = buffer.find(b"\r\n", position)
                if line_end < 0:
                    return None
                size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
                chunk_start = line_end + 2
                if len(buffer) < chunk_start + size + 2:
                    return None
                body_parts.append(bytes(buffer[chunk_start : chunk_start + size]))
                position = chunk_start + size + 2
                if size == 0:
                    del buffer[:position]
                    return status, b"".join(body_parts)
        return None  # a response delimited by the connection's close: not used here

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        timeout: float = 60,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, int, bytes]:
        """(arrival ns, status, body) of one request's response; ``headers`` added to the usual."""
        if self.closed or self.transport is None:
            raise ConnectionError("connection closed")
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAccept: application/json\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
        ).encode()
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(head + body)
        self.bytes_out += len(head) + len(body)
        try:
            return await asyncio.wait_for(self._waiter, timeout)
        finally:
            self._waiter = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_http(host: str, port: int, timeout: float = 30) -> HttpConnection:
    loop = asyncio.get_running_loop()
    _, protocol = await asyncio.wait_for(
        loop.create_connection(lambda: HttpConnection(host, port), host, port), timeout
    )
    return protocol
