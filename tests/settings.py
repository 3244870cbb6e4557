"""Test settings: the demo project plus a test-only app of models covering every relation kind."""

import os

from project.settings import *  # noqa: F403
from project.settings import BASE_DIR, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR / ".test-db.sqlite3")),
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", "timeout": 20},
        "TEST": {"NAME": os.environ.get("SQLITE_TEST_PATH", str(BASE_DIR / ".test-db.sqlite3"))},
    }
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Small limits so tests reach them quickly; the documented defaults are tested in-process.
REACTIVE = {
    "MAX_SUBSCRIPTIONS": 100,
    "MAX_INFLIGHT_REQUESTS": 20,
    "RATE_LIMIT_PER_SECOND": 2000,
    "RATE_LIMIT_BURST": 3000,
}
