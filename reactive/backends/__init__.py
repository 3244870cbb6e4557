"""The backend: the change log and the read-set index, and how batches reach server processes.

``get_backend()`` returns the process-wide backend chosen by ``REACTIVE["BACKEND"]``.
"""

from __future__ import annotations

import threading

from ..settings import reactive_settings
from .base import Backend

_backend: Backend | None = None
_lock = threading.Lock()


def get_backend() -> Backend:
    global _backend
    if _backend is None:
        with _lock:
            if _backend is None:
                _backend = _create(reactive_settings.BACKEND)
    return _backend


def _create(name: str) -> Backend:
    if name == "embedded":
        from .embedded import EmbeddedBackend

        return EmbeddedBackend()
    if name == "redis":
        from .redis import RedisBackend  # type: ignore[import-not-found]

        return RedisBackend()
    raise ValueError(f"Unknown REACTIVE['BACKEND'] {name!r}: use 'embedded' or 'redis'.")


def reset_backend() -> None:
    """Stop and forget the backend (tests switch settings with this)."""
    global _backend
    with _lock:
        if _backend is not None:
            _backend.close()
        _backend = None


__all__ = ["Backend", "get_backend", "reset_backend"]
