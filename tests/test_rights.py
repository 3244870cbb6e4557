"""Current rights (ARCHITECTURE.md invariant 8): an open socket is only as trusted as its user is now.

A user signs in, with the session cookie of the WebSocket handshake or with a token in an
``authenticate`` frame. Then, while the socket stays open, the server logs them out, deactivates
them, changes their password or takes their staff status away (in the server's process, as a view
or the admin would). The socket's next mutation or action must run as Django would run a request
with that session or token now, and its subscriptions that read the user must be pushed their new
value without the client sending anything.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import import_module
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from reactive.backends import get_backend
from reactive.backends.base import Ensure
from reactive.backends.embedded import EmbeddedBackend
from reactive.client import ReactiveClient, ReactiveClientError, Subscription
from reactive.engine.invalidator import Invalidator
from tests.test_http_api import assert_failed, assert_ok, post

# (how the user signs in, the write in the server's process that ends the sign-in)
ENDINGS = [
    ("session", "log_out"),
    ("session", "deactivate"),
    ("token", "deactivate"),
    ("session", "change_password"),
    ("token", "change_password"),
]


@asynccontextmanager
async def signed_in(
    harness: Any, how: str, *, staff: bool = False
) -> AsyncIterator[tuple[ReactiveClient, dict]]:
    """A new user, and a socket signed in as them by its session cookie or by a token."""
    user = await harness.write("sign_in", username="rights", staff=staff)
    cookie = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={user['session_key']}"}
    async with harness.client(headers=cookie if how == "session" else {}) as client:
        if how == "token":
            await client.authenticate(user["token"])
        assert await client.query("testapp.whoami") == user["username"]
        yield client, user


async def end_sign_in(harness: Any, ending: str, user: dict) -> None:
    if ending == "log_out":
        await harness.write("log_out", session_key=user["session_key"])
    else:
        await harness.write(ending, user_id=user["user_id"])


async def wait_for_error(subscription: Subscription, code: str) -> None:
    """Until the subscription is pushed an error with this code (each update within 10 s)."""
    while True:
        try:
            await subscription.next(timeout=10)
        except ReactiveClientError as error:
            if error.code == code:
                return


async def refused_authenticate(client: ReactiveClient, token: str) -> dict:
    """Send ``authenticate`` with a token the server must refuse; its ``error`` frame."""
    mark = client.frames_received
    await client.authenticate(token)
    return await client.next_frame(lambda frame: frame["type"] == "error", since=mark)


def unique_text() -> str:
    return f"rights {uuid.uuid4().hex[:10]}"


# Mutations and actions run as the user is now -------------------------------------------------


@pytest.mark.parametrize(("how", "ending"), ENDINGS)
async def test_mutation_and_action_after_the_sign_in_ended_run_as_nobody(harness, how, ending):
    async with signed_in(harness, how) as (client, user):
        text = unique_text()
        await client.mutation("testapp.add_task_signed_in", {"text": f"{text}, while signed in"})
        await end_sign_in(harness, ending, user)
        with pytest.raises(ReactiveClientError) as refused:
            await client.mutation("testapp.add_task_signed_in", {"text": text})
        assert refused.value.code == "unauthenticated"
        assert await harness.fresh("testapp.count_tasks", {"text": text}) == 0
        # testapp.fresh is an action: it runs whoami as its caller.
        assert await client.action("testapp.fresh", {"name": "testapp.whoami"}) is None


async def test_mutation_after_the_session_expired_runs_as_nobody(harness):
    # An expiry writes nothing that could be pushed: only the check before the call sees it.
    async with signed_in(harness, "session") as (client, user):
        text = unique_text()
        await client.mutation("testapp.add_task_signed_in", {"text": f"{text}, while signed in"})
        await harness.write("expire_session", session_key=user["session_key"])
        with pytest.raises(ReactiveClientError) as refused:
            await client.mutation("testapp.add_task_signed_in", {"text": text})
        assert refused.value.code == "unauthenticated"
        assert await harness.fresh("testapp.count_tasks", {"text": text}) == 0
        assert await client.query("testapp.whoami") is None


@pytest.mark.parametrize("how", ["session", "token"])
async def test_staff_mutation_is_forbidden_once_staff_status_is_revoked(harness, how):
    async with signed_in(harness, how, staff=True) as (client, user):
        staff_only = client.subscribe("testapp.staff_only")
        assert await staff_only.first() == "staff secret"
        text = unique_text()
        await client.mutation("testapp.add_task_as_staff", {"text": f"{text}, while staff"})
        await end_sign_in(harness, "revoke_staff", user)
        await wait_for_error(staff_only, "forbidden")
        with pytest.raises(ReactiveClientError) as refused:
            await client.mutation("testapp.add_task_as_staff", {"text": text})
        assert refused.value.code == "forbidden"
        assert await harness.fresh("testapp.count_tasks", {"text": text}) == 0
        # Still signed in: only the right was taken away.
        assert await client.query("testapp.whoami") == user["username"]


# Subscriptions follow, without the client asking ---------------------------------------------


@pytest.mark.parametrize(("how", "ending"), ENDINGS)
async def test_subscriptions_that_read_the_user_are_pushed_as_nobody_when_the_sign_in_ends(
    harness, how, ending
):
    async with signed_in(harness, how) as (client, user):
        whoami = client.subscribe("testapp.whoami")
        members = client.subscribe("testapp.members_only")
        assert await whoami.first() == user["username"]
        assert await members.first() == "secret"
        await end_sign_in(harness, ending, user)
        # The client sends nothing more: the write alone must reach the socket.
        await whoami.wait_for(lambda value: value is None)
        await wait_for_error(members, "unauthenticated")


# Tokens -------------------------------------------------------------------------------------


async def test_token_made_before_a_password_change_no_longer_authenticates(harness):
    user = await harness.write("sign_in", username="token")
    whoami = {"name": "testapp.whoami", "args": {}}
    assert_ok(await post(harness, "query", whoami, token=user["token"]), user["username"])
    await harness.write("change_password", user_id=user["user_id"])
    async with harness.client() as client:
        error = await refused_authenticate(client, user["token"])
        assert error["error"]["code"] == "unauthenticated"
        assert await client.query("testapp.whoami") is None
    assert_failed(await post(harness, "query", whoami, token=user["token"]), 401, "unauthenticated")


async def test_refused_token_after_a_sign_in_leaves_the_socket_anonymous(harness):
    async with signed_in(harness, "token") as (client, user):
        whoami = client.subscribe("testapp.whoami")
        assert await whoami.first() == user["username"]
        error = await refused_authenticate(client, "not a token")
        assert error["error"]["code"] == "unauthenticated"
        await whoami.wait_for(lambda value: value is None)
        with pytest.raises(ReactiveClientError) as refused:
            await client.mutation("testapp.add_task_signed_in", {"text": unique_text()})
        assert refused.value.code == "unauthenticated"


# Below the socket: what the log carries, and how re-runs load the user ------------------------


@pytest.mark.django_db(transaction=True)
def test_a_deleted_session_is_logged_as_revoked_and_a_saved_one_not_at_all():
    log = get_backend().log
    start = log.head()
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session["visits"] = 1
    session.create()
    session["visits"] = 2
    session.save()
    assert log.head() == start  # a request's session save costs the log nothing
    key = session.session_key
    session.delete()
    (record,) = log.read_after(start, 10)
    assert record.revoked == frozenset({f"session:{key}"})
    # The session table stays ignored: it re-runs no query.
    assert record.rows == () and record.opaque_tables == frozenset()


@pytest.mark.django_db(transaction=True)
def test_a_query_that_reads_the_user_runs_as_nobody_once_the_user_is_inactive():
    user = get_user_model().objects.create_user(username=f"inactive-{uuid.uuid4().hex[:8]}", is_active=False)
    backend = EmbeddedBackend()
    try:
        invalidator = Invalidator(backend, backend.log.head())
        backend.submit(Ensure(1, "hub.rights", "testapp.whoami", {}, user.pk))
        assert invalidator.step(timeout=0)
        (instance,) = invalidator.instances.values()
        assert instance.identity_bound and instance.payload == b"null"
    finally:
        backend.close()
