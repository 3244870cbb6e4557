"""The chat's queries and mutations, as the browser calls them (``chat.list_messages`` ...)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from rest_framework import serializers

from reactive import Page, PaginationOptions, ReactiveError, mutation, paginate, query
from reactive.errors import Forbidden

from .models import Channel, Message

MAX_BODY_LENGTH = 2000


def _body_field() -> serializers.CharField:
    return serializers.CharField(max_length=MAX_BODY_LENGTH, allow_blank=False)


def _is_authenticated(ctx: Any) -> bool:
    return ctx.is_authenticated


def messages_json(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages as the client shows them (the author's username, not their id).

    The authors are fetched by primary key in a second query rather than joined: the result then
    depends on those users only, where a join would re-run it on any user's change.
    """
    author_ids = {message.author_id for message in messages if message.author_id is not None}
    usernames = dict(get_user_model().objects.filter(pk__in=author_ids).values_list("pk", "username"))
    return [
        {
            "id": message.id,
            "channel": message.channel_id,
            "author": usernames.get(message.author_id),
            "body": message.body,
            "created": message.created,
            "edited": message.edited,
        }
        for message in messages
    ]


def _channel(channel_id: int) -> Channel:
    channel = Channel.objects.filter(pk=channel_id).first()
    if channel is None:
        raise ReactiveError("No such channel.", {"channel": channel_id})
    return channel


def _message(message_id: int) -> Message:
    message = Message.objects.filter(pk=message_id).first()
    if message is None:
        raise ReactiveError("No such message.", {"id": message_id})
    return message


def _own_message(ctx: Any, message_id: int) -> Message:
    """The message, if the caller may change it: its author, or staff. Messages sent while
    signed out have no author, so only staff may change them."""
    message = _message(message_id)
    user = ctx.user
    if not user.is_staff and (message.author_id is None or message.author_id != user.pk):
        raise Forbidden("Only the author of a message, or staff, may edit or delete it.")
    return message


# Queries


@query
def list_channels(ctx: Any) -> list[dict[str, Any]]:
    return list(Channel.objects.order_by("name").values("id", "name"))


@query(
    args={
        "channel": serializers.IntegerField(),
        "limit": serializers.IntegerField(min_value=1, max_value=200, default=50),
    }
)
def list_messages(ctx: Any, channel: int, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` messages of the channel, oldest first (as a chat shows them)."""
    newest = Message.objects.filter(channel_id=channel).order_by("-created", "-id")[:limit]
    return messages_json(list(reversed(newest)))


@query(args={"channel": serializers.IntegerField()})
def message_count(ctx: Any, channel: int) -> int:
    return Message.objects.filter(channel_id=channel).count()


@query(args={"channel": serializers.IntegerField()})
def channel_members(ctx: Any, channel: int) -> list[str]:
    # Two bounded queries instead of a join: adding a user elsewhere re-runs nothing here.
    member_ids = Channel.members.through.objects.filter(channel_id=channel).values_list("user_id", flat=True)
    users = get_user_model().objects.filter(pk__in=list(member_ids)).order_by("username")
    return list(users.values_list("username", flat=True))


@query(args={"channel": serializers.IntegerField(), "pagination": PaginationOptions()})
def paginated_messages(ctx: Any, channel: int, pagination: dict[str, Any]) -> Page:
    """The channel's messages newest first, one page at a time (PROTOCOL.md "Pagination")."""
    messages = Message.objects.filter(channel_id=channel).order_by("-created", "-id")
    result = paginate(messages, pagination)
    result["page"] = messages_json(result["page"])
    return result


# Mutations


@mutation(
    args={
        "name": serializers.CharField(max_length=100),
        "welcome": serializers.CharField(
            max_length=MAX_BODY_LENGTH, allow_null=True, required=False, default=None
        ),
    }
)
def create_channel(ctx: Any, name: str, welcome: str | None) -> int:
    """Create a channel (and its first message, when ``welcome`` is given); return its id."""
    duplicate = ReactiveError(f"A channel named {name!r} already exists.")
    if Channel.objects.filter(name=name).exists():
        raise duplicate
    try:
        # A savepoint: a concurrent creation of the same name fails here, not at commit.
        with transaction.atomic():
            channel = Channel.objects.create(name=name)
    except IntegrityError:
        raise duplicate from None
    if welcome is not None:
        Message.objects.create(channel=channel, author=ctx.user_or_none, body=welcome)
    return channel.id


@mutation(args={"channel": serializers.IntegerField(), "body": _body_field()})
def send_message(ctx: Any, channel: int, body: str) -> int:
    message = Message.objects.create(channel=_channel(channel), author=ctx.user_or_none, body=body)
    return message.id


@mutation(args={"id": serializers.IntegerField(), "body": _body_field()}, permission=_is_authenticated)
def edit_message(ctx: Any, id: int, body: str) -> None:
    message = _own_message(ctx, id)
    message.body = body
    message.edited = True
    message.save(update_fields=["body", "edited"])


@mutation(args={"id": serializers.IntegerField()}, permission=_is_authenticated)
def delete_message(ctx: Any, id: int) -> None:
    _own_message(ctx, id).delete()


@mutation(args={"channel": serializers.IntegerField()}, permission=_is_authenticated)
def join_channel(ctx: Any, channel: int) -> None:
    _channel(channel).members.add(ctx.user)


@mutation(args={"channel": serializers.IntegerField()}, permission=_is_authenticated)
def leave_channel(ctx: Any, channel: int) -> None:
    _channel(channel).members.remove(ctx.user)
