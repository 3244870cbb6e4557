"""The demo apps' functions (chat.*, tasks.*), called as the engine calls them."""

from __future__ import annotations

import datetime
from io import StringIO
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.management import call_command
from django.db import transaction
from django.db.models.query import QuerySet

import project.chat.functions
import project.tasks.functions
from project.chat.models import Channel, Message
from project.tasks.models import Task
from reactive.errors import Forbidden, InvalidArgs, ReactiveError, Unauthenticated
from reactive.functions.context import Context
from reactive.functions.registry import get_function

T0 = datetime.datetime(2024, 1, 1, 12, 0, tzinfo=datetime.UTC)


def call(name: str, args: dict[str, Any] | None = None, user: Any = None, kind: str | None = None) -> Any:
    """Check permission, validate the arguments and run the function, as the engine does."""
    if kind is None:
        kind = "query" if name in QUERIES else "mutation"
    function = get_function(name, kind)
    ctx = Context.for_user(user or AnonymousUser(), kind=kind)
    function.check_permission(ctx)
    validated = function.validate_args(args or {})
    if kind == "mutation":
        with transaction.atomic():
            return function.func(ctx, **validated)
    return function.func(ctx, **validated)


QUERIES = {
    "chat.list_channels",
    "chat.list_messages",
    "chat.message_count",
    "chat.channel_members",
    "chat.paginated_messages",
    "tasks.list",
}


@pytest.fixture
def user():
    return User.objects.create_user(username="user1", password="pw")


@pytest.fixture
def other_user():
    return User.objects.create_user(username="user2", password="pw")


@pytest.fixture
def staff_user():
    return User.objects.create_user(username="staff1", password="pw", is_staff=True)


@pytest.fixture
def channel():
    return Channel.objects.create(name="general")


def post(channel, body, seconds=0, author=None):
    return Message.objects.create(
        channel=channel, body=body, author=author, created=T0 + datetime.timedelta(seconds=seconds)
    )


def test_every_function_is_registered_with_its_kind():
    for name in QUERIES:
        assert get_function(name, "query").kind == "query"
    for name in [
        "chat.create_channel",
        "chat.send_message",
        "chat.edit_message",
        "chat.delete_message",
        "chat.join_channel",
        "chat.leave_channel",
        "tasks.create",
        "tasks.toggle",
        "tasks.remove",
    ]:
        assert get_function(name, "mutation").kind == "mutation"


# chat queries


@pytest.mark.django_db
def test_list_channels_by_name():
    random = Channel.objects.create(name="random")
    general = Channel.objects.create(name="general")
    assert call("chat.list_channels") == [
        {"id": general.id, "name": "general"},
        {"id": random.id, "name": "random"},
    ]


@pytest.mark.django_db
def test_list_messages_shape_and_order(channel, user):
    second = post(channel, "second", 1, author=user)
    first = post(channel, "first", 0)
    post(Channel.objects.create(name="random"), "elsewhere", 2)
    assert call("chat.list_messages", {"channel": channel.id}) == [
        {
            "id": first.id,
            "channel": channel.id,
            "author": None,
            "body": "first",
            "created": T0,
            "edited": False,
        },
        {
            "id": second.id,
            "channel": channel.id,
            "author": "user1",
            "body": "second",
            "created": T0 + datetime.timedelta(seconds=1),
            "edited": False,
        },
    ]


@pytest.mark.django_db
def test_list_messages_returns_the_newest_limit_oldest_first(channel):
    for i in range(55):
        post(channel, f"m{i}", i)
    default = call("chat.list_messages", {"channel": channel.id})
    assert [m["body"] for m in default] == [f"m{i}" for i in range(5, 55)]
    three = call("chat.list_messages", {"channel": channel.id, "limit": 3})
    assert [m["body"] for m in three] == ["m52", "m53", "m54"]


@pytest.mark.django_db
def test_list_messages_ties_in_time_follow_ids(channel):
    same = [post(channel, f"m{i}", 0) for i in range(4)]
    result = call("chat.list_messages", {"channel": channel.id, "limit": 2})
    assert [m["id"] for m in result] == [same[2].id, same[3].id]


@pytest.mark.django_db
def test_list_messages_of_an_unknown_channel_is_empty():
    assert call("chat.list_messages", {"channel": 12345}) == []


@pytest.mark.parametrize(
    "args",
    [
        {},
        {"channel": "general"},
        {"channel": 1, "limit": 0},
        {"channel": 1, "limit": 201},
        {"channel": 1, "unknown": True},
    ],
)
def test_list_messages_invalid_args(args):
    with pytest.raises(InvalidArgs):
        get_function("chat.list_messages", "query").validate_args(args)


@pytest.mark.django_db
def test_message_count(channel):
    assert call("chat.message_count", {"channel": channel.id}) == 0
    post(channel, "a")
    post(channel, "b")
    post(Channel.objects.create(name="random"), "c")
    assert call("chat.message_count", {"channel": channel.id}) == 2


@pytest.mark.django_db
def test_channel_members_sorted(channel, user, other_user):
    assert call("chat.channel_members", {"channel": channel.id}) == []
    channel.members.add(other_user, user)
    Channel.objects.create(name="random").members.add(User.objects.create(username="demo"))
    assert call("chat.channel_members", {"channel": channel.id}) == ["user1", "user2"]


@pytest.mark.django_db
def test_paginated_messages_newest_first(channel, user):
    messages = [post(channel, f"m{i}", i, author=user) for i in range(5)]
    post(Channel.objects.create(name="random"), "elsewhere", 10)
    first = call("chat.paginated_messages", {"channel": channel.id, "pagination": {"num_items": 2}})
    assert [m["body"] for m in first["page"]] == ["m4", "m3"]
    assert first["page"][0] == {
        "id": messages[4].id,
        "channel": channel.id,
        "author": "user1",
        "body": "m4",
        "created": T0 + datetime.timedelta(seconds=4),
        "edited": False,
    }
    assert first["is_done"] is False
    rest = call(
        "chat.paginated_messages",
        {"channel": channel.id, "pagination": {"num_items": 10, "cursor": first["continue_cursor"]}},
    )
    assert [m["body"] for m in rest["page"]] == ["m2", "m1", "m0"]
    assert rest["is_done"] is True
    fixed = call(
        "chat.paginated_messages",
        {
            "channel": channel.id,
            "pagination": {"num_items": 1, "cursor": None, "end_cursor": first["continue_cursor"]},
        },
    )
    assert fixed == first


@pytest.mark.django_db
def test_paginated_messages_invalid_cursor(channel):
    with pytest.raises(InvalidArgs, match=r"Invalid arguments"):
        call(
            "chat.paginated_messages",
            {"channel": channel.id, "pagination": {"num_items": 2, "cursor": "nope"}},
        )


@pytest.mark.parametrize(
    "pagination", [None, {}, {"num_items": 0}, {"num_items": 1001}, {"num_items": 2, "cursor": 3}]
)
def test_paginated_messages_invalid_pagination(pagination):
    with pytest.raises(InvalidArgs):
        get_function("chat.paginated_messages", "query").validate_args(
            {"channel": 1, "pagination": pagination}
        )


# chat mutations


@pytest.mark.django_db
def test_create_channel_with_a_welcome_message(user):
    channel_id = call("chat.create_channel", {"name": "general", "welcome": "Hello!"}, user)
    assert isinstance(channel_id, int)
    channel = Channel.objects.get(pk=channel_id)
    assert channel.name == "general"
    message = channel.messages.get()
    assert (message.body, message.author) == ("Hello!", user)


@pytest.mark.django_db
def test_create_channel_without_welcome_and_signed_out():
    channel_id = call("chat.create_channel", {"name": "general"})
    assert not Message.objects.filter(channel_id=channel_id).exists()
    other_id = call("chat.create_channel", {"name": "random", "welcome": "Hi"})
    assert Message.objects.get(channel_id=other_id).author is None
    assert call("chat.create_channel", {"name": "more", "welcome": None}) > other_id


@pytest.mark.django_db
def test_create_channel_duplicate_name(channel):
    with pytest.raises(ReactiveError) as error:
        call("chat.create_channel", {"name": "general", "welcome": "again"})
    assert error.value.message == "A channel named 'general' already exists."
    assert Channel.objects.count() == 1
    assert Message.objects.count() == 0


@pytest.mark.django_db
def test_create_channel_duplicate_created_concurrently_is_a_user_error(channel):
    # Another transaction created the name between the check and the insert.
    with (
        mock.patch.object(QuerySet, "exists", return_value=False),
        pytest.raises(ReactiveError, match="already exists"),
    ):
        call("chat.create_channel", {"name": "general"})
    assert list(Channel.objects.values_list("name", flat=True)) == ["general"]


@pytest.mark.parametrize(
    "args",
    [{}, {"name": ""}, {"name": "x" * 101}, {"name": "ok", "welcome": "x" * 2001}, {"name": "ok", "x": 1}],
)
def test_create_channel_invalid_args(args):
    with pytest.raises(InvalidArgs):
        get_function("chat.create_channel", "mutation").validate_args(args)


@pytest.mark.django_db
def test_send_message(channel, user):
    message_id = call("chat.send_message", {"channel": channel.id, "body": "hello"}, user)
    message = Message.objects.get(pk=message_id)
    assert (message.channel, message.author, message.body, message.edited) == (channel, user, "hello", False)
    anonymous_id = call("chat.send_message", {"channel": channel.id, "body": "hi"})
    assert Message.objects.get(pk=anonymous_id).author is None


@pytest.mark.django_db
def test_send_message_to_an_unknown_channel():
    with pytest.raises(ReactiveError) as error:
        call("chat.send_message", {"channel": 999, "body": "hello"})
    assert error.value.message == "No such channel."
    assert error.value.data == {"channel": 999}
    assert error.value.as_dict() == {
        "code": "user_error",
        "message": "No such channel.",
        "data": {"channel": 999},
    }
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    "args",
    [{"channel": 1}, {"channel": 1, "body": ""}, {"channel": 1, "body": "x" * 2001}, {"body": "hi"}],
)
def test_send_message_invalid_args(args):
    with pytest.raises(InvalidArgs):
        get_function("chat.send_message", "mutation").validate_args(args)


def test_send_message_accepts_the_longest_body():
    validated = get_function("chat.send_message", "mutation").validate_args(
        {"channel": 1, "body": "x" * 2000}
    )
    assert len(validated["body"]) == 2000


@pytest.mark.django_db
def test_edit_message(channel, user):
    message = post(channel, "helo", author=user)
    assert call("chat.edit_message", {"id": message.id, "body": "hello"}, user) is None
    message.refresh_from_db()
    assert (message.body, message.edited) == ("hello", True)


@pytest.mark.django_db
def test_edit_unknown_message(user):
    with pytest.raises(ReactiveError) as error:
        call("chat.edit_message", {"id": 404, "body": "hello"}, user)
    assert error.value.message == "No such message."
    assert error.value.data == {"id": 404}
    with pytest.raises(InvalidArgs):
        get_function("chat.edit_message", "mutation").validate_args({"id": 1, "body": ""})


@pytest.mark.django_db
def test_delete_message(channel, user):
    message = post(channel, "oops", author=user)
    kept = post(channel, "kept", author=user)
    assert call("chat.delete_message", {"id": message.id}, user) is None
    assert list(Message.objects.all()) == [kept]
    with pytest.raises(ReactiveError, match=r"No such message\."):
        call("chat.delete_message", {"id": message.id}, user)


CHANGES = {"chat.edit_message": {"body": "changed"}, "chat.delete_message": {}}


@pytest.mark.django_db
@pytest.mark.parametrize("name", CHANGES)
def test_another_user_may_not_edit_or_delete_a_message(channel, user, other_user, name):
    message = post(channel, "mine", author=user)
    with pytest.raises(Forbidden) as error:
        call(name, {"id": message.id, **CHANGES[name]}, other_user)
    assert error.value.code == "forbidden"
    assert error.value.message == "Only the author of a message, or staff, may edit or delete it."
    message.refresh_from_db()
    assert (message.body, message.edited) == ("mine", False)


@pytest.mark.django_db
@pytest.mark.parametrize("name", CHANGES)
def test_nobody_but_staff_may_change_a_message_sent_signed_out(channel, user, name):
    message = post(channel, "from a guest")
    with pytest.raises(Forbidden):
        call(name, {"id": message.id, **CHANGES[name]}, user)
    with pytest.raises(Unauthenticated):
        call(name, {"id": message.id, **CHANGES[name]})
    assert Message.objects.get(pk=message.id).body == "from a guest"


@pytest.mark.django_db
def test_staff_may_edit_and_delete_any_message(channel, user, staff_user):
    theirs, a_guests = post(channel, "theirs", author=user), post(channel, "a guest's")
    assert call("chat.edit_message", {"id": theirs.id, "body": "moderated"}, staff_user) is None
    theirs.refresh_from_db()
    assert (theirs.body, theirs.edited, theirs.author) == ("moderated", True, user)
    assert call("chat.delete_message", {"id": a_guests.id}, staff_user) is None
    assert call("chat.delete_message", {"id": theirs.id}, staff_user) is None
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_join_and_leave_channel(channel, user):
    assert call("chat.join_channel", {"channel": channel.id}, user) is None
    assert call("chat.join_channel", {"channel": channel.id}, user) is None  # joining twice is fine
    assert list(channel.members.all()) == [user]
    assert call("chat.channel_members", {"channel": channel.id}) == ["user1"]
    assert call("chat.leave_channel", {"channel": channel.id}, user) is None
    assert call("chat.leave_channel", {"channel": channel.id}, user) is None
    assert not channel.members.exists()


@pytest.mark.django_db
def test_join_and_leave_an_unknown_channel(user):
    for name in ("chat.join_channel", "chat.leave_channel"):
        with pytest.raises(ReactiveError) as error:
            call(name, {"channel": 999}, user)
        assert (error.value.message, error.value.data) == ("No such channel.", {"channel": 999})


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("chat.join_channel", {"channel": 1}),
        ("chat.leave_channel", {"channel": 1}),
        ("chat.edit_message", {"id": 1, "body": "changed"}),
        ("chat.delete_message", {"id": 1}),
    ],
)
def test_join_leave_edit_and_delete_need_a_signed_in_user(channel, name, args):
    with pytest.raises(Unauthenticated) as error:
        call(name, args)
    assert error.value.code == "unauthenticated"
    function = get_function(name, "mutation")
    function.check_permission(Context.for_user(User(username="user1"), kind="mutation"))


def test_other_chat_functions_need_no_sign_in():
    ctx = Context.for_user(AnonymousUser(), kind="mutation")
    for name in ("chat.create_channel", "chat.send_message"):
        get_function(name, "mutation").check_permission(ctx)


@pytest.mark.django_db
def test_a_failing_mutation_leaves_nothing_behind(channel):
    """The engine's transaction rolls back a mutation that fails after writing."""

    def send_then_fail():
        call("chat.send_message", {"channel": channel.id, "body": "written"})
        raise ReactiveError("later failure")

    with pytest.raises(ReactiveError), transaction.atomic():
        send_then_fail()
    assert not Message.objects.exists()


# tasks


@pytest.mark.django_db
def test_tasks_list_by_creation_then_id():
    later = Task.objects.create(text="later", created=T0 + datetime.timedelta(seconds=1))
    tie_a = Task.objects.create(text="a", created=T0)
    tie_b = Task.objects.create(text="b", created=T0, completed=True)
    assert call("tasks.list") == [
        {"id": tie_a.id, "text": "a", "completed": False},
        {"id": tie_b.id, "text": "b", "completed": True},
        {"id": later.id, "text": "later", "completed": False},
    ]


@pytest.mark.django_db
def test_tasks_create_toggle_remove():
    task_id = call("tasks.create", {"text": "Write the docs"})
    assert call("tasks.list") == [{"id": task_id, "text": "Write the docs", "completed": False}]
    assert call("tasks.toggle", {"id": task_id}) is True
    assert Task.objects.get(pk=task_id).completed is True
    assert call("tasks.toggle", {"id": task_id}) is False
    assert call("tasks.remove", {"id": task_id}) is None
    assert call("tasks.list") == []


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["tasks.toggle", "tasks.remove"])
def test_tasks_unknown_id(name):
    with pytest.raises(ReactiveError) as error:
        call(name, {"id": 77})
    assert (error.value.message, error.value.data) == ("No such task.", {"id": 77})


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("tasks.create", {}),
        ("tasks.create", {"text": ""}),
        ("tasks.create", {"text": "x" * 501}),
        ("tasks.toggle", {"id": "one"}),
        ("tasks.remove", {}),
        ("tasks.list", {"all": True}),
    ],
)
def test_tasks_invalid_args(name, args):
    kind = "query" if name == "tasks.list" else "mutation"
    with pytest.raises(InvalidArgs):
        get_function(name, kind).validate_args(args)


def test_tasks_list_is_a_query_not_the_builtin():
    assert get_function("tasks.list", "query").func is project.tasks.functions.list_tasks
    assert not hasattr(project.tasks.functions, "list")


# seed_demo


@pytest.mark.django_db
def test_seed_demo_is_idempotent():
    out = StringIO()
    call_command("seed_demo", stdout=out)
    assert "created user 'demo'" in out.getvalue()
    demo = User.objects.get(username="demo")
    assert demo.check_password("demo")
    assert not demo.is_superuser and not demo.is_staff
    assert set(Channel.objects.values_list("name", flat=True)) == {"general", "random"}
    assert Message.objects.filter(channel__name="general").count() >= 1
    assert Message.objects.filter(channel__name="random").count() >= 1
    assert Task.objects.count() == 3
    assert call("chat.channel_members", {"channel": Channel.objects.get(name="general").id}) == ["demo"]

    counts = (User.objects.count(), Channel.objects.count(), Message.objects.count(), Task.objects.count())
    again = StringIO()
    call_command("seed_demo", stdout=again)
    assert "nothing to do" in again.getvalue()
    assert counts == (
        User.objects.count(),
        Channel.objects.count(),
        Message.objects.count(),
        Task.objects.count(),
    )


@pytest.mark.django_db
def test_seed_demo_keeps_existing_data(channel):
    Channel.objects.filter(pk=channel.pk).update(name="random")
    call_command("seed_demo", stdout=StringIO())
    # The existing channel gets no welcome messages; the missing one is created with them.
    assert not Message.objects.filter(channel__name="random").exists()
    assert Message.objects.filter(channel__name="general").exists()


# Through the engine


@pytest.mark.django_db(transaction=True)
def test_demo_functions_through_the_engine(user):
    from reactive.engine.execution import call_mutation, call_query, run_query

    channel_id = call_mutation("chat.create_channel", {"name": "general", "welcome": "Hi"}, user).value
    message_id = call_mutation("chat.send_message", {"channel": channel_id, "body": "hello"}, user).value
    with pytest.raises(ReactiveError, match="already exists"):
        call_mutation("chat.create_channel", {"name": "general"}, user)

    messages = call_query("chat.list_messages", {"channel": channel_id}, user)
    assert [m["body"] for m in messages] == ["Hi", "hello"]
    assert messages[1]["id"] == message_id
    assert isinstance(messages[1]["created"], str)  # JSON: ISO 8601

    function = get_function("chat.paginated_messages", "query")
    args = function.validate_args({"channel": channel_id, "pagination": {"num_items": 1}})
    with transaction.atomic():
        run = run_query(function, args, Context.for_user(user))
    assert not run.is_error
    # The keyset conditions do not widen what the page depends on: the channel's messages.
    assert run.read_set.tables["chat_message"] == {frozenset({("channel_id", channel_id)})}
