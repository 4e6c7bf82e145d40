"""REST endpoints for the loop: list rounds and versions, start a round (leads), the
leaderboard of versions rated from people's eval judgments (members)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from annotate import services as annotate_services

from . import services
from .models import ModelVersion, Round
from .services.evaluation import leaderboard as rate_versions


class VersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["id", "number", "state", "spec", "parent", "metrics", "gate", "created_at"]


class RoundStatsSerializer(serializers.Serializer):
    """``Round.stats``: keys appear as the round gets that far (None: nothing to measure)."""

    completions = serializers.IntegerField(required=False, help_text="policy's train samples")
    truncated_share = serializers.FloatField(
        required=False, allow_null=True, help_text="share of them cut off by max_new_tokens"
    )
    mean_tokens = serializers.FloatField(required=False, allow_null=True)
    tokens_per_s = serializers.FloatField(
        required=False, allow_null=True, help_text="sampling pace of the last generation"
    )
    eta_s = serializers.FloatField(
        required=False, allow_null=True, help_text="seconds of sampling left while generating"
    )
    judgments = serializers.IntegerField(
        required=False, help_text="votes on train pairs when training started"
    )
    tie_rate = serializers.FloatField(required=False, allow_null=True)
    both_bad_rate = serializers.FloatField(required=False, allow_null=True)
    agreement = serializers.FloatField(
        required=False,
        allow_null=True,
        help_text="mean share of votes for the most common choice, pairs with 2+ votes",
    )
    pairs_with_several_votes = serializers.IntegerField(required=False)


class RoundSerializer(serializers.ModelSerializer):
    policy = serializers.IntegerField(source="policy.number")
    stats = RoundStatsSerializer(read_only=True)
    new_version = serializers.SerializerMethodField()
    training = serializers.SerializerMethodField()

    class Meta:
        model = Round
        fields = [
            "id",
            "number",
            "state",
            "policy",
            "new_version",
            "progress_done",
            "progress_total",
            "training",
            "stats",
            "error",
            "created_at",
            "finished_at",
        ]

    def get_new_version(self, loop_round: Round) -> int | None:
        version = ModelVersion.objects.filter(trained_in=loop_round).first()
        return version.number if version else None

    def get_training(self, loop_round: Round) -> dict[str, Any] | None:
        run = loop_round.latest_run()
        if run is None:
            return None
        return {
            "attempt": run.attempt,
            "state": run.state,
            "step": run.step,
            "total_steps": run.total_steps,
            "loss": run.loss,
            "error": run.error,
        }


@extend_schema(methods=["GET"], responses=RoundSerializer(many=True))
@extend_schema(methods=["POST"], request=None, responses={201: RoundSerializer})
@api_view(["GET", "POST"])
def rounds(request: Request, project_id: int) -> Response:
    project = annotate_services.get_project(request.user, project_id, lead=request.method == "POST")
    if request.method == "POST":
        loop_round = services.start_round(project)
        return Response(RoundSerializer(loop_round).data, status=status.HTTP_201_CREATED)
    queryset = Round.objects.filter(project=project).select_related("policy").order_by("number")
    return Response(RoundSerializer(queryset, many=True).data)


@extend_schema(responses=VersionSerializer(many=True))
@api_view(["GET"])
def versions(request: Request, project_id: int) -> Response:
    project = annotate_services.get_project(request.user, project_id)
    services.base_version(project)
    queryset = ModelVersion.objects.filter(project=project).order_by("number")
    return Response(VersionSerializer(queryset, many=True).data)


class LeaderboardEntrySerializer(serializers.Serializer):
    version = serializers.CharField(help_text='"base", "v1", ...')
    rating = serializers.FloatField(help_text="Bradley-Terry rating on the Elo scale, base = 1000")
    ci95 = serializers.ListField(
        child=serializers.FloatField(),
        min_length=2,
        max_length=2,
        help_text="95% interval of the rating, from a bootstrap over eval prompts",
    )
    comparisons = serializers.IntegerField(help_text="judged eval comparisons it took part in")


class LeaderboardSerializer(serializers.Serializer):
    versions = LeaderboardEntrySerializer(many=True)


@extend_schema(
    responses=LeaderboardSerializer,
    description=(
        "Bradley-Terry ratings of the project's versions from people's judgments of eval "
        "comparisons (ties and both-bad count half), on the Elo scale with the base at 1000, "
        "with 95% intervals from a bootstrap over eval prompts. Versions without a judged "
        "eval comparison are not listed."
    ),
)
@api_view(["GET"])
def leaderboard(request: Request, project_id: int) -> Response:
    project = annotate_services.get_project(request.user, project_id)
    entries = [entry.to_dict() for entry in rate_versions(project)]
    return Response({"versions": entries})
