"""Settings of the Redis parts (``bench/cluster.py``): ``bench.settings`` (the demo plus
``bench.benchapp``) on the Redis backend, with Postgres from ``DATABASE_URL`` and channels_redis on
``REDIS_URL``, as ``project/settings.py`` does when both are set. Servers run no worker of their
own: one ``manage.py reactive_worker`` process holds the lease, as in production."""

import os

import dj_database_url

from bench.settings import *  # noqa: F403
from bench.settings import REACTIVE

if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
    raise RuntimeError("bench.cluster_settings needs DATABASE_URL (Postgres) and REDIS_URL")

# No persistent connections: Django's ASGI handler runs each request's sync view in a thread of
# its own, so a connection kept per thread is never reused, and under a few hundred writes a
# second they pile up until Postgres refuses more ("too many clients already").
DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=0)}

REDIS_URL = os.environ["REDIS_URL"]
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "max_connections": 1000}]},
    }
}

# bench.settings forces the embedded backend; this one is the point of the cluster benchmark.
# bench.settings' limits otherwise; RUN_WORKER_IN_SERVER stays at its default (False).
REACTIVE = {**REACTIVE, "BACKEND": "redis"}
