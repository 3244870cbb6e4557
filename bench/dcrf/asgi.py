"""ASGI application of the DCRF baseline: HTTP through Django (``bench.urls``), the WebSocket
``/dcrf/ws/`` through ``CounterConsumer``. Run with ``DJANGO_SETTINGS_MODULE=bench.settings_plain``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings_plain")
django_application = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from bench.dcrf.consumers import CounterConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter([path("dcrf/ws/", CounterConsumer.as_asgi())]))
        ),
    }
)
