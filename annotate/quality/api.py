"""Quality API: the report, gold answers, pause and resume. Leads only."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from annotate import services
from annotate.errors import InvalidInput
from annotate.models import Comparison, Membership

from . import gold
from .report import quality_report
from .serializers import (
    GoldInputSerializer,
    GoldSerializer,
    MemberStateSerializer,
    PauseInputSerializer,
    QualitySerializer,
)

_NAMES = ("usernames", "pseudonyms")


@extend_schema(
    parameters=[
        OpenApiParameter(
            "names",
            str,
            enum=list(_NAMES),
            description="usernames (default) or the salted pseudonyms the exports use",
        )
    ],
    responses=QualitySerializer,
    description=(
        "Agreement, position and length bias, speed and gold accuracy. Categories are what the "
        "annotator meant (A, B, tie, both-bad), not the side shown; an undefined statistic is "
        "null; intervals are `<name>_ci95`."
    ),
)
@api_view(["GET"])
def project_quality(request: Request, project_id: int) -> Response:
    project = services.get_project(request.user, project_id, lead=True)
    names = request.query_params.get("names", "usernames")
    if names not in _NAMES:
        raise InvalidInput(f"names must be one of {', '.join(_NAMES)}.")
    return Response(quality_report(project, pseudonyms=names == "pseudonyms"))


def _gold(comparison: Comparison) -> dict[str, object]:
    return {
        "comparison": comparison.pk,
        "kind": comparison.kind,
        "gold_choice": comparison.gold_choice,
    }


@extend_schema(
    methods=["PUT"],
    request=GoldInputSerializer,
    responses=GoldSerializer,
    description="Make the pair gold with its right answer (on the completions A / B).",
)
@extend_schema(
    methods=["DELETE"],
    responses={200: GoldSerializer},
    description="Take the pair out of gold.",
)
@api_view(["PUT", "DELETE"])
def comparison_gold(request: Request, project_id: int, comparison_id: int) -> Response:
    project = services.get_project(request.user, project_id, lead=True)
    if request.method == "DELETE":
        return Response(_gold(gold.unmark_gold(request.user, project, comparison_id)))
    serializer = GoldInputSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    comparison = gold.mark_gold(
        request.user, project, comparison_id, serializer.validated_data["answer"]
    )
    return Response(_gold(comparison))


def _member(membership: Membership) -> dict[str, object]:
    return {
        "username": membership.user.get_username(),
        "paused": membership.paused,
        "paused_reason": membership.paused_reason,
    }


@extend_schema(request=PauseInputSerializer, responses=MemberStateSerializer)
@api_view(["POST"])
def member_pause(request: Request, project_id: int, username: str) -> Response:
    project = services.get_project(request.user, project_id, lead=True)
    serializer = PauseInputSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    membership = gold.pause(request.user, project, username, serializer.validated_data["reason"])
    return Response(_member(membership))


@extend_schema(request=None, responses=MemberStateSerializer)
@api_view(["POST"])
def member_resume(request: Request, project_id: int, username: str) -> Response:
    project = services.get_project(request.user, project_id, lead=True)
    return Response(_member(gold.resume(request.user, project, username)))
