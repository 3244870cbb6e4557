"""Settings of the benchmark servers: the demo project (embedded backend) plus ``bench.benchapp``.

``BENCH_READ_SETS`` (environment) sets ``REACTIVE["READ_SETS"]``: "rows" (the default) or
"tables", the table-level baseline. Limits are the documented defaults except two that a
benchmark from one address would hit: every socket comes from 127.0.0.1 (no per-address cap),
and a writer's connection sends hundreds of mutations a second (no rate limit).
"""

import os

from project.settings import *  # noqa: F403
from project.settings import BASE_DIR, INSTALLED_APPS, sqlite_database

INSTALLED_APPS = [*INSTALLED_APPS, "bench.benchapp"]
ROOT_URLCONF = "bench.urls"

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

DATABASES = {"default": sqlite_database(os.environ.get("SQLITE_PATH", str(BASE_DIR / ".bench-db.sqlite3")))}
if os.environ.get("BENCH_DATABASE_URL"):  # the overhead part on Postgres (bench/overhead.py)
    import dj_database_url

    DATABASES = {"default": dj_database_url.parse(os.environ["BENCH_DATABASE_URL"], conn_max_age=600)}

# The embedded backend whatever REDIS_URL says.
REACTIVE = {
    "BACKEND": "embedded",
    "READ_SETS": os.environ.get("BENCH_READ_SETS", "rows"),
    "MAX_CONNECTIONS_PER_ADDRESS": None,
    "RATE_LIMIT_PER_SECOND": 1_000_000,
    "RATE_LIMIT_BURST": 1_000_000,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "reactive": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        "django": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
