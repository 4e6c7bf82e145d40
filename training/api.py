"""REST endpoints for the loop: list rounds and versions, start a round (leads), the
leaderboard of versions rated from people's eval judgments (members)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from annotate import services as annotate_services
from annotate.models import Membership

from . import services
from .model_roots import is_hub_id
from .models import ModelVersion, Round
from .services.leaderboard import leaderboard as rate_versions
from .services.round_stats import NOT_TRAINED, pair_counts


def _interval() -> serializers.ListField:
    return serializers.ListField(
        child=serializers.FloatField(),
        min_length=2,
        max_length=2,
        help_text="95% interval of the win rate, from a bootstrap over prompts",
    )


class RollbackSerializer(serializers.Serializer):
    round = serializers.IntegerField(help_text="the round whose eval judgments were checked")
    opponent = serializers.CharField(help_text="the parent version")
    win_rate = serializers.FloatField(help_text="people's win rate over the parent, ties half")
    ci95 = _interval()
    prompts = serializers.IntegerField()
    comparisons = serializers.IntegerField(help_text="judgments counted")
    rolled_back = serializers.BooleanField(help_text="the interval lay wholly below 0.5")


class GateSerializer(serializers.Serializer):
    """The promotion gate's decision on a version; keys a gate did not use are left out."""

    mode = serializers.ChoiceField(
        ["simulated", "human", "heldout", "off"], help_text="the gate that decided"
    )
    decision = serializers.ChoiceField(["promoted", "rejected", "waiting"])
    passed = serializers.BooleanField(allow_null=True, help_text="null while waiting")
    reasons = serializers.ListField(child=serializers.CharField())
    opponent = serializers.CharField(help_text="the serving version it was compared with")
    judge = serializers.CharField(help_text="the simulated gate's rule")
    win_rate = serializers.FloatField(help_text="win rate over the opponent, ties half")
    ci95 = _interval()
    prompts = serializers.IntegerField(help_text="dev prompts (bootstrap clusters)")
    comparisons = serializers.IntegerField(help_text="outcomes counted")
    samples = serializers.IntegerField(help_text="samples per dev prompt and version")
    criterion = serializers.DictField(
        child=serializers.FloatField(), help_text="min_win_rate and margin it was held to"
    )
    needed = serializers.IntegerField(help_text="human gate: comparisons shown to people")
    judged = serializers.IntegerField(help_text="human gate: comparisons people have judged")
    identical = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="human gate: per dev prompt id, slots with equal texts, counted as ties",
    )
    checks = serializers.DictField(help_text="held-out pair checks: before, after, limits")
    rollback = RollbackSerializer(help_text="auto_rollback's check in the next round")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = False  # each gate stores only the keys it uses


def _for_leads(serializer: serializers.Serializer) -> bool:
    """Leads see server paths and error details; annotators see neither."""
    return bool(serializer.context.get("lead", True))


class VersionSerializer(serializers.ModelSerializer):
    # DRF's metaclass takes declared fields off the class, so "label" and "parent" do not
    # replace Field.label and Field.parent at run time; the ignores tell mypy so.
    label = serializers.CharField(  # type: ignore[assignment]
        read_only=True, help_text='"base", "v1", ...: the name used on every page and export'
    )
    parent = serializers.CharField(  # type: ignore[assignment]
        source="parent.label",
        read_only=True,
        allow_null=True,
        default=None,
        help_text='the version it was trained from, by name ("base", "v1", ...); null for base',
    )
    parent_id = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="the parent's id (null for base)"
    )
    model = serializers.CharField(
        source="model_name",
        read_only=True,
        help_text='what the OpenAI-compatible server calls it: "<project-slug>:v1"',
    )
    gate = GateSerializer(read_only=True)
    spec = serializers.SerializerMethodField(
        help_text="what the version loads: a path or hub id for leads; for annotators a hub "
        'id or "demo" only, null for a path'
    )

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "number",
            "label",
            "model",
            "state",
            "spec",
            "parent",
            "parent_id",
            "metrics",
            "gate",
            "created_at",
        ]

    def get_spec(self, version: ModelVersion) -> str | None:
        if _for_leads(self) or version.spec == "demo" or is_hub_id(version.spec):
            return version.spec
        return None


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
    retokenize_mismatches = serializers.IntegerField(
        required=False,
        help_text="rounds sampled through a serving engine (generation_backend openai): samples "
        "whose text did not re-encode to the engine's tokens, trained from their text",
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


class PairCountsSerializer(serializers.Serializer):
    """What a round trains on, counted live with the label rule training uses."""

    trained = serializers.IntegerField(
        help_text="the round's own train pairs: the rows of the export named by `export`"
    )
    replayed = serializers.IntegerField(help_text="earlier rounds' pairs trained with them")
    judged = serializers.IntegerField(
        help_text="comparisons of the round with a vote, every kind: trained + not_trained"
    )
    unjudged = serializers.IntegerField(help_text="train comparisons without a vote yet")
    not_trained = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="judged comparisons that give no pair, by reason: "
        + ", ".join(f"{key} ({why})" for key, (_, _, why) in NOT_TRAINED.items()),
    )
    export = serializers.DictField(
        help_text="export options whose rows are exactly the trained pairs: rounds, kinds, weight"
    )


class RoundSerializer(serializers.ModelSerializer):
    policy = serializers.IntegerField(source="policy.number")
    policy_label = serializers.CharField(
        source="policy.label", read_only=True, help_text="the version that sampled the round"
    )
    stats = RoundStatsSerializer(read_only=True)
    new_version = serializers.SerializerMethodField()
    new_version_label = serializers.SerializerMethodField()
    pairs = serializers.SerializerMethodField()
    training = serializers.SerializerMethodField()

    class Meta:
        model = Round
        fields = [
            "id",
            "number",
            "state",
            "policy",
            "policy_label",
            "new_version",
            "new_version_label",
            "progress_done",
            "progress_total",
            "training",
            "pairs",
            "stats",
            "error",
            "created_at",
            "finished_at",
        ]

    def get_new_version(self, loop_round: Round) -> int | None:
        version = ModelVersion.objects.filter(trained_in=loop_round).first()
        return version.number if version else None

    @extend_schema_field(
        serializers.CharField(allow_null=True, help_text='the version it trained: "v1", ...')
    )
    def get_new_version_label(self, loop_round: Round) -> str | None:
        version = ModelVersion.objects.filter(trained_in=loop_round).first()
        return version.label if version else None

    @extend_schema_field(PairCountsSerializer)
    def get_pairs(self, loop_round: Round) -> dict[str, Any]:
        return pair_counts(loop_round).to_dict()

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
            "error": run.error if _for_leads(self) else _hidden(run.error),
        }

    def to_representation(self, instance: Round) -> dict[str, Any]:
        data = dict(super().to_representation(instance))
        if not _for_leads(self):
            data["error"] = _hidden(data.get("error"))
        return data


def _hidden(error: str | None) -> str:
    """An error as annotators see it: that there was one, without its details."""
    return "Failed; a lead can see why." if error else ""


@extend_schema(methods=["GET"], responses=RoundSerializer(many=True))
@extend_schema(methods=["POST"], request=None, responses={201: RoundSerializer})
@api_view(["GET", "POST"])
def rounds(request: Request, project_id: int) -> Response:
    project = annotate_services.get_project(request.user, project_id, lead=request.method == "POST")
    if request.method == "POST":
        loop_round = services.start_round(project)
        return Response(RoundSerializer(loop_round).data, status=status.HTTP_201_CREATED)
    queryset = Round.objects.filter(project=project).select_related("policy").order_by("number")
    context = {"lead": project.role_of(request.user) == Membership.Role.LEAD}
    return Response(RoundSerializer(queryset, many=True, context=context).data)


@extend_schema(responses=VersionSerializer(many=True))
@api_view(["GET"])
def versions(request: Request, project_id: int) -> Response:
    project = annotate_services.get_project(request.user, project_id)
    services.base_version(project)
    queryset = ModelVersion.objects.filter(project=project).order_by("number")
    context = {"lead": project.role_of(request.user) == Membership.Role.LEAD}
    return Response(VersionSerializer(queryset, many=True, context=context).data)


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
