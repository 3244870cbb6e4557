from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "project.tasks"
    label = "tasks"
    verbose_name = "Tasks (demo)"
    default_auto_field = "django.db.models.BigAutoField"
