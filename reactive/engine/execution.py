"""Running functions: a query with its reads tracked, a mutation in one transaction, an action.

Every entry point returns JSON bytes (encoded once, inside the run) or raises a
``ProtocolError``; anything else a function raises becomes a ``server_error`` whose details go to
the log only (unless ``EXPOSE_ERRORS``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, OperationalError, connection, transaction

from ..backends import get_backend
from ..capture import commits, origin, tracking
from ..errors import BadMessage, InvalidArgs, ProtocolError, ServerError, error_from_dict
from ..functions import encoding
from ..functions.context import Context
from ..functions.registry import Function, get_function
from ..models import MutationRecord
from ..records import ReadSet
from ..settings import reactive_settings
from .instances import identity_of, instance_base

logger = logging.getLogger("reactive.execution")


@dataclass(slots=True)
class QueryRun:
    """One run of a query: its JSON payload (a value or an error object) and what it read."""

    payload: bytes
    is_error: bool
    read_set: ReadSet
    read_identity: bool


def server_error(function_name: str, exc: BaseException) -> ServerError:
    logger.error("%s raised %s", function_name, type(exc).__name__, exc_info=exc)
    if reactive_settings.EXPOSE_ERRORS:
        return ServerError(f"{function_name} raised {type(exc).__name__}: {exc}")
    return ServerError()


def run_query(function: Function, args: dict[str, Any], ctx: Context) -> QueryRun:
    """Run ``function`` with already validated ``args``, tracking its reads.

    The caller provides the transaction (the invalidator runs a whole batch in one snapshot).
    A savepoint per run keeps one failing query from breaking the others' snapshot.
    """
    with tracking.track_reads(function.name) as tracker:
        try:
            with transaction.atomic(savepoint=True):
                function.check_permission(ctx)
                payload = encoding.dumps_result(function.name, function.func(ctx, **args))
            is_error = False
        except ProtocolError as exc:
            payload, is_error = encoding.dumps(exc.as_dict()), True
        except Exception as exc:
            payload, is_error = encoding.dumps(server_error(function.name, exc).as_dict()), True
    return QueryRun(payload, is_error, tracker.read_set, ctx.read_identity)


def call_query(name: str, args: dict[str, Any], user: Any) -> Any:
    """Run a query once (HTTP, actions) and return its value; raises ``ProtocolError``."""
    function = get_function(name, "query")
    validated = function.validate_args(args)
    with transaction.atomic():
        run = run_query(function, validated, Context.for_user(user, kind="query"))
    value = encoding.loads(run.payload)
    if run.is_error:
        raise error_from_dict(value)
    return value


@dataclass(slots=True)
class MutationOutcome:
    payload: bytes
    version: int | None
    replayed: bool = False

    @property
    def value(self) -> Any:
        return encoding.loads(self.payload)


@dataclass(frozen=True, slots=True)
class ReplayKey:
    """Whose request a stored result answers: the caller's identity, session and request id.

    The identity is part of the key, so knowing another caller's ``session_id`` gives neither
    their results nor a way to answer their next mutation in advance.
    """

    identity: str
    session_id: str
    request_id: int


def replay_key(user: Any, session_id: str, request_id: int) -> ReplayKey:
    authenticated = user is not None and user.is_authenticated
    return ReplayKey(identity_of(user.pk if authenticated else None), session_id, request_id)


def fingerprint(name: str, args: dict[str, Any]) -> str:
    """The function and its arguments as sent (canonical JSON): what a replay must repeat.

    The arguments as sent, not as validated: a replay re-sends the same frame, and validated
    arguments may hold model instances whose encoding changes with their row, or fail to
    validate at all once the first attempt deleted the row they name.
    """
    try:
        return hashlib.sha256(instance_base(name, encoding.dumps_canonical(args))).hexdigest()
    except TypeError as exc:  # nested past orjson's 255 levels, or not JSON at all
        raise InvalidArgs(f"Arguments of {name} cannot be stored for replay: {exc}.") from None


def call_mutation(
    name: str,
    args: dict[str, Any],
    user: Any,
    *,
    session_id: str | None = None,
    request_id: int | None = None,
) -> MutationOutcome:
    """Run a mutation in one transaction; returns its payload and the commit's version.

    With a ``session_id`` the result is stored in the same transaction, so a mutation re-sent
    after a reconnect by the same caller, with the same function and arguments, returns the
    stored result instead of running again, even while the first attempt is still running on
    the old connection. The same request id reused for another function or other arguments is
    ``BadMessage``.
    """
    function = get_function(name, "mutation")
    if session_id is None or request_id is None:
        return _run_mutation(function, args, user, None)
    key = replay_key(user, session_id, request_id)
    request = fingerprint(function.name, args)
    with _running_lock:
        running = _running.get(key)
        if running is None:
            _running[key] = mine = threading.Event()
    if running is not None:
        running.wait(timeout=_REPLAY_WAIT_SECONDS)
        stored = _stored_outcome(key, request)
        # No stored result: the first attempt failed and committed nothing; run it now.
        return stored or call_mutation(name, args, user, session_id=session_id, request_id=request_id)
    try:
        stored = _stored_outcome(key, request)
        return stored or _run_mutation(function, args, user, (key, request))
    finally:
        with _running_lock:
            del _running[key]
        mine.set()


# Mutations with a session running in this process, for replays that race them.
_running: dict[ReplayKey, threading.Event] = {}
_running_lock = threading.Lock()
_REPLAY_WAIT_SECONDS = 120
# SQLite refuses a write in a transaction that began reading before another commit
# ("database is locked"): the attempt rolled back, so it is run again.
_SQLITE_ATTEMPTS = 8


def _stored_outcome(key: ReplayKey, request: str) -> MutationOutcome | None:
    """The stored result of this caller's request; ``BadMessage`` if it was another mutation."""
    stored = MutationRecord.lookup(key.identity, key.session_id, key.request_id)
    if stored is None:
        return None
    stored_request, payload = stored
    if stored_request != request:
        raise BadMessage(
            f"request_id {key.request_id} was already used in this session for another mutation "
            "or other arguments; send each new mutation with a new request_id."
        )
    return MutationOutcome(payload, get_backend().log.head(), replayed=True)


def _run_mutation(
    function: Function, args: dict[str, Any], user: Any, replay: tuple[ReplayKey, str] | None
) -> MutationOutcome:
    validated = function.validate_args(args)
    session_id = replay[0].session_id if replay is not None else None
    ctx = Context.for_user(user, kind="mutation", session_id=session_id)
    for attempt in range(_SQLITE_ATTEMPTS):
        try:
            with (
                origin.acting_as(f"mutation {function.name}"),
                commits.commit_versions() as published,
                transaction.atomic(),
            ):
                function.check_permission(ctx)
                payload = encoding.dumps_result(function.name, function.func(ctx, **validated))
                if replay is not None:
                    key, request = replay
                    MutationRecord.store(key.identity, key.session_id, key.request_id, request, payload)
            break
        except IntegrityError:
            # Stored meanwhile by another process serving the same caller: replay it.
            stored = _stored_outcome(*replay) if replay is not None else None
            if stored is None:
                raise
            return stored
        except OperationalError as exc:
            if connection.vendor != "sqlite" or "locked" not in str(exc) or attempt == _SQLITE_ATTEMPTS - 1:
                raise
            time.sleep(0.002 * 2**attempt)
    if published.last is not None:
        return MutationOutcome(payload, published.last)
    try:
        return MutationOutcome(payload, get_backend().log.head())
    except Exception:  # the log is unreachable; the result stands, without a version to wait for
        return MutationOutcome(payload, None)


def call_action(name: str, args: dict[str, Any], user: Any) -> bytes:
    """Run an action: no transaction, may call out, may run queries and mutations."""
    function = get_function(name, "action")
    validated = function.validate_args(args)
    ctx = ActionContext.for_user(user, kind="action")
    function.check_permission(ctx)
    with origin.acting_as(f"action {function.name}"):
        return encoding.dumps_result(function.name, function.func(ctx, **validated))


class ActionContext(Context):
    """``ctx`` in an action: it may run queries and mutations as the same caller."""

    def run_query(self, name: str, args: dict[str, Any] | None = None) -> Any:
        return call_query(name, args or {}, self.user)

    def run_mutation(self, name: str, args: dict[str, Any] | None = None) -> Any:
        return call_mutation(name, args or {}, self.user).value


def guarded(function_name: str, call, *args: Any, **kwargs: Any) -> Any:
    """Run ``call``; turn any non-protocol exception into a logged ``ServerError``."""
    try:
        return call(*args, **kwargs)
    except ProtocolError:
        raise
    except Exception as exc:
        raise server_error(function_name, exc) from exc
