"""Frames on this side of the wire: the type, encoding, decoding, and a short form for messages.

Decoding checks only what every frame must be (a JSON object with a string ``type``); what each
type means is the client's (``client.py``), and the fields are PROTOCOL.md's. Holds no state.
"""

from __future__ import annotations

from typing import Any

import orjson

PROTOCOL_VERSION = 1

Frame = dict[str, Any]


class MalformedFrame(ValueError):
    """A received message that is not a frame; the text says how, for the violation report."""


def encode(frame: Frame) -> bytes:
    return orjson.dumps(frame)


def decode(message: str | bytes) -> Frame:
    """The frame in a received message; ``MalformedFrame`` if it is not one."""
    try:
        frame = orjson.loads(message)
    except orjson.JSONDecodeError:
        raise MalformedFrame(f"received a frame that is not JSON: {short(message)}") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise MalformedFrame(f"received a frame that is not an object with a type: {short(frame)}")
    return frame


def short(value: Any, limit: int = 300) -> str:
    """``repr(value)`` cut to ``limit`` characters: frames can be megabytes, messages should not."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
