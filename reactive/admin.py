from django.contrib import admin

from .models import MutationRecord


@admin.register(MutationRecord)
class MutationRecordAdmin(admin.ModelAdmin):
    list_display = ("session_id", "request_id", "created")
    search_fields = ("session_id",)
    readonly_fields = ("session_id", "request_id", "payload", "created")
