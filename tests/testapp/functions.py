"""Functions only the test suite registers: drive writes and read the engine's counters
inside the server's process, and queries that exercise error and identity paths."""

from __future__ import annotations

import threading
import time
from typing import Any

from rest_framework import serializers
from rest_framework.permissions import IsAdminUser

from reactive import ReactiveError, action, mutation, query
from reactive.engine.execution import call_query
from tests import clock as test_clock
from tests import writes


@action(args={"path": serializers.CharField(), "kwargs": serializers.DictField(required=False, default=dict)})
def write(ctx: Any, path: str, kwargs: dict[str, Any]) -> Any:
    """Run one of ``tests.writes`` in the server's process.

    A write that fails (one that acts on a row a cascade deleted, say) answers its exception as a
    ``user_error``, so tests see why whatever the server's DEBUG.
    """
    try:
        return writes.run(path, **kwargs)
    except Exception as exc:
        raise ReactiveError(f"{type(exc).__name__}: {exc}") from exc


@action(args={"name": serializers.CharField(), "args": serializers.DictField(required=False, default=dict)})
def fresh(ctx: Any, name: str, args: dict[str, Any]) -> Any:
    """A fresh run of a query, as the oracle's reference value."""
    return call_query(name, args, ctx.user_or_none)


@action(
    args={
        "freeze": serializers.BooleanField(required=False, allow_null=True, default=None),
        "advance": serializers.FloatField(required=False, default=0.0),
    }
)
def clock(ctx: Any, freeze: bool | None, advance: float) -> float:
    """Freeze, move or thaw the server's rate-limit clock (tests/clock.py)."""
    return test_clock.control(freeze_it=freeze, advance_by=advance)


@action
def stats(ctx: Any) -> dict[str, Any]:
    """Runs per function and per instance since the server started."""
    from reactive.backends import get_backend

    invalidator = get_backend().invalidator
    if invalidator is None:
        return {"runs": {}, "instance_runs": {}, "instances": 0}
    return {
        "runs": dict(invalidator.runs),
        "instance_runs": dict(invalidator.instance_runs),
        "instances": len(invalidator.instances),
    }


@query(args={"kind": serializers.ChoiceField(["user_error", "crash", "write"])})
def fails(ctx: Any, kind: str) -> Any:
    from project.tasks.models import Task

    if kind == "user_error":
        raise ReactiveError("Failed on purpose.", {"kind": kind})
    if kind == "write":
        Task.objects.create(text="written by a query")
    raise RuntimeError("a bug in a query")


@query(args={"text": serializers.CharField()})
def task_or_error(ctx: Any, text: str) -> Any:
    """An error while no task has this text, the task's id once one has."""
    from project.tasks.models import Task

    task = Task.objects.filter(text=text).first()
    if task is None:
        raise ReactiveError("No such task yet.", {"text": text})
    return task.id


@query
def whoami(ctx: Any) -> str | None:
    """Reads the caller's identity: one instance per user."""
    return ctx.user.username if ctx.is_authenticated else None


@query(permission=lambda ctx: ctx.is_authenticated)
def members_only(ctx: Any) -> str:
    return "secret"


PERSONAL_FLAG = "make greetings personal"


@query
def greeting(ctx: Any) -> str:
    """Reads the caller's identity only while a certain task exists (data-dependent)."""
    from project.tasks.models import Task

    if Task.objects.filter(text=PERSONAL_FLAG).exists():
        return f"hello {ctx.user.username}" if ctx.is_authenticated else "hello stranger"
    return "hello everyone"


@action(args={"username": serializers.CharField(), "password": serializers.CharField()})
def make_admin(ctx: Any, username: str, password: str) -> None:
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser(username=username, password=password)


@query(permission=lambda ctx: ctx.is_authenticated and ctx.user.is_staff)
def staff_only(ctx: Any) -> str:
    return "staff secret"


@action(args={"username": serializers.CharField()})
def token_for(ctx: Any, username: str) -> str:
    """A sign-in token for a new user (tests of ``authenticate``)."""
    from django.contrib.auth import get_user_model

    from reactive.auth import make_token

    user, _ = get_user_model().objects.get_or_create(username=username)
    return make_token(user)


@query(args={"number": serializers.IntegerField(min_value=0, max_value=10)})
def echo(ctx: Any, number: int) -> int:
    return number


@mutation(args={"text": serializers.CharField()})
def add_task_then_fail(ctx: Any, text: str) -> None:
    from project.tasks.models import Task

    Task.objects.create(text=text)
    raise ReactiveError("Rolled back on purpose.")


@mutation(args={"text": serializers.CharField()})
def add_task_counted(ctx: Any, text: str) -> int:
    """A mutation whose runs are counted by the rows it leaves (for at-most-once tests)."""
    from project.tasks.models import Task

    return Task.objects.create(text=text).pk


@mutation(args={"text": serializers.CharField()}, permission=lambda ctx: ctx.is_authenticated)
def add_task_signed_in(ctx: Any, text: str) -> int:
    """A write only a signed-in user may make."""
    from project.tasks.models import Task

    return Task.objects.create(text=text).pk


@mutation(args={"text": serializers.CharField()}, permission=IsAdminUser)
def add_task_as_staff(ctx: Any, text: str) -> int:
    """A write only a staff user may make."""
    from project.tasks.models import Task

    return Task.objects.create(text=text).pk


@query(args={"text": serializers.CharField()})
def count_tasks(ctx: Any, text: str) -> int:
    """How many tasks have this text (did a refused mutation write anyway?)."""
    from project.tasks.models import Task

    return Task.objects.filter(text=text).count()


@action(args={"seconds": serializers.FloatField(min_value=0, max_value=5)})
def slow_action(ctx: Any, seconds: float) -> str:
    time.sleep(seconds)
    return "done"


# Actions that hold a thread until the test lets them go (the slow-actions isolation tests).
_gates: dict[str, threading.Event] = {}
_gates_lock = threading.Lock()


def _gate(key: str) -> threading.Event:
    with _gates_lock:
        return _gates.setdefault(key, threading.Event())


@action(
    args={
        "key": serializers.CharField(max_length=64),
        "padding": serializers.CharField(required=False, allow_blank=True, default=""),
    }
)
def wait_for_gate(ctx: Any, key: str, padding: str) -> str:
    """Block this call's thread until ``open_gate(key)`` (at most a minute)."""
    if not _gate(key).wait(timeout=60):
        raise ReactiveError(f"gate {key!r} was never opened")
    return key


@action(args={"key": serializers.CharField(max_length=64)})
def open_gate(ctx: Any, key: str) -> None:
    _gate(key).set()


@query(args={"kind": serializers.ChoiceField(["value", "error"])})
def big_number(ctx: Any, kind: str) -> int:
    """An integer beyond 64 bits, as a result or in an error's data."""
    if kind == "error":
        raise ReactiveError("A big number.", {"n": 10**30})
    return 10**30


class Weird:
    """A type JSON cannot hold."""


@query
def unencodable(ctx: Any) -> Any:
    return {"rows": [Weird()]}


@mutation
def unencodable_mutation(ctx: Any) -> Any:
    return Weird()


@action
def unencodable_action(ctx: Any) -> Any:
    return [Weird()]


# Query shapes reading some columns of the messages only (the oracle's column-aware cases) -------


@query(args={"channel": serializers.IntegerField()})
def ids_by_body(ctx: Any, channel: int) -> list[int]:
    """``body`` is read in ORDER BY only."""
    from project.chat.models import Message

    return list(
        Message.objects.filter(channel_id=channel).order_by("body", "id").values_list("id", flat=True)
    )


@query(args={"channel": serializers.IntegerField()})
def body_lengths(ctx: Any, channel: int) -> list[list[int]]:
    """``body`` is read in an annotation only."""
    from django.db.models.functions import Length

    from project.chat.models import Message

    rows = Message.objects.filter(channel_id=channel).annotate(n=Length("body")).order_by("id")
    return [list(row) for row in rows.values_list("id", "n")]


@query(args={"channel": serializers.IntegerField()})
def newest_with_channel_name(ctx: Any, channel: int) -> list[list[Any]]:
    """The two newest messages' ids with their channel's name, read through a join."""
    from project.chat.models import Message

    rows = Message.objects.filter(channel_id=channel).order_by("-created", "-id")[:2]
    return [list(row) for row in rows.values_list("id", "channel__name")]


@query(args={"channel": serializers.IntegerField()})
def edited_count(ctx: Any, channel: int) -> int:
    from project.chat.models import Message

    return Message.objects.filter(channel_id=channel, edited=True).count()
