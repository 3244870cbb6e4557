from django.apps import AppConfig


class TestappConfig(AppConfig):
    """Test-only models covering every field type and relation kind the read sets must handle."""

    name = "tests.testapp"
    label = "testapp"
    default_auto_field = "django.db.models.BigAutoField"
