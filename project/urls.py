from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.views import serve
from django.urls import include, path, re_path

from project import views

urlpatterns = [
    path("", views.index, name="index"),
    path("admin/", admin.site.urls),
    path("reactive/", include("reactive.urls")),
    # The demo serves its few static files (the JavaScript client, the admin's) itself, with or
    # without DEBUG, so that it runs as it is under Daphne and docker compose. A deployment of
    # your own runs collectstatic and puts a static file server, a CDN or WhiteNoise in front.
    re_path(rf"^{settings.STATIC_URL.lstrip('/')}(?P<path>.*)$", serve, {"insecure": True}),
]
