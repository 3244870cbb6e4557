"""Queries that read the caller's identity: one instance per user, re-run on sign-in and out."""

from __future__ import annotations

import uuid

import pytest

from tests.testapp.functions import PERSONAL_FLAG

pytestmark = pytest.mark.asyncio


async def _token(harness, username: str) -> str:
    return await (await harness.control()).action("testapp.token_for", {"username": username})


async def test_identity_reading_query_gives_each_user_their_own_value(harness):
    first, second = (f"user-{uuid.uuid4().hex[:8]}" for _ in range(2))
    async with harness.client() as a, harness.client() as b, harness.client() as anonymous:
        await a.authenticate(await _token(harness, first))
        await b.authenticate(await _token(harness, second))
        values = [c.subscribe("testapp.whoami") for c in (a, b, anonymous)]
        assert [await v.first() for v in values] == [first, second, None]


async def test_shared_instance_that_starts_reading_identity_splits_per_user(harness):
    username = f"user-{uuid.uuid4().hex[:8]}"
    async with harness.client() as signed_in, harness.client() as anonymous:
        await signed_in.authenticate(await _token(harness, username))
        mine = signed_in.subscribe("testapp.greeting")
        theirs = anonymous.subscribe("testapp.greeting")
        assert await mine.first() == "hello everyone"
        assert await theirs.first() == "hello everyone"
        await signed_in.mutation("tasks.create", {"text": PERSONAL_FLAG})
        await mine.wait_for(lambda value: value == f"hello {username}")
        await theirs.wait_for(lambda value: value == "hello stranger")
        # Still live after the split: removing the flag makes them shared again in value.
        tasks = await signed_in.query("tasks.list")
        for task in tasks:
            if task["text"] == PERSONAL_FLAG:
                await signed_in.mutation("tasks.remove", {"id": task["id"]})
        await mine.wait_for(lambda value: value == "hello everyone")
        await theirs.wait_for(lambda value: value == "hello everyone")


async def test_permission_error_turns_into_a_value_after_sign_in(harness):
    username = f"user-{uuid.uuid4().hex[:8]}"
    async with harness.client() as client:
        secret = client.subscribe("testapp.members_only")
        with pytest.raises(Exception) as raised:
            await secret.first()
        assert raised.value.code == "unauthenticated"
        await client.authenticate(await _token(harness, username))
        await secret.wait_for(lambda value: value == "secret")
