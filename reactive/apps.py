from django.apps import AppConfig
from django.core.signals import request_finished, request_started
from django.utils.module_loading import autodiscover_modules

from . import backends, checks  # noqa: F401  (system checks register on import)
from .capture import commits, origin, patches
from .server import dashboard  # noqa: F401  (the admin dashboard's queries register on import)
from .settings import reactive_settings


class ReactiveConfig(AppConfig):
    name = "reactive"
    verbose_name = "Reactive queries"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        patches.install()
        commits.connect(backends.sink)
        # Change records say where they come from (the admin, a view): the dashboard shows it.
        request_started.connect(origin.from_request, dispatch_uid="reactive.origin")
        request_finished.connect(origin.request_done, dispatch_uid="reactive.origin")
        autodiscover_modules(reactive_settings.FUNCTIONS_MODULE)
