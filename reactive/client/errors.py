"""``ReactiveClientError``: the one exception the client raises for a protocol-level failure.

It carries the protocol's error object (PROTOCOL.md, "Server → client") as the server sent it,
or one the client made itself (``closed``, ``connection_lost``). Timeouts are ``TimeoutError``
and handshake failures are what ``websockets`` raises; this module does not wrap them.
"""

from __future__ import annotations

from typing import Any

from .frames import Frame


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
