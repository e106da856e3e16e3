from django.urls import path, re_path

from . import views

urlpatterns = [
    path("items/", views.item_list),
    path("items/<int:pk>/", views.item_detail),
    re_path(r"^archive/(?P<year>[0-9]{4})/$", views.archive),
    path("private/", views.private),
    path("boom/", views.boom),
    path("stream/", views.stream),
    path("async/", views.async_view),
]
