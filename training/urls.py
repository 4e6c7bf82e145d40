from django.urls import path

from . import api, playground_views, stall_views, views

urlpatterns = [
    path("projects/<int:project_id>/loop/", views.loop, name="loop"),
    path("projects/<int:project_id>/loop/status/", views.loop_status, name="loop-status"),
    path("projects/<int:project_id>/loop/start/", views.round_start, name="loop-start"),
    path("projects/<int:project_id>/loop/settings/", views.loop_settings, name="loop-settings"),
    path(
        "projects/<int:project_id>/loop/rounds/<int:round_id>/train/",
        views.round_train,
        name="loop-train",
    ),
    path(
        "projects/<int:project_id>/loop/rounds/<int:round_id>/retry/",
        views.round_retry,
        name="loop-retry",
    ),
    path(
        "projects/<int:project_id>/loop/rounds/<int:round_id>/release-leases/",
        stall_views.release_leases,
        name="loop-release-leases",
    ),
    path(
        "projects/<int:project_id>/loop/rounds/<int:round_id>/lower-target/",
        stall_views.lower_target,
        name="loop-lower-target",
    ),
    path(
        "projects/<int:project_id>/loop/rounds/<int:round_id>/train-judged/",
        stall_views.train_judged,
        name="loop-train-judged",
    ),
    path(
        "projects/<int:project_id>/loop/versions/<int:version_id>/promote/",
        views.version_promote,
        name="loop-promote",
    ),
    path(
        "projects/<int:project_id>/playground/",
        playground_views.playground,
        name="playground",
    ),
    path("api/projects/<int:project_id>/rounds/", api.rounds, name="api-rounds"),
    path("api/projects/<int:project_id>/versions/", api.versions, name="api-versions"),
    path("api/projects/<int:project_id>/leaderboard/", api.leaderboard, name="api-leaderboard"),
]
