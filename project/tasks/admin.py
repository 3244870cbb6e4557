from django.contrib import admin

from .models import Task


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["text", "completed", "created"]
    list_filter = ["completed"]
    search_fields = ["text"]
