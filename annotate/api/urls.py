from django.urls import path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token

from annotate.datasets import api as dataset_views
from annotate.quality import api as quality_views

from . import views


class IdConverter:
    """A row id: digits that fit a signed 64-bit column, so a longer number is a 404 rather
    than an overflow in the database driver."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "id")

urlpatterns = [
    path("auth/token/", obtain_auth_token, name="api-token"),
    path("projects/", views.projects, name="api-projects"),
    path("projects/<id:project_id>/", views.project_detail, name="api-project"),
    path("projects/<id:project_id>/members/", views.project_members, name="api-members"),
    path("projects/<id:project_id>/prompts/", views.project_prompts, name="api-prompts"),
    path(
        "projects/<id:project_id>/comparisons/", views.project_comparisons, name="api-comparisons"
    ),
    path("projects/<id:project_id>/next/", views.next_task, name="api-next"),
    path(
        "comparisons/<id:comparison_id>/judgments/",
        views.comparison_judgments,
        name="api-judgments",
    ),
    path("judgments/<id:judgment_id>/", views.judgment_detail, name="api-judgment"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]

urlpatterns += [
    path(
        "projects/<id:project_id>/import/", dataset_views.dataset_import, name="api-dataset-import"
    ),
    path(
        "projects/<id:project_id>/export/", dataset_views.dataset_export, name="api-dataset-export"
    ),
    path(
        "projects/<id:project_id>/jobs/<id:job_id>/",
        dataset_views.dataset_job,
        name="api-dataset-job",
    ),
    path(
        "projects/<id:project_id>/jobs/<id:job_id>/download/",
        dataset_views.dataset_job_download,
        name="api-dataset-job-download",
    ),
]

urlpatterns += [
    path("projects/<int:project_id>/quality/", quality_views.project_quality, name="api-quality"),
    path(
        "projects/<int:project_id>/comparisons/<int:comparison_id>/gold/",
        quality_views.comparison_gold,
        name="api-gold",
    ),
    path(
        "projects/<int:project_id>/members/<str:username>/pause/",
        quality_views.member_pause,
        name="api-member-pause",
    ),
    path(
        "projects/<int:project_id>/members/<str:username>/resume/",
        quality_views.member_resume,
        name="api-member-resume",
    ),
]
