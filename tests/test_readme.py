"""The README's "Add it to your Django project", followed word for word in a new project.

A new project made by ``django-admin startproject myproject`` in a temporary folder gets the
README's snippets exactly as written: each fenced block that follows a ``<!-- readme-test: ... -->``
comment is appended to a file, written as a file, or run, as the comment says, so the README and
this test cannot drift apart. The project then migrates, passes ``manage.py check`` without one
issue, and ``manage.py runserver`` (Daphne's) serves a subscriber that sees writes made through a
mutation, the README's ``curl`` call and its raw WebSocket example, and a page made of the
README's template snippet that updates live in Chromium.

The repository's own ``reactive`` is used through PYTHONPATH (installing the package into a new
virtualenv for every run would take minutes); ``pip install .`` is checked by hand.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest

from harness.ports import free_port
from harness.processes import ROOT, Process, django_env
from reactive.client import ReactiveClient

# The README is written for the embedded default; the new project has no Redis settings.
pytestmark = pytest.mark.embedded_only

README = ROOT / "README.md"
PROJECT = "myproject"
README_ADDRESS = "127.0.0.1:8000"  # where the README's examples expect the server
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WAIT_MS = 15_000

MARKED_BLOCK = re.compile(
    r"^[ \t]*<!-- readme-test: (?P<what>.+?) -->\n"
    r"(?P<indent>[ \t]*)```(?P<lang>\w*)\n(?P<body>.*?)^[ \t]*```$",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Snippet:
    what: str
    lang: str
    code: str


def readme_snippets() -> list[Snippet]:
    """Every marked fenced block of the README, in order, without its list indentation."""
    snippets = []
    for match in MARKED_BLOCK.finditer(README.read_text()):
        indent = match["indent"]
        lines = [line.removeprefix(indent) for line in match["body"].splitlines()]
        snippets.append(Snippet(match["what"], match["lang"], "\n".join(lines) + "\n"))
    return snippets


def snippet(what: str) -> Snippet:
    found = [s for s in readme_snippets() if s.what == what]
    assert len(found) == 1, f"the README has {len(found)} blocks marked {what!r}"
    return found[0]


def at_readme_address(code: str, port: int) -> str:
    assert README_ADDRESS in code, code
    return code.replace(README_ADDRESS, f"127.0.0.1:{port}")


@dataclass
class NewProject:
    folder: Path
    env: dict[str, str]
    server: Process

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        return run([sys.executable, "manage.py", *args], self.folder, self.env)


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a command to its end; fail the test with its output if it fails."""
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def follow_the_readme(folder: Path, env: dict[str, str]) -> None:
    """``startproject``, then the README's steps 1 to 4, exactly as written."""
    run([sys.executable, "-m", "django", "startproject", PROJECT, str(folder)], folder.parent, env)
    run([sys.executable, "manage.py", "startapp", "notes"], folder, env)
    # Step 3's prose: the new app goes into INSTALLED_APPS with this line.
    assert 'with `INSTALLED_APPS += ["notes"]`' in README.read_text()
    marked = readme_snippets()
    for step in marked:
        if step.what.startswith("append to "):
            with (folder / step.what.removeprefix("append to ")).open("a") as target:
                target.write("\n" + step.code)
        elif step.what.startswith("write "):
            (folder / step.what.removeprefix("write ")).write_text(step.code)
    with (folder / PROJECT / "settings.py").open("a") as settings:
        settings.write('\nINSTALLED_APPS += ["notes"]\n')
    # Step 4's template, on a page of the notes app (the page itself is this test's own).
    templates = folder / "notes" / "templates" / "notes"
    templates.mkdir(parents=True)
    (templates / "index.html").write_text(snippet("template").code)
    with (folder / PROJECT / "urls.py").open("a") as urls:
        urls.write(
            "\nfrom django.views.generic import TemplateView\n\n"
            'urlpatterns += [path("notes/", TemplateView.as_view(template_name="notes/index.html"))]\n'
        )
    assert {s.what for s in marked} >= {
        f"append to {PROJECT}/settings.py",
        f"write {PROJECT}/asgi.py",
        f"append to {PROJECT}/urls.py",
        "write notes/models.py",
        "write notes/functions.py",
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NewProject]:
    folder = tmp_path_factory.mktemp("readme") / "site"
    folder.mkdir()
    # The new project's own settings, the repository's reactive: nothing of the test run's.
    env = django_env(PROJECT + ".settings", DJANGO_SETTINGS_MODULE=None, REDIS_URL=None, DATABASE_URL=None)
    env["PYTHONPATH"] = str(ROOT)
    follow_the_readme(folder, env)
    run([sys.executable, "manage.py", "makemigrations", "notes", "-v0"], folder, env)
    run([sys.executable, "manage.py", "migrate", "-v0"], folder, env)
    port = free_port()
    server = Process.start(
        "runserver",
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        env,
        folder / "runserver.log",
        port,
        cwd=folder,
    )
    try:
        server.wait_until_listening()
        yield NewProject(folder, env, server)
    finally:
        server.stop()


def test_the_new_project_passes_every_check_without_a_warning(project: NewProject) -> None:
    done = project.manage("check")
    assert done.stdout.strip() == "System check identified no issues (0 silenced).", done.stdout
    assert done.stderr == ""
    # runserver ran the same checks, and it is Daphne's (ASGI), not Django's WSGI one.
    log = project.server.output()
    assert "System check identified no issues (0 silenced)." in log, log
    assert "Starting ASGI/Daphne" in log, log


async def test_a_subscriber_sees_a_write_made_through_a_mutation(project: NewProject) -> None:
    client = ReactiveClient(project.server.ws_url)
    await client.connect()
    try:
        count = client.subscribe("notes.pinned_count")
        before = await count.first()
        await client.mutation("notes.add", {"text": "a pinned note"})
        assert await count.wait_for(lambda value: value == before + 1) == before + 1
        await client.mutation("notes.add", {"text": "not pinned", "pinned": False})
        await client.mutation("notes.add", {"text": "pinned again"})
        assert await count.wait_for(lambda value: value == before + 2) == before + 2
    finally:
        await client.close()


async def test_the_readme_curl_call_is_answered_and_reaches_a_subscriber(project: NewProject) -> None:
    curl = snippet("shell, http api")
    assert curl.lang == "sh"
    client = ReactiveClient(project.server.ws_url)
    await client.connect()
    try:
        count = client.subscribe("notes.pinned_count")
        before = await count.first()
        command = at_readme_address(curl.code, project.server.port)
        done = run(["bash", "-c", command], project.folder, project.env)
        assert '"ok":true' in done.stdout, done.stdout
        await count.wait_for(lambda value: value == before + 1)
    finally:
        await client.close()


def test_the_http_api_answers_a_browser_in_json_without_rest_framework_installed(
    project: NewProject,
) -> None:
    # The README leaves "rest_framework" out of INSTALLED_APPS: DRF's browsable API (its
    # templates) must never be what a browser gets.
    browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    request = Request(project.server.http_url + "/reactive/api/query", headers={"Accept": browser_accept})
    with pytest.raises(HTTPError) as raised:
        urlopen(request, timeout=30)
    assert raised.value.code == 405
    assert raised.value.headers["Content-Type"] == "application/json"
    json.loads(raised.value.read())


def test_the_readme_raw_websocket_example_gets_the_value(project: NewProject) -> None:
    example = snippet("python, raw websocket")
    code = at_readme_address(example.code, project.server.port)
    done = run([sys.executable, "-c", code], project.folder, project.env)
    assert '"type": "transition"' in done.stdout or "'type': 'transition'" in done.stdout, done.stdout


def test_the_template_snippet_renders_and_its_client_is_served(project: NewProject) -> None:
    with urlopen(project.server.http_url + "/notes/", timeout=30) as response:
        page = response.read().decode()
    assert 'import { ReactiveClient } from "/static/reactive/client.js";' in page, page
    request = Request(project.server.http_url + "/static/reactive/client.js")
    with urlopen(request, timeout=30) as response:
        assert "javascript" in response.headers["Content-Type"]
        assert "export class ReactiveClient" in response.read().decode()


def console_problems(message) -> list[str]:
    """A warning or error on the page's console (the browser's own request for a favicon aside)."""
    if message.type not in ("warning", "error") or message.location.get("url", "").endswith("/favicon.ico"):
        return []
    return [f"{message.type}: {message.text}"]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium is not installed at /usr/bin/chromium")
def test_the_template_snippet_shows_live_updates_in_a_browser(project: NewProject) -> None:
    from playwright.sync_api import expect, sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: errors.extend(console_problems(message)))
            page.goto(project.server.http_url + "/notes/")
            shown = page.locator("#pinned")
            expect(shown).to_have_text(re.compile(r"^\d+$"), timeout=WAIT_MS)
            before = int(shown.text_content() or "")
            body = '{"name": "notes.add", "args": {"text": "from the browser test"}}'
            urlopen(
                Request(
                    project.server.http_url + "/reactive/api/mutation",
                    data=body.encode(),
                    headers={"Content-Type": "application/json"},
                ),
                timeout=30,
            ).read()
            expect(shown).to_have_text(str(before + 1), timeout=WAIT_MS)
        finally:
            browser.close()
    assert errors == [], f"errors on the page: {errors}"


def test_every_marked_block_is_used_by_this_test() -> None:
    used = {
        f"append to {PROJECT}/settings.py",
        f"write {PROJECT}/asgi.py",
        f"append to {PROJECT}/urls.py",
        "write notes/models.py",
        "write notes/functions.py",
        "template",
        "shell, http api",
        "python, raw websocket",
    }
    assert {s.what for s in readme_snippets()} == used
