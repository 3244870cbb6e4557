"""Test settings: the demo project plus a test-only app of models covering every relation kind."""

import os

from project.settings import *  # noqa: F403
from project.settings import BASE_DIR, INSTALLED_APPS, REDIS_URL, sqlite_database

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]

if not os.environ.get("DATABASE_URL"):
    _DATABASE_PATH = os.environ.get("SQLITE_PATH", str(BASE_DIR / ".test-db.sqlite3"))
    DATABASES = {"default": {**sqlite_database(_DATABASE_PATH), "TEST": {"NAME": _DATABASE_PATH}}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Small limits so tests reach them quickly; the documented defaults are tested in-process.
REACTIVE = {
    "BACKEND": "redis" if REDIS_URL else "embedded",
    # Each test server runs its own worker (alone on its Redis database, it holds the lease).
    "RUN_WORKER_IN_SERVER": bool(REDIS_URL),
    "MAX_SUBSCRIPTIONS": 100,
    "MAX_INFLIGHT_REQUESTS": 20,
    "RATE_LIMIT_PER_SECOND": 2000,
    "RATE_LIMIT_BURST": 3000,
    "CLOCK": "tests.clock.now",
}
