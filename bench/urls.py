"""URLs of the benchmark servers: the plain views, and ``reactive``'s HTTP API when installed."""

from django.apps import apps
from django.urls import include, path

from bench.benchapp import views

urlpatterns = [
    path("bench/bump", views.bump),
    path("bench/reset", views.reset),
]

if apps.is_installed("reactive"):
    urlpatterns += [path("reactive/", include("reactive.urls")), path("bench/user", views.user)]
