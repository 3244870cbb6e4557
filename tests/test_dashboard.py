"""The admin's live subscriptions dashboard: staff only over HTTP and over the socket, and in
headless Chromium it shows a test client's subscription and moves with a mutation, without a
reload (on the Redis backend, a subscription held on another server process too).

``UPDATE_DASHBOARD_SCREENSHOT=1`` writes ``docs/dashboard.png`` from the browser test's run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from harness.processes import ROOT, Process
from reactive.client import ReactiveClient, ReactiveClientError
from reactive.engine.stats import (
    RECORDS_KEPT,
    RUN_TIMES_KEPT,
    SERIES_SECONDS,
    WHY_KEPT,
    InvalidatorStats,
    explain,
)
from reactive.records import ChangeRecord, ReadSet, RowChange
from tests import test_cluster
from tests.conftest import Harness, server_env, start_daphne
from tests.test_admin import AdminBrowser, _change_form_fields
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_cluster import clients, make_channels, open_client

LIVE = "reactive.live."
QUERIES = ["connections", "instances", "invalidator", "writes"]
WAIT_MS = 20_000

# -- HTTP -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_anonymous_users_get_the_admin_login_page_not_the_dashboard(client) -> None:
    url = reverse("admin:reactive_live")
    assert url == "/admin/reactive/live/"
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert b'id="live"' not in client.get(url, follow=True).content


@pytest.mark.django_db
def test_signed_in_users_who_are_not_staff_get_the_admin_login_page(client, django_user_model) -> None:
    user = django_user_model.objects.create_user(username=f"user-{uuid.uuid4().hex[:8]}", password="pw")
    client.force_login(user)
    response = client.get(reverse("admin:reactive_live"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert b'id="live"' not in client.get(reverse("admin:reactive_live"), follow=True).content


@pytest.mark.django_db
def test_staff_users_see_the_dashboard_linked_from_the_admin_index(client, django_user_model) -> None:
    user = django_user_model.objects.create_user(
        username=f"staff-{uuid.uuid4().hex[:8]}", password="pw", is_staff=True
    )
    client.force_login(user)
    index = client.get(reverse("admin:index")).content.decode()
    assert f'href="{reverse("admin:reactive_live")}"' in index
    assert "Live subscriptions" in index
    response = client.get(reverse("admin:reactive_live"))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="live"' in page
    assert 'data-websocket-path="/reactive/ws/"' in page
    assert "reactive-admin/dashboard.js" in page


# -- The statistics: bounded, and why an instance re-ran ----------------------------------------


class _Run:
    def __init__(self, read_set: ReadSet) -> None:
        self.payload, self.is_error, self.read_set = b"[]", False, read_set


def test_the_statistics_stay_bounded_and_forget_released_instances() -> None:
    stats = InvalidatorStats()
    read_set = ReadSet({"chat_message": {frozenset({("channel_id", 1)})}})
    for version in range(1, 2001):
        stats.ran("rq.a", "chat.message_count", {"channel": 1}, _Run(read_set), 0.001, version % 2 == 0)
        record = ChangeRecord(
            version, (RowChange("chat_message", None, {"id": f"i{version}", "channel_id": "i1"}),)
        )
        stats.passed([record], [{"rq.a"}])
    instance = stats.instances["rq.a"]
    assert (instance.runs, instance.updates, instance.unchanged) == (2000, 1000, 1000)
    assert len(instance.times) == RUN_TIMES_KEPT
    assert len(instance.why) == WHY_KEPT
    assert len(stats.writes) == RECORDS_KEPT
    assert len(stats.functions["chat.message_count"]) <= SERIES_SECONDS
    stats.forget("rq.a")
    assert stats.instances == {}


def test_why_names_the_row_and_the_condition_of_the_read_set_it_matched() -> None:
    read_set = ReadSet({"chat_message": {frozenset({("channel_id", 5)}), frozenset({("id", 9)})}})
    moved = RowChange("chat_message", {"id": "i7", "channel_id": "i5"}, {"id": "i7", "channel_id": "i6"})
    unknown = RowChange("chat_message", {"id": "i8"}, None)  # channel_id not captured: any value
    other = RowChange("chat_channel", None, {"id": "i5"})
    found = explain((moved, unknown, other), [], read_set)
    assert found[0] == {
        "table": "chat_message",
        "pk": "7",
        "condition": "channel_id = 5",
        "columns": ["channel_id"],
        "unknown": [],
        "image": "old",
    }
    assert found[1]["pk"] == "8" and found[1]["unknown"] == ["channel_id"]
    assert len(found) == 2
    assert explain((), ["chat_message"], read_set)[0]["condition"] == "the whole table was written"
    assert explain((), ["chat_channel"], read_set) == []


# -- The system queries over the socket -------------------------------------------------------


async def token_for(harness: Harness, username: str, *, staff: bool = False) -> str:
    control = await harness.control()
    if staff:
        await control.action("testapp.make_admin", {"username": username, "password": "a-password"})
    return await control.action("testapp.token_for", {"username": username})


@pytest.mark.asyncio
async def test_the_system_queries_refuse_sockets_that_are_not_staff(harness: Harness) -> None:
    async with harness.client() as anonymous:
        for name in QUERIES:
            with pytest.raises(ReactiveClientError) as excinfo:
                await anonymous.subscribe(LIVE + name).first()
            assert excinfo.value.code == "unauthenticated"
    async with harness.client() as member:
        await member.authenticate(await token_for(harness, f"member-{uuid.uuid4().hex[:8]}"))
        await member.ping()
        for name in QUERIES:
            with pytest.raises(ReactiveClientError) as excinfo:
                await member.subscribe(LIVE + name).first()
            assert excinfo.value.code == "forbidden", name
        with pytest.raises(ReactiveClientError) as excinfo:
            await member.subscribe(LIVE + "function", {"name": "chat.message_count"}).first()
        assert excinfo.value.code == "forbidden"


def find(instances: list[dict[str, Any]], name: str, args: dict[str, Any]) -> dict[str, Any] | None:
    return next((i for i in instances if i["name"] == name and i["args"] == args), None)


@pytest.mark.asyncio
async def test_a_staff_socket_sees_a_subscription_rerun_and_why(harness: Harness) -> None:
    (channel,) = await harness.write("make_channels", count=1, messages=1)
    token = await token_for(harness, f"staff-{uuid.uuid4().hex[:8]}", staff=True)
    async with harness.client() as user, harness.client() as staff:
        count = user.subscribe("chat.message_count", {"channel": channel})
        assert await count.first() == 1
        await staff.authenticate(token)
        await staff.ping()
        instances = staff.subscribe(LIVE + "instances")
        seen = await instances.wait_for(
            lambda value: (
                (found := find(value["instances"], "chat.message_count", {"channel": channel}))
                and found["subscribers"] == 1
            ),
            timeout=15,
        )
        before = find(seen["instances"], "chat.message_count", {"channel": channel})

        await user.mutation("chat.send_message", {"channel": channel, "body": "seen on the dashboard"})
        assert await count.wait_for(lambda value: value == 2) == 2

        def rerun(value: dict[str, Any]) -> bool:
            found = find(value["instances"], "chat.message_count", {"channel": channel})
            return bool(found and found["runs"] > before["runs"] and found["why"])

        after = find(
            (await instances.wait_for(rerun, timeout=15))["instances"],
            "chat.message_count",
            {"channel": channel},
        )
        assert after["updates"] > before["updates"]
        (why, *_) = after["why"]
        assert why["origin"][1] == "mutation chat.send_message"
        assert [match["table"] for match in why["matches"]] == ["chat_message"]
        assert why["matches"][0]["condition"] == f"channel_id = {channel}"

        writes = await staff.subscribe(LIVE + "writes").wait_for(
            lambda value: any(t["table"] == "chat_message" and t["touched"] >= 1 for t in value["tables"]),
            timeout=15,
        )
        assert writes["recent"][0]["version"] >= why["version"]
        connections = await staff.subscribe(LIVE + "connections").wait_for(
            lambda value: value["total"] >= 2, timeout=15
        )
        assert any(c["user"] and c["user"].startswith("staff-") for c in connections["connections"])
        invalidator = await staff.subscribe(LIVE + "invalidator").wait_for(
            lambda value: value["invalidator"] is not None, timeout=15
        )
        assert invalidator["invalidator"]["processed"] >= why["version"]
        assert invalidator["servers"]


@pytest.mark.asyncio
async def test_a_write_made_in_the_admin_shows_as_coming_from_the_admin(harness: Harness) -> None:
    username = f"staff-{uuid.uuid4().hex[:8]}"
    token = await token_for(harness, username, staff=True)
    (channel,) = await harness.write("make_channels", count=1, messages=1)
    browser = AdminBrowser(harness.server.http_url)
    async with harness.client() as user, harness.client() as staff:
        (message,) = await user.subscribe("chat.list_messages", {"channel": channel}).first()
        await staff.authenticate(token)
        await staff.ping()
        writes = staff.subscribe(LIVE + "writes")
        await writes.first()

        def edit_in_admin() -> None:
            browser.post_form(
                "/admin/login/", {"username": username, "password": "a-password", "next": "/admin/"}
            )
            path = f"/admin/chat/message/{message['id']}/change/"
            fields = _change_form_fields(browser.get(path))
            fields["body"] = "edited in the admin"
            browser.post_form(path, fields)

        await asyncio.to_thread(edit_in_admin)
        seen = await writes.wait_for(
            lambda value: any(
                write["origin"] and write["origin"][1] == "admin" and "chat_message" in write["tables"]
                for write in value["recent"]
            ),
            timeout=15,
        )
        assert any(t["table"] == "chat_message" and t["touched"] >= 1 for t in seen["tables"])


# -- In headless Chromium ----------------------------------------------------------------------

REDIS = bool(os.environ.get("REDIS_URL"))


class Site:
    """One database; one Daphne server (embedded), or two on one Redis (the Redis backend)."""

    def __init__(self, directory: Path) -> None:
        db_path = directory / "db.sqlite3"
        self.servers: list[Process] = [start_daphne(db_path, directory / "a.log")]
        if REDIS:
            self.servers.append(start_daphne(db_path, directory / "b.log", migrate=False))
        self.env = server_env(db_path)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    running = Site(tmp_path_factory.mktemp("dashboard"))
    yield running
    running.stop()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium is not installed at /usr/bin/chromium")
def test_a_staff_user_watches_a_subscription_move_on_the_dashboard(site: Site, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    first = site.servers[0]
    other = site.servers[-1]  # another server process on the Redis backend
    username, password = f"admin-{uuid.uuid4().hex[:8]}", "a-password"
    # The Python clients run on a loop of their own, in a thread: Playwright's runs in this one.
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60)

    control = run(_connected(first.ws_url))
    holder = run(_connected(other.ws_url))
    try:
        run(control.action("testapp.make_admin", {"username": username, "password": password}))
        (channel,) = run(
            control.action("testapp.write", {"path": "make_channels", "kwargs": {"count": 1, "messages": 1}})
        )
        count = holder.subscribe("chat.message_count", {"channel": channel})
        assert run(count.first()) == 1

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            errors: list[str] = []
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(WAIT_MS)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(first.http_url + "/admin/")
            page.fill("#id_username", username)
            page.fill("#id_password", password)
            page.click("input[type=submit]")
            page.click("text=Live subscriptions")
            expect(page).to_have_url(first.http_url + "/admin/reactive/live/")
            expect(page.locator("#live-state")).to_have_attribute("data-state", "connected")

            row = (
                page.locator("#live-instances tbody tr")
                .filter(has_text="chat.message_count")
                .filter(has_text=f'{{"channel":{channel}}}')
            )
            expect(row).to_have_count(1, timeout=WAIT_MS)
            expect(row.locator("td.subscribers")).to_have_text("1", timeout=WAIT_MS)
            runs_before = int(row.locator("td.runs").text_content())
            if REDIS:  # the subscription is held on the other process: its socket shows too
                expect(page.locator("#live-invalidator tr[data-role=server]")).to_have_count(2)
                expect(page.locator("#live-connections tbody")).to_contain_text(f":{other.pid}")

            run(holder.mutation("chat.send_message", {"channel": channel, "body": "watched live"}))
            assert run(count.wait_for(lambda value: value == 2)) == 2
            page.wait_for_function(
                """([channel, before]) => {
                    const row = [...document.querySelectorAll("#live-instances tbody tr")].find(
                        (tr) => tr.querySelector(".name").textContent === "chat.message_count"
                            && tr.querySelector(".args").textContent === `{"channel":${channel}}`);
                    return row && Number(row.querySelector(".runs").textContent) > before;
                }""",
                arg=[channel, runs_before],
                timeout=WAIT_MS,
            )
            row.click()
            expect(page.locator("#live-why")).to_contain_text("mutation chat.send_message")
            expect(page.locator("#live-why")).to_contain_text(f"channel_id = {channel}")
            expect(page.locator("#live-writes tr[data-table=chat_message]")).to_have_count(1)
            # Some more activity, for the screenshot: other queries, other writes.
            (busy,) = run(control.action("testapp.write", {"path": "make_channels", "kwargs": {"count": 1}}))
            listed = control.subscribe("chat.list_messages", {"channel": busy})
            run(listed.first())
            for index in range(3):
                run(control.mutation("chat.send_message", {"channel": busy, "body": f"message {index}"}))
            run(listed.wait_for(lambda value: len(value) == 5))
            expect(
                page.locator("#live-instances tbody tr").filter(has_text="chat.list_messages")
            ).to_have_count(1)
            row.locator("td.name a").click()
            expect(page.locator("#live-function tbody tr")).to_have_count(1)
            expect(page.locator("#live-function polyline")).to_have_count(2)

            screenshot = tmp_path / "dashboard.png"
            page.screenshot(path=str(screenshot), full_page=True)
            if os.environ.get("UPDATE_DASHBOARD_SCREENSHOT") == "1":
                shutil.copyfile(screenshot, ROOT / "docs" / "dashboard.png")
            browser.close()
            assert errors == [], f"errors on the page: {errors}"
    finally:
        run(holder.close())
        run(control.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


async def _connected(url: str) -> ReactiveClient:
    client = ReactiveClient(url)
    await client.connect()
    return client


# -- As deployed on Redis: dedicated workers, two servers, a shell ------------------------------

cluster = test_cluster.cluster  # the fixture: a private Redis and Postgres database, processes on them


@pytest.mark.redis_only
@pytest.mark.asyncio
async def test_the_dashboard_on_one_server_shows_every_process_of_a_cluster(cluster) -> None:
    a, b = cluster.start_servers("server-a", "server-b")
    workers = [cluster.start_worker("worker-1"), cluster.start_worker("worker-2")]
    leader = await cluster.wait_for_leader(workers)
    (standby,) = [worker for worker in workers if worker is not leader]
    async with clients() as opened:
        staff = await open_client(opened, a)
        holder = await open_client(opened, b)
        username = f"staff-{uuid.uuid4().hex[:8]}"
        await staff.action("testapp.make_admin", {"username": username, "password": "a-password"})
        await staff.authenticate(await staff.action("testapp.token_for", {"username": username}))
        await staff.ping()
        (channel,) = await make_channels(staff, 1, messages=1)
        count = holder.subscribe("chat.message_count", {"channel": channel})
        assert await count.first() == 1

        invalidator = await staff.subscribe(LIVE + "invalidator").wait_for(
            lambda value: (
                {(w["role"], w["process"].rsplit(":", 1)[1]) for w in value["workers"]}
                == {("leader", str(leader.pid)), ("standby", str(standby.pid))}
                and {s["process"].rsplit(":", 1)[1] for s in value["servers"]} == {str(a.pid), str(b.pid)}
            ),
            timeout=20,
        )
        assert invalidator["backend"] == "redis"
        connections = await staff.subscribe(LIVE + "connections").wait_for(
            lambda value: any(
                c["process"].endswith(f":{b.pid}") and c["subscriptions"] == 1 for c in value["connections"]
            ),
            timeout=20,
        )
        assert any(c["user"] == username for c in connections["connections"])

        code = (
            "from project.chat.models import Message; "
            f"Message.objects.create(channel_id={channel}, body='from a shell')"
        )
        shell = await asyncio.to_thread(cluster.manage, "shell", "-c", code)
        assert shell.returncode == 0, shell.stdout + shell.stderr
        assert await count.wait_for(lambda value: value == 2) == 2

        def rerun_by_the_shell(value: dict[str, Any]) -> bool:
            found = find(value["instances"], "chat.message_count", {"channel": channel})
            return bool(found and found["subscribers"] == 1 and found["why"] and found["why"][0]["origin"])

        instances = await staff.subscribe(LIVE + "instances").wait_for(rerun_by_the_shell, timeout=20)
        why = find(instances["instances"], "chat.message_count", {"channel": channel})["why"][0]
        assert why["origin"][1] == "shell"
        assert why["matches"][0]["condition"] == f"channel_id = {channel}"
