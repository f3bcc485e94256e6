from django.urls import path

from django_site import views

urlpatterns = [
    path("items/<int:item_id>/", views.item),
    path("visits/<str:name>/", views.visit),
    path("boom/", views.boom),
]
