from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

from project import views

urlpatterns = [
    path("", views.index, name="index"),
    path("admin/", admin.site.urls),
    path("reactive/", include("reactive.urls")),
]

# Static files (the JavaScript client) while DEBUG, also under plain `daphne project.asgi:application`.
urlpatterns += staticfiles_urlpatterns()
