from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import include, path

from . import views
from .datasets import views as dataset_views
from .quality import views as quality_views

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("projects/new/", views.project_new, name="project-new"),
    path("projects/<int:project_id>/", views.project_detail, name="project"),
    path("projects/<int:project_id>/settings/", views.project_edit, name="project-edit"),
    path("projects/<int:project_id>/members/", views.project_members, name="project-members"),
    path("projects/<int:project_id>/import/", views.project_import, name="project-import"),
    path("projects/<int:project_id>/instructions/", views.instructions, name="instructions"),
    path("projects/<int:project_id>/annotate/", views.annotate, name="annotate"),
    path("projects/<int:project_id>/annotate/judge/", views.judge, name="judge"),
    path("projects/<int:project_id>/annotate/skip/", views.skip, name="skip"),
    path("projects/<int:project_id>/annotate/undo/", views.undo, name="undo"),
    path("api/", include("annotate.api.urls")),
    path("admin/", admin.site.urls),
    path("", include("training.urls")),
]


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": "Not found."}, status=404)
    return render(request, "404.html", status=404)


def handler500(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": "Internal server error."}, status=500)
    return render(request, "500.html", status=500)


urlpatterns += [
    path("projects/<int:project_id>/datasets/", dataset_views.datasets, name="datasets"),
    path(
        "projects/<int:project_id>/datasets/import/",
        dataset_views.dataset_import,
        name="datasets-import",
    ),
    path(
        "projects/<int:project_id>/datasets/export/",
        dataset_views.dataset_export,
        name="datasets-export",
    ),
    path(
        "projects/<int:project_id>/datasets/jobs/<int:job_id>/",
        dataset_views.dataset_job,
        name="dataset-job",
    ),
    path(
        "projects/<int:project_id>/datasets/jobs/<int:job_id>/download/",
        dataset_views.dataset_job_download,
        name="dataset-job-download",
    ),
]

urlpatterns += [
    path("projects/<int:project_id>/quality/", quality_views.quality, name="quality"),
    path(
        "projects/<int:project_id>/quality/gold/", quality_views.quality_gold, name="quality-gold"
    ),
    path(
        "projects/<int:project_id>/quality/resume/",
        quality_views.quality_resume,
        name="quality-resume",
    ),
]
