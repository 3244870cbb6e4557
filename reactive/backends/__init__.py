"""Stage 2, the backend: the change log, the read-set index, and how batches reach server processes.

``get_backend()`` returns the process-wide backend that ``REACTIVE["BACKEND"]`` names: ``"embedded"``,
``"redis"``, or the dotted path of a :class:`~reactive.backends.base.Backend` subclass (loaded
like Channels loads a channel layer). It is made again when that setting changes.
``sink`` is the capture stage's view of it: what live queries watch, and who to wake after a commit.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from ..settings import reactive_settings
from .base import Backend

ALIASES = {
    "embedded": "reactive.backends.embedded.EmbeddedBackend",
    "redis": "reactive.backends.redis.RedisBackend",
}

_backend: Backend | None = None
_lock = threading.Lock()


def get_backend() -> Backend:
    global _backend
    if _backend is None:
        with _lock:
            if _backend is None:
                backend = backend_class(reactive_settings.BACKEND)()
                backend.configured_as = _backend_setting()
                _backend = backend
    return _backend


def backend_class(name: str) -> type[Backend]:
    """The backend class a ``REACTIVE["BACKEND"]`` value names; the error says which setting failed."""
    path = ALIASES.get(name, name)
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise ImportError(
            f"Could not import {path!r} for REACTIVE['BACKEND']: {exc}. "
            f"Use {' or '.join(map(repr, ALIASES))}, or the dotted path of a Backend subclass."
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ImportError(f"REACTIVE['BACKEND'] {path!r} is not a reactive.backends.base.Backend subclass.")
    return cls


def reset_backend() -> None:
    """Stop and forget the backend; the next ``get_backend()`` makes a new one."""
    global _backend
    with _lock:
        if _backend is not None:
            _backend.close()
        _backend = None


def _backend_setting() -> tuple[Any, Any]:
    return reactive_settings.BACKEND, reactive_settings.REDIS_URL


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    # After the settings object reloaded (it connected first): a different backend or Redis
    # server means a new backend; other REACTIVE changes (limits) keep the running one.
    if setting != "REACTIVE" or _backend is None:
        return
    if getattr(_backend, "configured_as", None) != _backend_setting():
        reset_backend()


setting_changed.connect(_on_setting_changed)


class _BackendSink:
    """The capture stage's view of the current backend (``capture.commits.ChangeSink``)."""

    def committed(self, version: int) -> None:
        # Only a backend that exists has a tail to wake: a shell makes none for this.
        backend = _backend
        if backend is not None:
            backend.log_committed(version)

    def watched_columns(self, table: str) -> frozenset[str] | None:
        return get_backend().index.watched_columns(table)


sink = _BackendSink()

__all__ = ["Backend", "backend_class", "get_backend", "reset_backend", "sink"]
