from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

from . import backends, checks  # noqa: F401  (system checks register on import)
from .capture import commits, patches
from .server import dashboard  # noqa: F401  (the admin dashboard's queries register on import)
from .settings import reactive_settings


class ReactiveConfig(AppConfig):
    name = "reactive"
    verbose_name = "Reactive queries"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        patches.install()
        commits.connect(backends.sink)
        autodiscover_modules(reactive_settings.FUNCTIONS_MODULE)
