from django.contrib import admin

from .models import MutationRecord


@admin.register(MutationRecord)
class MutationRecordAdmin(admin.ModelAdmin):
    list_display = ("identity", "session_id", "request_id", "created")
    search_fields = ("identity", "session_id")
    readonly_fields = ("identity", "session_id", "request_id", "fingerprint", "payload", "created")
