"""Every ORM write path, as plain functions over the demo's chat models.

Tests run them in the server's process: in-process directly, against a server subprocess
through the ``testapp.write`` action. None of them is a mutation: they run in autocommit mode
or in the transaction they open themselves, as an admin view or a shell would.
"""

from __future__ import annotations

import datetime
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user, get_user_model, login, logout
from django.contrib.sessions.models import Session
from django.db import connection, transaction
from django.http import HttpRequest
from django.utils import timezone

from project.chat.models import Channel, Message
from project.tasks.models import Task
from reactive.auth import make_token

User = get_user_model()


def make_channels(count: int = 2, messages: int = 2, prefix: str = "c") -> list[int]:
    """``count`` fresh channels with ``messages`` messages each; their ids."""
    ids = []
    for _ in range(count):
        channel = Channel.objects.create(name=f"{prefix}-{Channel.objects.count()}-{_unique()}")
        for index in range(messages):
            Message.objects.create(channel=channel, body=f"seed {index}")
        ids.append(channel.id)
    return ids


def make_user(username: str) -> int:
    return User.objects.create_user(username=f"{username}-{_unique()}", password="pw").pk


def _unique() -> str:
    import uuid

    return uuid.uuid4().hex[:8]


# The write paths ---------------------------------------------------------------------------


def save_insert(channel: int) -> None:
    Message(channel_id=channel, body="saved").save()


def save_update(channel: int) -> None:
    message = Message.objects.filter(channel_id=channel).order_by("id").first()
    message.body = "edited by save"
    message.save()


def create(channel: int) -> None:
    Message.objects.create(channel_id=channel, body="created")


def get_or_create(channel: int) -> None:
    Message.objects.get_or_create(channel_id=channel, body="got or created")


def update_or_create(channel: int) -> None:
    first = Message.objects.filter(channel_id=channel).order_by("id").first()
    Message.objects.update_or_create(id=first.id, defaults={"body": "updated or created"})


def queryset_update(channel: int) -> None:
    Message.objects.filter(channel_id=channel).update(edited=True)


def queryset_update_expression(channel: int) -> None:
    from django.db.models import F, Value
    from django.db.models.functions import Concat

    Message.objects.filter(channel_id=channel).update(body=Concat(F("body"), Value("!")))


def update_through_join(channel: int) -> None:
    """An UPDATE whose WHERE joins another table (the old values are read through the ORM; a
    WHERE on the table alone is reused as it is)."""
    name = Channel.objects.get(pk=channel).name
    Message.objects.filter(channel__name=name).update(body="edited through a join")


def move_out(channel: int, to: int) -> None:
    """A row leaves one result and enters another."""
    first = Message.objects.filter(channel_id=channel).order_by("id").first()
    Message.objects.filter(pk=first.pk).update(channel_id=to)


def bulk_create(channel: int) -> None:
    Message.objects.bulk_create([Message(channel_id=channel, body=f"bulk {i}") for i in range(3)])


def bulk_update(channel: int) -> None:
    messages = list(Message.objects.filter(channel_id=channel))
    for message in messages:
        message.body = f"bulk updated {message.pk}"
    Message.objects.bulk_update(messages, ["body"])


def instance_delete(channel: int) -> None:
    Message.objects.filter(channel_id=channel).order_by("id").first().delete()


def queryset_delete(channel: int) -> None:
    Message.objects.filter(channel_id=channel).delete()


def cascade(channel: int) -> None:
    """Deleting the channel deletes its messages (on_delete=CASCADE)."""
    Channel.objects.get(pk=channel).delete()


def set_null(channel: int) -> None:
    """Deleting an author sets the author of their messages to NULL (on_delete=SET_NULL)."""
    user = User.objects.create_user(username=f"author-{_unique()}")
    Message.objects.create(channel_id=channel, author=user, body="by a user")
    user.delete()


def m2m_add(channel: int) -> None:
    Channel.objects.get(pk=channel).members.add(User.objects.create_user(username=f"member-{_unique()}"))


def m2m_remove(channel: int) -> None:
    channel_ = Channel.objects.get(pk=channel)
    channel_.members.remove(*channel_.members.all()[:1])


def m2m_clear(channel: int) -> None:
    Channel.objects.get(pk=channel).members.clear()


def m2m_set(channel: int) -> None:
    users = [User.objects.create_user(username=f"set-{_unique()}") for _ in range(2)]
    Channel.objects.get(pk=channel).members.set(users)


def reverse_m2m_add(channel: int) -> None:
    User.objects.create_user(username=f"joiner-{_unique()}").chat_channels.add(channel)


def raw_sql(channel: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE chat_message SET body = %s WHERE channel_id = %s", ["raw", channel])


def in_atomic(channel: int) -> None:
    with transaction.atomic():
        Message.objects.create(channel_id=channel, body="one")
        Message.objects.create(channel_id=channel, body="two")


def inner_rollback(channel: int) -> None:
    """The inner savepoint's write is rolled back, the outer one commits."""
    with transaction.atomic():
        Message.objects.create(channel_id=channel, body="outer")
        try:
            with transaction.atomic():
                Message.objects.create(channel_id=channel, body="inner")
                raise RuntimeError("roll back the savepoint")
        except RuntimeError:
            pass


def outer_rollback(channel: int) -> None:
    try:
        with transaction.atomic():
            Message.objects.create(channel_id=channel, body="never committed")
            raise RuntimeError("roll back everything")
    except RuntimeError:
        pass


def bulk_messages(channel: int, count: int) -> None:
    """``count`` messages in one insert (a channel longer than the largest page)."""
    Message.objects.bulk_create([Message(channel_id=channel, body=f"bulk {index}") for index in range(count)])


def add_task(text: str) -> int:
    return Task.objects.create(text=text).pk


# Sign-ins, and the writes that end one or take rights away -----------------------------------


def sign_in(username: str, staff: bool = False) -> dict[str, Any]:
    """A new user signed in with Django's ``login()``: their session key, a token, their id."""
    user = User.objects.create_user(username=f"{username}-{_unique()}", password="a password", is_staff=staff)
    request = _request_with_session(None)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    request.session.save()
    return {
        "username": user.username,
        "user_id": user.pk,
        "session_key": request.session.session_key,
        "token": make_token(user),
    }


def log_out(session_key: str) -> None:
    """Django's ``logout()`` for a request carrying this session: the session is flushed."""
    request = _request_with_session(session_key)
    request.user = get_user(request)
    logout(request)


def deactivate(user_id: int) -> None:
    user = User.objects.get(pk=user_id)
    user.is_active = False
    user.save()


def change_password(user_id: int) -> None:
    user = User.objects.get(pk=user_id)
    user.set_password("another password")
    user.save()


def revoke_staff(user_id: int) -> None:
    user = User.objects.get(pk=user_id)
    user.is_staff = False
    user.save()


def expire_session(session_key: str) -> None:
    """The session's expiry date passes (an update of the session table: nothing is logged)."""
    Session.objects.filter(session_key=session_key).update(
        expire_date=timezone.now() - datetime.timedelta(seconds=1)
    )


def _request_with_session(session_key: str | None) -> HttpRequest:
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return request


PATHS: dict[str, Any] = {
    name: globals()[name]
    for name in [
        "save_insert",
        "save_update",
        "create",
        "get_or_create",
        "update_or_create",
        "queryset_update",
        "queryset_update_expression",
        "update_through_join",
        "bulk_create",
        "bulk_update",
        "instance_delete",
        "queryset_delete",
        "cascade",
        "set_null",
        "raw_sql",
        "in_atomic",
    ]
}
M2M_PATHS = ["m2m_add", "m2m_remove", "m2m_clear", "m2m_set", "reverse_m2m_add"]


# Updates that assign some columns only (column-aware invalidation) ------------------------


def save_update_fields(channel: int) -> None:
    message = Message.objects.filter(channel_id=channel).order_by("id").first()
    message.body = f"~ {message.body[:10]}"  # sorts after every other body
    message.save(update_fields=["body"])


def save_unchanged(channel: int) -> None:
    """A ``save()`` assigning every column, none with a new value."""
    Message.objects.filter(channel_id=channel).order_by("-id").first().save()


def flag_one(channel: int) -> None:
    Message.objects.filter(pk=Message.objects.filter(channel_id=channel).order_by("id")[:1]).update(
        edited=True
    )


def shift_created(channel: int) -> None:
    """The oldest message becomes the newest: a column read in ORDER BY only, via F()."""
    from django.db.models import F

    first = Message.objects.filter(channel_id=channel).order_by("created", "id").first()
    Message.objects.filter(pk=first.pk).update(created=F("created") + datetime.timedelta(days=1))


def rename_channel(channel: int) -> None:
    """A column of a joined table (queries reading the channel's name through a join)."""
    Channel.objects.filter(pk=channel).update(name=f"renamed-{_unique()}")


def replace_one(channel: int) -> None:
    """One commit deletes the channel's oldest message and adds another: its count re-runs (rows
    it counts left and came) and stays what it was."""
    with transaction.atomic():
        Message.objects.filter(channel_id=channel).order_by("id").first().delete()
        Message.objects.create(channel_id=channel, body="replacement")


COLUMN_PATHS = ["save_update_fields", "save_unchanged", "flag_one", "shift_created", "rename_channel"]


def run(path: str, **kwargs: Any) -> Any:
    return globals()[path](**kwargs)
