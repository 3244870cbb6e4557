"""``manage.py write_path PATH [--kwargs JSON] [--kill-after-commit]``: one of ``tests.writes``
from a process of its own, as a management command or a cron job writes.

``--kill-after-commit`` SIGKILLs this process the moment a commit that appended a change record
returns, before anything else runs: the change must reach subscribers all the same.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from django.core.management.base import BaseCommand

from reactive.capture import commits
from tests import writes


class Command(BaseCommand):
    help = "Run one write path of tests/writes.py and print its result as JSON."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("path", choices=sorted(name for name in dir(writes) if not name.startswith("_")))
        parser.add_argument("--kwargs", default="{}", help="the path's arguments, a JSON object")
        parser.add_argument("--kill-after-commit", action="store_true")

    def handle(self, *args: Any, path: str, kwargs: str, kill_after_commit: bool, **options: Any) -> None:
        if kill_after_commit:
            commits.hooks.after_commit = lambda: os.kill(os.getpid(), signal.SIGKILL)
        result = writes.run(path, **json.loads(kwargs))
        self.stdout.write(json.dumps(result))
