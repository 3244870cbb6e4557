from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class ReactiveConfig(AppConfig):
    name = "reactive"
    verbose_name = "Reactive queries"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, patches  # noqa: F401  (system checks register on import)
        from .settings import reactive_settings

        patches.install()
        autodiscover_modules(reactive_settings.FUNCTIONS_MODULE)
