"""``manage.py reactive_worker``: run the invalidator for the Redis backend."""

from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from reactive.backends import get_backend
from reactive.engine.worker import Worker
from reactive.settings import reactive_settings


class Command(BaseCommand):
    help = (
        "Run the reactive worker: match committed changes against live queries, re-run them and "
        "push the results. Start two for a standby; one holds the lease at a time."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if reactive_settings.BACKEND != "redis":
            raise CommandError(
                "reactive_worker is for the redis backend; the embedded backend runs its worker "
                "inside the server process."
            )
        worker = Worker(get_backend())
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: worker.stop())
        self.stdout.write(f"reactive worker {worker.token[:8]} started; waiting for the lease")
        worker.run_forever()
        self.stdout.write("reactive worker stopped")
