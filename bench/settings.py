"""Settings of the benchmark server: the demo project (embedded backend) plus ``bench.benchapp``."""

import os

from project.settings import *  # noqa: F403
from project.settings import BASE_DIR, INSTALLED_APPS, sqlite_database

INSTALLED_APPS = [*INSTALLED_APPS, "bench.benchapp"]

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

DATABASES = {"default": sqlite_database(os.environ.get("SQLITE_PATH", str(BASE_DIR / ".bench-db.sqlite3")))}
if os.environ.get("BENCH_DATABASE_URL"):  # the overhead part on Postgres (bench/overhead.py)
    import dj_database_url

    DATABASES = {"default": dj_database_url.parse(os.environ["BENCH_DATABASE_URL"], conn_max_age=600)}

# The embedded backend whatever REDIS_URL says; the documented default limits.
REACTIVE = {"BACKEND": "embedded"}

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
