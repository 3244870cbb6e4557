"""An edit made in the Django admin, over real HTTP to the real server, reaches subscribers."""

from __future__ import annotations

import asyncio
import http.cookiejar
import re
import urllib.parse
import urllib.request
import uuid

import pytest

from tests.conftest import Harness

pytestmark = pytest.mark.asyncio


class AdminBrowser:
    """A cookie-keeping HTTP client that signs in to the admin and posts its forms."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> str:
        with self.opener.open(self.base_url + path, timeout=10) as response:
            return response.read().decode()

    def post_form(self, path: str, fields: dict[str, str]) -> str:
        page = self.get(path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        body = urllib.parse.urlencode({"csrfmiddlewaretoken": token, **fields}).encode()
        request = urllib.request.Request(
            self.base_url + path, data=body, headers={"Referer": self.base_url + path}
        )
        with self.opener.open(request, timeout=10) as response:
            return response.read().decode()


def _change_form_fields(page: str) -> dict[str, str]:
    """The current values of a change form's inputs, as the browser would submit them."""
    fields = dict(re.findall(r'<input type="(?:text|number|hidden)" name="([^"]+)" value="([^"]*)"', page))
    fields.update(re.findall(r'<select name="([^"]+)"[^>]*>.*?<option value="([^"]*)" selected', page, re.S))
    body = re.search(r'<textarea name="body"[^>]*>(.*?)</textarea>', page, re.S)
    if body:
        fields["body"] = body.group(1)
    fields.pop("csrfmiddlewaretoken", None)
    return fields


async def test_message_edited_in_the_admin_reaches_the_subscriber(socket_server):
    harness = Harness("socket", socket_server)
    username, password = f"admin-{uuid.uuid4().hex[:8]}", "a-password"
    control = await harness.control()
    await control.action("testapp.make_admin", {"username": username, "password": password})
    (channel,) = await harness.write("make_channels", count=1, messages=1)
    browser = AdminBrowser(socket_server.http_url)
    try:
        async with harness.client() as client:
            messages = client.subscribe("chat.list_messages", {"channel": channel})
            (message,) = await messages.first()

            def edit_in_admin() -> None:
                browser.post_form(
                    "/admin/login/", {"username": username, "password": password, "next": "/admin/"}
                )
                path = f"/admin/chat/message/{message['id']}/change/"
                fields = _change_form_fields(browser.get(path))
                fields["body"] = "edited in the admin"
                browser.post_form(path, fields)

            await asyncio.to_thread(edit_in_admin)
            await messages.wait_for(lambda value: value[0]["body"] == "edited in the admin")
            assert messages.value == await harness.fresh("chat.list_messages", {"channel": channel})
    finally:
        await harness.close()
