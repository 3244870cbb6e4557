"""WebSocket routing: add ``websocket_urlpatterns`` to the project's ASGI application."""

from django.urls import path

from .server.consumer import ReactiveConsumer
from .settings import reactive_settings

websocket_urlpatterns = [path(reactive_settings.WEBSOCKET_PATH, ReactiveConsumer.as_asgi())]
