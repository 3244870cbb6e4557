"""System checks for a new project's mistakes, each with a stable id and a hint saying what to do.

- reactive.W001/W004: no ASGI_APPLICATION, or one that does not route WebSockets to the consumer;
- reactive.W005: no "daphne" in INSTALLED_APPS, so runserver is WSGI (checked in a subprocess:
  changing INSTALLED_APPS in-process would run the apps' ready() again);
- reactive.E005: a function whose signature does not fit its ``args=``; calling it answers the
  same reason instead of a bare TypeError.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings
from rest_framework import serializers

from harness.processes import ROOT, django_env
from reactive.engine.execution import call_mutation, call_query
from reactive.errors import ServerError
from reactive.functions import registry


def reactive_messages(ids: set[str] | None = None) -> list[Any]:
    return [m for m in run_checks() if m.id.startswith("reactive.") and (ids is None or m.id in ids)]


# -- the ASGI application ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("application", "says"),
    [
        ("tests.asgi_variants.django_only", "does not route WebSocket connections"),
        ("tests.asgi_variants.without_websocket", 'without a "websocket" entry'),
        ("tests.asgi_variants.other_consumer", "not to reactive.routing.websocket_urlpatterns"),
        ("tests.asgi_variants.missing", "cannot be imported"),
    ],
)
def test_an_asgi_application_that_does_not_route_the_socket_gets_w004(application: str, says: str) -> None:
    with override_settings(ASGI_APPLICATION=application):
        [message] = reactive_messages({"reactive.W004"})
    assert says in message.msg, message.msg
    assert application in message.msg
    assert (
        "URLRouter([*reactive.routing.websocket_urlpatterns, reactive.routing.not_found_route])"
        in message.hint
    )


@pytest.mark.parametrize("application", ["project.asgi.application", "tests.asgi_variants.wrapped"])
def test_an_asgi_application_routing_the_socket_passes(application: str) -> None:
    with override_settings(ASGI_APPLICATION=application):
        assert reactive_messages({"reactive.W001", "reactive.W004"}) == []


def test_no_asgi_application_gets_w001_with_what_to_set() -> None:
    with override_settings(ASGI_APPLICATION=None):
        [message] = reactive_messages({"reactive.W001", "reactive.W004"})
    assert message.id == "reactive.W001"
    assert 'ASGI_APPLICATION = "<your project>.asgi.application"' in message.hint


def check_output(tmp_path: Path, settings_code: str) -> str:
    """``manage.py check`` of tests.settings changed by ``settings_code``: what it printed."""
    (tmp_path / "changed_settings.py").write_text("from tests.settings import *  # noqa\n" + settings_code)
    env = django_env("changed_settings", REDIS_URL=None, DATABASE_URL=None)
    env["PYTHONPATH"] = f"{ROOT}:{tmp_path}"
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    return done.stdout + done.stderr


def test_no_daphne_in_installed_apps_gets_w005(tmp_path: Path) -> None:
    output = check_output(tmp_path, 'INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "daphne"]\n')
    assert "(reactive.W005)" in output, output
    assert 'Add "daphne" as the first entry of INSTALLED_APPS' in output, output
    assert '"reactive.W005" to SILENCED_SYSTEM_CHECKS' in output, output


def test_the_demo_and_test_settings_pass_the_new_checks() -> None:
    assert reactive_messages({"reactive.W004", "reactive.W005", "reactive.E005"}) == []


# -- function signatures ---------------------------------------------------------------------------


@pytest.fixture
def registered() -> Iterator[Any]:
    """Register functions for one test, and forget them after it."""
    names: list[str] = []

    def register(kind: str, func: Any, args: Any = None) -> str:
        name = f"checks_test.{func.__name__}"
        registry.register(kind, func, args=args, name=name, permission=None)
        names.append(name)
        return name

    yield register
    for name in names:
        registry._functions.pop(name, None)


ID_FIELD = {"id": serializers.IntegerField()}


def test_args_naming_a_parameter_the_function_lacks_is_e005_and_refused_when_called(registered) -> None:
    def remove(ctx, pk):
        pass

    name = registered("mutation", remove, ID_FIELD)
    [message] = reactive_messages({"reactive.E005"})
    assert message.obj == name
    assert f"The mutation {name} (" in message.msg and "test_checks.py, line" in message.msg
    assert "args= names 'id', which the function does not take" in message.msg, message.msg
    assert "It requires 'pk', which args= does not name" in message.msg, message.msg
    assert "f(ctx, **args)" in message.hint
    with pytest.raises(SystemCheckError, match=r"reactive\.E005"):
        call_command("check")
    # Called anyway (a server that skips the checks): the same reason, not a TypeError.
    with pytest.raises(ServerError) as raised:
        call_mutation(name, {"id": 1}, None)
    assert raised.value.message.startswith(f"{name} cannot be called: args= names 'id'"), raised.value.message


def test_a_function_without_ctx_is_e005(registered) -> None:
    def count(id):
        return id

    name = registered("query", count, ID_FIELD)
    [message] = reactive_messages({"reactive.E005"})
    assert "It does not take ctx: its first parameter must be ctx" in message.msg, message.msg
    with pytest.raises(ServerError, match="does not take ctx"):
        call_query(name, {"id": 1}, None)


def test_an_optional_argument_without_any_default_is_e005(registered) -> None:
    def search(ctx, text):
        return text

    registered("query", search, {"text": serializers.CharField(required=False)})
    [message] = reactive_messages({"reactive.E005"})
    assert "args= makes 'text' optional without a default" in message.msg, message.msg


@pytest.mark.django_db
def test_fitting_signatures_pass(registered) -> None:
    def one(ctx, id):
        return id

    def defaults(ctx, id, limit=10, *, text="x"):
        return id

    def anything(ctx, **kwargs):
        return kwargs

    def optional(ctx, text=None):
        return text

    registered("query", one, ID_FIELD)
    registered("query", defaults, {**ID_FIELD, "text": serializers.CharField()})
    registered("mutation", anything, ID_FIELD)
    registered("query", optional, {"text": serializers.CharField(required=False)})
    assert reactive_messages({"reactive.E005"}) == []
    assert call_query("checks_test.defaults", {"id": 3, "text": "y"}, None) == 3
