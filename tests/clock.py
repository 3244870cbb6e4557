"""The rate limit's clock in the test servers (``REACTIVE["CLOCK"]`` in tests/settings.py).

It runs with ``time.monotonic`` until a test freezes it; then it moves only when the test moves
it, so a flood is limited by the count of frames, never by how fast the machine drains them.
"""

from __future__ import annotations

import threading
import time

_lock = threading.Lock()
_frozen_at: float | None = None
_offset = 0.0


def now() -> float:
    frozen = _frozen_at
    return frozen if frozen is not None else time.monotonic() + _offset


def freeze() -> None:
    global _frozen_at
    with _lock:
        if _frozen_at is None:
            _frozen_at = now()


def advance(seconds: float) -> None:
    global _frozen_at, _offset
    with _lock:
        if _frozen_at is not None:
            _frozen_at += seconds
        else:
            _offset += seconds


def thaw() -> None:
    """Run again from where the frozen clock stood (it never goes back)."""
    global _frozen_at, _offset
    with _lock:
        if _frozen_at is not None:
            _offset = max(_offset, _frozen_at - time.monotonic())
            _frozen_at = None


def control(*, freeze_it: bool | None = None, advance_by: float = 0.0) -> float:
    """Freeze (True), thaw (False) and/or advance the clock; return its time."""
    if freeze_it is True:
        freeze()
    if advance_by:
        advance(advance_by)
    if freeze_it is False:
        thaw()
    return now()
