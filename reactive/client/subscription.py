"""Subscriptions: ``Subscription``, one live query as its caller holds it, and ``SubscriptionSet``,
the client's live subscriptions by id.

A ``Subscription`` keeps the query's current value or error and wakes whoever waits on it; the
set allocates ids, applies a ``transition``'s updates and says what a fresh connection must
subscribe again. Neither sends frames: ``client.py`` sends ``subscribe`` and ``unsubscribe``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from .errors import ReactiveClientError
from .frames import Frame, short

if TYPE_CHECKING:
    from .client import ReactiveClient

SUBSCRIPTION_HISTORY_SIZE = 10_000

Predicate = Callable[[Any], bool]


class _Ended(Exception):
    """Internal: a subscription waiter was woken because the subscription ended."""


class Subscription:
    """A live query. An async iterator of its values.

    Attributes (kept up to date by the client's reader task):

    - ``id``, ``name``, ``args``: what was subscribed.
    - ``value``: the last value received (kept when an error arrives afterwards).
    - ``error``: the current error object ``{"code", "message", "data"?}``, or ``None`` while
      the current state is a value.
    - ``version``: the version of the transition that carried the last update, or ``None``.
    - ``has_value``: whether a value was ever received.
    - ``updates``: how many updates (values or errors) were received.

    Every method that hands a value to the caller (``first``, ``wait_for``, ``next``,
    ``__anext__``) marks the current update as seen; iteration then yields only later updates,
    one per update received (none is skipped once iteration started).
    """

    def __init__(self, client: ReactiveClient, sub_id: int, name: str, args: dict[str, Any]) -> None:
        self.client = client
        self.id = sub_id
        self.name = name
        self.args = args
        self.value: Any = None
        self.error: dict[str, Any] | None = None
        self.version: int | None = None
        self.has_value = False
        self.updates = 0
        self._seen = 0  # update number last handed to the caller
        self._recording = False
        self._history: deque[tuple[int, dict[str, Any] | None, Any]] = deque(maxlen=SUBSCRIPTION_HISTORY_SIZE)
        self._waiters: list[asyncio.Future[None]] = []
        self._ended: str | None = None  # "unsubscribed", "closed" or "connection_lost"
        self._end_exc: ReactiveClientError | None = None

    def __repr__(self) -> str:
        state = f"error={self.error!r}" if self.error else f"value={short(self.value, 80)}"
        return f"<Subscription {self.id} {self.name} {self.args!r} updates={self.updates} {state}>"

    @property
    def live(self) -> bool:
        """Whether the subscription is still active (not unsubscribed, client not closed)."""
        return self._ended is None

    # -- called by the client -------------------------------------------------------------

    def _apply(self, *, value: Any = None, error: Any = None, is_error: bool, version: int | None) -> None:
        self.updates += 1
        if is_error:
            self.error = error if isinstance(error, dict) else {"code": "bad_message", "message": repr(error)}
        else:
            self.value = value
            self.error = None
            self.has_value = True
        if version is not None:
            self.version = version
        if self._recording:
            self._history.append((self.updates, self.error, self.value))

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _end(self, reason: str, exc: ReactiveClientError | None = None) -> None:
        if self._ended is None:
            self._ended = reason
            self._end_exc = exc
        self._wake()

    # -- waiting -------------------------------------------------------------------------

    async def _changed(self) -> None:
        if self._ended is not None:
            raise _Ended
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)

    def _ended_error(self) -> ReactiveClientError:
        if self._end_exc is not None:
            return self._end_exc
        return ReactiveClientError(
            self._ended or "closed", f"Subscription {self.id} ({self.name}) is {self._ended or 'closed'}"
        )

    def _mark_seen(self) -> None:
        self._seen = self.updates
        self._history.clear()

    def _current(self) -> Any:
        if self.error is not None:
            raise ReactiveClientError.from_error(self.error)
        return self.value

    def _describe(self) -> str:
        state = f"error {self.error!r}" if self.error else f"value {short(self.value)}"
        if not self.updates:
            state = "no update yet"
        return f"subscription {self.id} {self.name}({short(self.args, 120)}); last: {state}"

    async def first(self, timeout: float | None = 10.0) -> Any:
        """The current value once there is one (right after ``subscribe``: the initial value).

        Raises ``ReactiveClientError`` if the current state is an error, ``TimeoutError`` if
        nothing arrives in time.
        """
        try:
            async with asyncio.timeout(timeout):
                while not self.updates:
                    try:
                        await self._changed()
                    except _Ended:
                        raise self._ended_error() from None
        except TimeoutError:
            raise TimeoutError(
                f"Timed out after {timeout}s waiting for the first value of {self._describe()}"
            ) from None
        self._mark_seen()
        return self._current()

    async def wait_for(self, predicate: Predicate, timeout: float | None = 10.0) -> Any:
        """Wait until the current value satisfies ``predicate`` and return it.

        The current value is checked first. Error states are skipped (errors are values that
        may be replaced by a later update); the ``TimeoutError`` message shows the last state.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if self.has_value and self.error is None and predicate(self.value):
                        self._mark_seen()
                        return self.value
                    try:
                        await self._changed()
                    except _Ended:
                        raise self._ended_error() from None
        except TimeoutError:
            raise TimeoutError(
                f"Timed out after {timeout}s waiting for a value matching the predicate on {self._describe()}"
            ) from None

    async def next(self, timeout: float | None = 10.0) -> Any:
        """Like ``__anext__`` with a timeout: the next update not yet seen."""
        try:
            async with asyncio.timeout(timeout):
                return await self.__anext__()
        except TimeoutError:
            raise TimeoutError(
                f"Timed out after {timeout}s waiting for the next update of {self._describe()}"
            ) from None
        except StopAsyncIteration:
            raise self._ended_error() from None

    def __aiter__(self) -> AsyncIterator[Any]:
        self._start_recording()
        return self

    def _start_recording(self) -> None:
        if not self._recording:
            self._recording = True
            if self.updates > self._seen:
                self._history.append((self.updates, self.error, self.value))

    async def __anext__(self) -> Any:
        """The next update not yet seen: its value, or ``ReactiveClientError`` for an error.

        The subscription stays live after an error: iterate again to get later updates. Ends
        (``StopAsyncIteration``) on ``unsubscribe`` or ``close``; raises
        ``ReactiveClientError("connection_lost")`` if the connection died for good.
        """
        self._start_recording()
        while True:
            while self._history and self._history[0][0] <= self._seen:
                self._history.popleft()
            if self._history:
                seq, error, value = self._history.popleft()
                self._seen = seq
                if error is not None:
                    raise ReactiveClientError.from_error(error)
                return value
            if self.updates > self._seen:  # history overflowed: give the current state
                self._seen = self.updates
                return self._current()
            try:
                await self._changed()
            except _Ended:
                if self._ended == "connection_lost":
                    raise self._ended_error() from None
                raise StopAsyncIteration from None

    async def unsubscribe(self) -> None:
        """Stop the live query (idempotent). Iterators end, waiters raise."""
        if self._ended is not None:
            return
        self.client._unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.unsubscribe()


def subscribe_frame(sub: Subscription) -> Frame:
    return {"type": "subscribe", "id": sub.id, "query": sub.name, "args": sub.args}


class SubscriptionSet:
    """The client's live subscriptions by id. Ids are ints from 1 up, never reused."""

    def __init__(self) -> None:
        self._live: dict[int, Subscription] = {}
        self._next_id = 1

    def add(self, client: ReactiveClient, name: str, args: dict[str, Any] | None) -> Subscription:
        sub = Subscription(client, self._next_id, name, dict(args or {}))
        self._next_id += 1
        self._live[sub.id] = sub
        return sub

    def remove(self, sub: Subscription) -> bool:
        """Forget ``sub``; False if it was not live."""
        return self._live.pop(sub.id, None) is not None

    def get(self, sub_id: Any) -> Subscription | None:
        return self._live.get(sub_id)

    def by_id(self) -> dict[int, Subscription]:
        return dict(self._live)

    def subscribe_frames(self) -> Iterator[Frame]:
        """A ``subscribe`` for every live subscription, same ids: for a fresh connection."""
        for sub in self._live.values():
            yield subscribe_frame(sub)

    def apply_transition(self, version: int, updates: list[Any], violation: Callable[[str], None]) -> None:
        """Apply a ``transition``'s updates, then wake waiters.

        Every subscription is updated before any waiter is woken, so a waiter sees the whole
        transition (PROTOCOL.md guarantee 5). An update for an id that was unsubscribed is
        dropped (it was in flight); malformed updates and ids never used go to ``violation``.
        """
        touched: list[Subscription] = []
        for update in updates:
            if not isinstance(update, dict) or "id" not in update:
                violation(f"malformed update in transition {version}: {short(update)}")
                continue
            sub = self._live.get(update["id"])
            if sub is None:
                if not isinstance(update["id"], int) or not 0 < update["id"] < self._next_id:
                    violation(f"update for a subscription id never used: {update['id']!r}")
                continue
            if "error" in update:
                sub._apply(error=update["error"], is_error=True, version=version)
            elif "value" in update:
                sub._apply(value=update["value"], is_error=False, version=version)
            else:
                violation(f"update without value or error in transition {version}: {short(update)}")
                continue
            touched.append(sub)
        for sub in touched:
            sub._wake()

    def end_all(self, reason: str, exc: ReactiveClientError | None) -> None:
        """End every subscription (the client stopped): iterators end, waiters raise."""
        subs = list(self._live.values())
        self._live.clear()
        for sub in subs:
            sub._end(reason, exc)
