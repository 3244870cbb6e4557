"""Where user code runs: a bounded pool of threads per process, shared fairly by connections.

Queries, mutations and actions are user code: they block on the database or on whatever an
action calls. They never run on the event loop, and never on the loop's default executor, which
Channels, the backend and the hub use for their own short work: a connection that sends slow
actions fills at most its share (``MAX_CONCURRENT_CALLS`` of its own calls at a time) of this
pool (``USER_CODE_THREADS`` threads), and the hub's heartbeats and deliveries never wait
behind it.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import close_old_connections

from ..settings import reactive_settings

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def user_code_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(
                    max_workers=reactive_settings.USER_CODE_THREADS, thread_name_prefix="reactive-call"
                )
    return _executor


def _with_connection_hygiene(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    close_old_connections()
    try:
        return func(*args, **kwargs)
    finally:
        close_old_connections()


async def run_user_code(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking user code (or database work) in the user-code pool and await its result."""
    loop = asyncio.get_running_loop()
    call = functools.partial(_with_connection_hygiene, func, *args, **kwargs)
    return await loop.run_in_executor(user_code_executor(), call)
