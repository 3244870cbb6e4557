"""Whether the app is installed: the consumer and the HTTP views refuse to serve without it.

A project can route ``/reactive/ws/`` and include ``reactive.urls`` while leaving "reactive" out
of INSTALLED_APPS. Then no ``functions.py`` is discovered, no write is captured, and the system
checks (registered by the app) never run; every call would answer a puzzling ``not_found``.
Instead each request is answered with an error that says what to add, logged once.
"""

from __future__ import annotations

import logging

from django.apps import apps

from ..errors import AppNotInstalled

logger = logging.getLogger("reactive.consumers")

_logged = False


def app_installed() -> bool:
    return "reactive" in apps.app_configs


def require_app_installed() -> None:
    """Raise ``AppNotInstalled`` unless the "reactive" app config is in the app registry."""
    global _logged
    if app_installed():
        return
    error = AppNotInstalled()
    if not _logged:
        _logged = True
        logger.error("%s", error.message)
    raise error
