"""PROTOCOL.md, version 1, as code: frame validation and the server's frames.

``parse_frame`` turns a client frame into a dict whose fields have the documented types, or
raises ``BadMessage`` naming what is wrong. The builders return the text of a server frame;
results arrive here already encoded, so they are spliced in rather than encoded again.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import BadMessage, ProtocolError
from ..functions import encoding

PROTOCOL_VERSION = 1
MAX_ID = 2**53 - 1


class _Optional:
    def __init__(self, kind: Any, default: Any = None) -> None:
        self.kind = kind
        self.default = default


# type -> field -> expected type (an _Optional may be absent or null).
CLIENT_FRAMES: dict[str, dict[str, Any]] = {
    "connect": {"protocol": int, "session_id": str, "client": _Optional(str)},
    "subscribe": {"id": int, "query": str, "args": _Optional(dict, {})},
    "unsubscribe": {"id": int},
    "mutation": {"request_id": int, "name": str, "args": _Optional(dict, {})},
    "action": {"request_id": int, "name": str, "args": _Optional(dict, {})},
    "authenticate": {"token": _Optional(str)},
    "ping": {},
}

_TYPE_NAMES = {int: "an integer", str: "a string", dict: "an object"}


def parse_frame(text: str | bytes) -> dict[str, Any]:
    """The frame as a dict with fields of the documented types, or ``BadMessage``.

    A ``BadMessage`` about a JSON object carries ``frame_ref``: the frame's valid ``id`` or
    ``request_id``, which the error frame names.
    """
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadMessage(f"Frame is not valid JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise BadMessage("Frame must be a JSON object.")
    try:
        _validate(frame)
    except BadMessage as error:
        error.frame_ref = reference_of(frame)  # type: ignore[attr-defined]
        raise
    return frame


def _validate(frame: dict[str, Any]) -> None:
    frame_type = frame.get("type")
    fields = CLIENT_FRAMES.get(frame_type) if isinstance(frame_type, str) else None
    if fields is None:
        raise BadMessage(f"Unknown frame type {frame_type!r}.")
    for name, expected in fields.items():
        optional = isinstance(expected, _Optional)
        kind = expected.kind if optional else expected
        value = frame.get(name)
        if value is None:
            if optional:
                frame[name] = expected.default
                continue
            raise BadMessage(f"Missing field {name!r} in {frame_type!r} frame.")
        if not isinstance(value, kind) or (kind is int and not _is_id(value)):
            what = _TYPE_NAMES[kind] + (" from 0 to 2**53-1" if kind is int else "")
            raise BadMessage(f"Field {name!r} of {frame_type!r} must be {what}.")
    if frame_type == "connect":
        if frame["protocol"] != PROTOCOL_VERSION:
            raise BadMessage(f"Unsupported protocol {frame['protocol']}; this server speaks 1.")
        if not 8 <= len(frame["session_id"]) <= 64:
            raise BadMessage("session_id must be 8 to 64 characters long.")


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def reference_of(frame: Any) -> dict[str, int]:
    """The ``id`` or ``request_id`` an error about ``frame`` should carry, if it has a valid one."""
    if isinstance(frame, dict):
        for key in ("id", "request_id"):
            value = frame.get(key)
            if _is_id(value):
                return {key: value}
    return {}


def dumps(frame: dict[str, Any]) -> str:
    """A frame's text. Never fails on what a client sent: integers beyond 64 bits in an error's
    data are encoded too (``encoding.dumps``)."""
    return encoding.dumps(frame).decode()


def error_frame(error: ProtocolError, **reference: int) -> str:
    return dumps({"type": "error", "error": error.as_dict(), **reference})


def entry_tail(payload: bytes, is_error: bool) -> str:
    """What follows the id in an update entry of this encoded value (or error)."""
    return f',"{"error" if is_error else "value"}":{payload.decode()}}}'


def entry(sub_id: int, tail: str) -> str:
    """One entry of a transition's ``updates``: ``{"id": sub_id, "value": ...}``."""
    return f'{{"id":{sub_id}{tail}'


def transition_frame(version: int, entries: list[str]) -> str:
    return f'{{"type":"transition","version":{version},"updates":[{",".join(entries)}]}}'


def mutation_result_frame(request_id: int, payload: bytes, version: int) -> str:
    return dumps(
        {
            "type": "mutation_result",
            "request_id": request_id,
            "ok": True,
            "value": orjson.Fragment(payload),
            "version": version,
        }
    )


def action_result_frame(request_id: int, payload: bytes) -> str:
    return dumps(
        {"type": "action_result", "request_id": request_id, "ok": True, "value": orjson.Fragment(payload)}
    )


def failed_result_frame(frame_type: str, request_id: int, error: ProtocolError) -> str:
    return dumps({"type": frame_type, "request_id": request_id, "ok": False, "error": error.as_dict()})
