from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("form/", views.form),
    path("counter/", views.counter),
    path("upload/", views.upload),
    path("file/", views.file),
    path("stream/", views.stream),
    path("raise/", views.boom),
]
