"""HTTP endpoints: ``path("reactive/", include("reactive.urls"))``."""

from django.urls import path

from .server import views

app_name = "reactive"

urlpatterns = [
    path("api/query", views.FunctionView.as_view(), name="query"),
    path("api/mutation", views.MutationView.as_view(), name="mutation"),
    path("api/action", views.ActionView.as_view(), name="action"),
]
