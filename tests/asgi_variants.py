"""ASGI applications a project might name in ASGI_APPLICATION, for tests/test_checks.py."""

from channels.generic.websocket import WebsocketConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path

from project.asgi import application as routed

django_only = get_asgi_application()  # what startproject writes: HTTP only

without_websocket = ProtocolTypeRouter({"http": django_only})


class OtherConsumer(WebsocketConsumer):
    pass


other_consumer = ProtocolTypeRouter(
    {"http": django_only, "websocket": URLRouter([path("ws/", OtherConsumer.as_asgi())])}
)


class Middleware:
    """An ASGI middleware of another library, keeping what it wraps in ``.app``."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


wrapped = Middleware(routed)
