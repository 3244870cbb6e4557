"""Running functions: a query with its reads tracked, a mutation in one transaction, an action.

Every entry point returns JSON bytes (encoded once, inside the run) or raises a
``ProtocolError``; anything else a function raises becomes a ``server_error`` whose details go to
the log only (unless ``EXPOSE_ERRORS``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction

from . import capture, encoding, tracking
from .context import Context
from .errors import ProtocolError, ServerError
from .readsets import ReadSet
from .registry import Function, get_function
from .settings import reactive_settings

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
    with tracking.track_reads() as tracker:
        try:
            with transaction.atomic(savepoint=True):
                function.check_permission(ctx)
                payload = encoding.dumps(function.func(ctx, **args))
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
        raise _error_from_dict(value)
    return value


@dataclass(slots=True)
class MutationOutcome:
    payload: bytes
    version: int | None
    replayed: bool = False

    @property
    def value(self) -> Any:
        return encoding.loads(self.payload)


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
    after a reconnect returns the stored result instead of running again.
    """
    from .backends import get_backend
    from .models import MutationRecord

    function = get_function(name, "mutation")
    if session_id is not None and request_id is not None:
        stored = MutationRecord.lookup(session_id, request_id)
        if stored is not None:
            return MutationOutcome(stored, get_backend().log.head(), replayed=True)
    validated = function.validate_args(args)
    ctx = Context.for_user(user, kind="mutation", session_id=session_id)
    try:
        with capture.commit_versions() as commits, transaction.atomic():
            function.check_permission(ctx)
            payload = encoding.dumps(function.func(ctx, **validated))
            if session_id is not None and request_id is not None:
                MutationRecord.store(session_id, request_id, payload)
    except IntegrityError:
        # The same (session, request) stored concurrently by another connection: replay it.
        stored = MutationRecord.lookup(session_id, request_id) if session_id else None
        if stored is None:
            raise
        return MutationOutcome(stored, get_backend().log.head(), replayed=True)
    version = commits.last if commits.last is not None else get_backend().log.head()
    return MutationOutcome(payload, version)


def call_action(name: str, args: dict[str, Any], user: Any) -> bytes:
    """Run an action: no transaction, may call out, may run queries and mutations."""
    function = get_function(name, "action")
    validated = function.validate_args(args)
    ctx = Context.for_user(user, kind="action")
    function.check_permission(ctx)
    return encoding.dumps(function.func(ctx, **validated))


def guarded(function_name: str, call, *args: Any, **kwargs: Any) -> Any:
    """Run ``call``; turn any non-protocol exception into a logged ``ServerError``."""
    try:
        return call(*args, **kwargs)
    except ProtocolError:
        raise
    except Exception as exc:
        raise server_error(function_name, exc) from exc


def _error_from_dict(error: dict[str, Any]) -> ProtocolError:
    exc = ProtocolError(error.get("message"), error.get("data"))
    exc.code = error.get("code", "server_error")
    return exc
