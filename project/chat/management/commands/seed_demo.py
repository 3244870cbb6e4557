"""``manage.py seed_demo``: the demo's user, channels, welcome messages and tasks.

Idempotent: it only creates what does not exist yet, so running it twice changes nothing.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from project.chat.models import Channel, Message
from project.tasks.models import Task

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo"

CHANNELS = {
    "general": [
        "Welcome to #general! Open this page in a second window and send a message.",
        "Every message arrives in every open window right after the mutation commits.",
    ],
    "random": ["Welcome to #random: anything goes."],
}

TASKS = [
    "Open the demo in two browser windows",
    "Send a message and watch it appear in both",
    "Tick off this task",
]


class Command(BaseCommand):
    help = "Create the demo user, channels, welcome messages and tasks (only what is missing)."

    def handle(self, *args: Any, **options: Any) -> None:
        done: list[str] = []
        with transaction.atomic():
            user = self._demo_user(done)
            for name, welcomes in CHANNELS.items():
                channel, created = Channel.objects.get_or_create(name=name)
                if created:
                    for body in welcomes:
                        Message.objects.create(channel=channel, author=user, body=body)
                    done.append(f"created channel #{name} with {len(welcomes)} welcome message(s)")
                if not channel.members.filter(pk=user.pk).exists():
                    channel.members.add(user)
                    done.append(f"added user {DEMO_USERNAME!r} to #{name}")
            for text in TASKS:
                _task, created = Task.objects.get_or_create(text=text)
                if created:
                    done.append(f"created task {text!r}")
        if done:
            for line in done:
                self.stdout.write(f"seed_demo: {line}")
        else:
            self.stdout.write("seed_demo: the demo data already exists; nothing to do.")

    def _demo_user(self, done: list[str]) -> Any:
        User = get_user_model()
        user = User.objects.filter(username=DEMO_USERNAME).first()
        if user is None:
            user = User.objects.create_user(username=DEMO_USERNAME, password=DEMO_PASSWORD)
            done.append(f"created user {DEMO_USERNAME!r} (password {DEMO_PASSWORD!r})")
        return user
