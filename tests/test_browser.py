"""The demo page in Chromium: two pages stay live, a toggle shows at once, and both pages come
back by themselves after the server restarts.

Uses Debian's Chromium (never a downloaded browser) through Playwright's sync API. Set
``UPDATE_DEMO_SCREENSHOT=1`` to write ``docs/demo.png`` from the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.processes import ROOT, Process
from tests.conftest import migrated, server_env, start_daphne

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's Chromium is not installed at /usr/bin/chromium"
)

WAIT_MS = 15_000
MESSAGES = "#messages li[data-message-id]"
DOWNTIME_MESSAGE = "Written while the server was down"


@dataclass
class Demo:
    server: Process
    db_path: Path
    log_path: Path

    def manage(self, *args: str) -> None:
        env = server_env(self.db_path)
        subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)

    def restart(self) -> None:
        port = self.server.port
        self.server.stop()
        self.server = start_daphne(self.db_path, self.log_path, migrate=False, port=port)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    directory = tmp_path_factory.mktemp("browser")
    db_path, log_path = directory / "db.sqlite3", directory / "daphne.log"
    env = server_env(db_path)
    migrated(env)
    subprocess.run([sys.executable, "manage.py", "seed_demo", "-v0"], cwd=ROOT, env=env, check=True)
    running = Demo(start_daphne(db_path, log_path, migrate=False), db_path, log_path)
    yield running
    running.server.stop()


@pytest.fixture(scope="module")
def pages(demo: Demo) -> Iterator[tuple]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        opened = []
        errors: list[str] = []
        for _ in range(2):
            page = browser.new_page(viewport={"width": 1200, "height": 720})
            page.set_default_timeout(WAIT_MS)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(demo.server.http_url + "/")
            connected(page)
            opened.append(page)
        yield tuple(opened)
        browser.close()
        assert errors == [], f"errors on the page: {errors}"


def connected(page) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)


def test_a_message_sent_in_one_page_appears_in_the_other(pages: tuple) -> None:
    from playwright.sync_api import expect

    first, second = pages
    for page in pages:
        expect(page.locator("#channels li[aria-current=true]")).to_have_text("# general")
        expect(page.locator(MESSAGES).first).to_be_visible()

    first.fill("#message-body", "Hello from the first page")
    first.press("#message-body", "Enter")

    for page in pages:
        expect(page.locator(MESSAGES).last).to_contain_text("Hello from the first page")
    expect(first.locator("#message-body")).to_have_value("")
    expect(second.locator("#message-error")).to_be_empty()


def test_a_toggled_task_shows_at_once_and_stays_after_the_result(pages: tuple, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    first, second = pages
    task = first.locator("#tasks li").nth(1)
    task_id = task.get_attribute("data-task-id")
    # Click and read back in one task of the page's event loop: no frame from the server can
    # have been handled in between, so what shows is the optimistic update.
    seen = first.evaluate(
        """(id) => {
            const row = () => document.querySelector(`#tasks li[data-task-id="${id}"]`);
            const before = row().dataset.completed;
            row().querySelector(".task-toggle").click();
            return {
                before,
                after: row().dataset.completed,
                inflight: window.demo.client.connectionState().hasInflightRequests,
            };
        }""",
        task_id,
    )
    assert seen["inflight"] is True
    assert seen["after"] != seen["before"]

    first.wait_for_function("() => !window.demo.client.connectionState().hasInflightRequests")
    row = f'#tasks li[data-task-id="{task_id}"]'
    expect(first.locator(row)).to_have_attribute("data-completed", seen["after"])
    expect(second.locator(row)).to_have_attribute("data-completed", seen["after"])
    expect(second.locator(f"{row} .task-toggle")).to_be_checked(checked=seen["after"] == "true")

    screenshot = tmp_path / "demo.png"
    first.screenshot(path=str(screenshot))
    if os.environ.get("UPDATE_DEMO_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(screenshot, ROOT / "docs" / "demo.png")


def test_pages_reconnect_by_themselves_after_a_server_restart(demo: Demo, pages: tuple) -> None:
    from playwright.sync_api import expect

    first, second = pages
    demo.server.stop()
    for page in pages:
        expect(page.locator("#connection")).to_have_attribute("data-state", "disconnected", timeout=WAIT_MS)

    # Written while no server runs: the pages can only learn of it by resubscribing.
    demo.manage(
        "shell",
        "-c",
        "from project.chat.models import Channel, Message; "
        f"Message.objects.create(channel=Channel.objects.get(name='general'), body={DOWNTIME_MESSAGE!r})",
    )
    demo.restart()

    for page in pages:
        connected(page)
        expect(page.locator(MESSAGES).last).to_contain_text(DOWNTIME_MESSAGE)

    second.fill("#message-body", "Live again after the restart")
    second.press("#message-body", "Enter")
    expect(first.locator(MESSAGES).last).to_contain_text("Live again after the restart")
