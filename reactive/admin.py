"""The app's admin: stored mutation results, and the live subscriptions dashboard.

The dashboard is at ``/admin/reactive/live/`` (``admin:reactive_live``) on whichever admin site
registers it (the default one here), for staff users only. The page is a client of the
system's own reactive queries (``server/dashboard.py``) over the WebSocket, so it moves with the
system, without a reload.
"""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from .models import Live, MutationRecord
from .settings import reactive_settings


@admin.register(MutationRecord)
class MutationRecordAdmin(admin.ModelAdmin):
    list_display = ("identity", "session_id", "request_id", "created")
    search_fields = ("identity", "session_id")
    readonly_fields = ("identity", "session_id", "request_id", "fingerprint", "payload", "created")


@admin.register(Live)
class LiveAdmin(admin.ModelAdmin):
    """The "Live subscriptions" page: every staff user may view it, nobody edits anything."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def get_urls(self):
        view = self.admin_site.admin_view(self.dashboard_view)
        return [
            path("", view, name="reactive_live"),
            path("", view, name="reactive_live_changelist"),  # the name the admin index links to
        ]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": "Live subscriptions",
            "opts": self.model._meta,
            "websocket_path": "/" + reactive_settings.WEBSOCKET_PATH.lstrip("/"),
        }
        return TemplateResponse(request, "admin/reactive/live.html", context)
