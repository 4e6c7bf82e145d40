"""The REST API. Views check access, call one service function and serialise."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import api_view, authentication_classes
from rest_framework.request import Request
from rest_framework.response import Response

from annotate import services, tokens
from annotate.datasets.imports import import_records
from annotate.errors import NotFound
from annotate.models import Judgment

from . import bodies
from .authentication import TokenInFirstStatement, token_checked_first
from .schema import error_response
from .serializers import (
    ImportReportSerializer,
    JudgmentInputSerializer,
    JudgmentSerializer,
    MemberSerializer,
    ProjectSerializer,
    TaskSerializer,
)

# The annotation loop's bodies and answers go through one serializer instance each, built once:
# building a serializer's fields costs more than using them, and neither validating
# (``run_validation``) nor rendering keeps state on the instance.
_TASK = TaskSerializer()
_JUDGMENT = JudgmentSerializer()
_JUDGMENT_INPUT = JudgmentInputSerializer()


@extend_schema(methods=["GET"], responses=ProjectSerializer(many=True))
@extend_schema(methods=["POST"], request=ProjectSerializer, responses={201: ProjectSerializer})
@api_view(["GET", "POST"])
def projects(request: Request) -> Response:
    if request.method == "GET":
        qs = services.projects_for(request.user).order_by("name", "id")
        return Response(ProjectSerializer(qs, many=True, context={"request": request}).data)
    serializer = ProjectSerializer(data=request.data, context={"request": request})
    serializer.is_valid(raise_exception=True)
    project = services.create_project(request.user, **serializer.validated_data)
    return Response(ProjectSerializer(project, context={"request": request}).data, status=201)


@extend_schema(methods=["GET"], responses=ProjectSerializer)
@extend_schema(methods=["PATCH"], request=ProjectSerializer, responses=ProjectSerializer)
@api_view(["GET", "PATCH"])
def project_detail(request: Request, project_id: int) -> Response:
    project = services.get_project(request.user, project_id, lead=request.method == "PATCH")
    if request.method == "PATCH":
        serializer = ProjectSerializer(
            project, data=request.data, partial=True, context={"request": request}
        )
        serializer.is_valid(raise_exception=True)
        services.update_project(request.user, project, dict(serializer.validated_data))
        project.refresh_from_db()
    return Response(ProjectSerializer(project, context={"request": request}).data)


@extend_schema(request=MemberSerializer, responses={201: MemberSerializer})
@api_view(["POST"])
def project_members(request: Request, project_id: int) -> Response:
    project = services.get_project(request.user, project_id, lead=True)
    serializer = MemberSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    membership = services.add_member(project, **serializer.validated_data)
    return Response(
        {"username": membership.user.get_username(), "role": membership.role}, status=201
    )


def _import(request: Request, project_id: int, kind: str) -> Response:
    project = services.get_project(request.user, project_id, lead=True)
    report = import_records(project, kind, request.data)
    return Response(report.as_dict(), status=201)


@extend_schema(
    request=bodies.PROMPTS,
    responses={201: ImportReportSerializer},
    description=(
        'A JSON list of {"prompt": "..."} or {"messages": [...]}, optional "metadata" and "split".'
    ),
)
@api_view(["POST"])
def project_prompts(request: Request, project_id: int) -> Response:
    return _import(request, project_id, "prompts")


@extend_schema(
    request=bodies.PAIRS,
    responses={201: ImportReportSerializer},
    description='A JSON list of {"prompt" or "messages", "completion_a", "completion_b"}.',
)
@api_view(["POST"])
def project_comparisons(request: Request, project_id: int) -> Response:
    return _import(request, project_id, "pairs")


# The annotation loop's two views check the token inside their first statement (see
# ``annotate.api.authentication``); a session works as everywhere else.
_LOOP_AUTHENTICATION = [TokenInFirstStatement, SessionAuthentication]


@extend_schema(
    responses={200: TaskSerializer, 204: OpenApiResponse(description="Nothing left for you.")}
)
@api_view(["GET"])
@authentication_classes(_LOOP_AUTHENTICATION)
def next_task(request: Request, project_id: int) -> Response:
    with token_checked_first(request):
        project, state, request.user = services.get_project_for_queue(request.user, project_id)
        lease = services.next_lease(project, request.user, state=state)
    if lease is None:
        return Response(status=status.HTTP_204_NO_CONTENT)
    data = services.shown_task(lease)
    data["instructions"] = project.instructions
    data["show_strength"] = project.show_strength
    data["rationale"] = project.rationale
    return Response(_TASK.to_representation(data))


@extend_schema(
    methods=["POST"],
    request=JudgmentInputSerializer,
    responses={
        201: JudgmentSerializer,
        200: OpenApiResponse(JudgmentSerializer, description="a resent client_id: the first"),
        410: error_response("Your lease on the pair expired: ask for the next pair."),
    },
)
@extend_schema(methods=["DELETE"], responses={204: None})
@api_view(["POST", "DELETE"])
@authentication_classes(_LOOP_AUTHENTICATION)
def comparison_judgments(request: Request, comparison_id: int) -> Response:
    with token_checked_first(request):
        if request.method == "DELETE":
            user = tokens.resolve(request.user)
            mine = Judgment.objects.filter(comparison_id=comparison_id, annotator=user).first()
            if mine is None:
                raise NotFound("You have no judgment on this comparison.")
            services.undo_judgment(user, judgment_id=mine.pk)
            return Response(status=status.HTTP_204_NO_CONTENT)
        judgment, created = services.submit_judgment(
            request.user,
            comparison_id,
            services.JudgmentInput(**_JUDGMENT_INPUT.run_validation(request.data)),
        )
    return Response(_JUDGMENT.to_representation(judgment), status=201 if created else 200)


@extend_schema(responses={204: None})
@api_view(["DELETE"])
def judgment_detail(request: Request, judgment_id: int) -> Response:
    services.undo_judgment(request.user, judgment_id=judgment_id)
    return Response(status=status.HTTP_204_NO_CONTENT)
