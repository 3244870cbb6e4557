"""The plain Django ASGI application (HTTP only, ``bench.urls``): the baseline server of the
write-throughput scenario, run with ``DJANGO_SETTINGS_MODULE=bench.settings_plain``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings_plain")
application = get_asgi_application()
