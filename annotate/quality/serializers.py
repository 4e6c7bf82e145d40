"""Schemas of the quality API (drf-spectacular reads them; the views return plain dicts)."""

from __future__ import annotations

from rest_framework import serializers

from annotate.models import Judgment


def _ci() -> serializers.ListField:
    return serializers.ListField(
        child=serializers.FloatField(),
        min_length=2,
        max_length=2,
        allow_null=True,
        help_text="95% percentile bootstrap interval over items [low, high]; null if undefined",
    )


def _wilson() -> serializers.ListField:
    return serializers.ListField(
        child=serializers.FloatField(),
        min_length=2,
        max_length=2,
        allow_null=True,
        help_text="95% Wilson score interval [low, high]; null without flip_items",
    )


def _num(help_text: str) -> serializers.FloatField:
    return serializers.FloatField(allow_null=True, help_text=help_text + "; null if undefined")


class CohenKappaSerializer(serializers.Serializer):
    annotators = serializers.ListField(child=serializers.CharField(), min_length=2, max_length=2)
    items = serializers.IntegerField(help_text="pairs both judged (at least 10 to be listed)")
    kappa = _num("Cohen's kappa")
    kappa_ci95 = _ci()


class BootstrapSerializer(serializers.Serializer):
    replicates = serializers.IntegerField(help_text="replicates of the project-level intervals")
    cohen_replicates = serializers.IntegerField(
        help_text="replicates of each pair's Cohen interval (a budget shared between the pairs)"
    )
    seed = serializers.IntegerField()


class AgreementSerializer(serializers.Serializer):
    items = serializers.IntegerField(help_text="pairs with two or more judgments")
    percent = _num("mean share of agreeing judgment pairs per item")
    percent_ci95 = _ci()
    fleiss_kappa = _num("Fleiss' kappa over A / B / tie / both-bad")
    fleiss_kappa_ci95 = _ci()
    krippendorff_alpha = _num("Krippendorff's alpha, nominal")
    krippendorff_alpha_ci95 = _ci()
    cohen_kappa = CohenKappaSerializer(many=True)
    bootstrap = BootstrapSerializer()


class ProjectQualitySerializer(serializers.Serializer):
    left = serializers.IntegerField(help_text="judgments choosing the side shown on the left")
    right = serializers.IntegerField()
    left_rate = _num("left among left/right choices")
    left_p_value = _num("two-sided exact binomial test of left_rate against 0.5")
    longer_items = serializers.IntegerField(help_text="A/B judgments on pairs of unequal length")
    longer_win_rate = _num("share of those choosing the longer completion (characters)")
    median_seconds = _num("median seconds per judgment (duration_ms, else lease to submit)")
    fast_judgments = serializers.IntegerField(help_text="judgments under fast_floor_seconds")
    fast_floor_seconds = serializers.FloatField()
    gold_items = serializers.IntegerField()
    gold_accuracy = _num("share of gold judgments matching the gold answer")
    repeats = serializers.IntegerField(help_text="hidden repeats judged")
    flip_items = serializers.IntegerField(
        help_text="repeats where both judgments chose a completion (A or B)"
    )
    flip_rate = _num("share of flip_items where the repeat chose the other completion")
    flip_rate_ci95 = _wilson()


class AnnotatorQualitySerializer(serializers.Serializer):
    annotator = serializers.CharField(help_text="username, or the exports' salted pseudonym")
    username = serializers.CharField(
        allow_null=True,
        help_text="the member's username (for pause/resume); null for non-members and when "
        "names are hidden",
    )
    member = serializers.BooleanField(help_text="still a member of the project")
    judgments = serializers.IntegerField()
    left = serializers.IntegerField()
    right = serializers.IntegerField()
    left_rate = _num("left among left/right choices")
    left_p_value = _num("two-sided exact binomial test against 0.5")
    longer_items = serializers.IntegerField()
    longer_win_rate = _num("how often this annotator chose the longer completion")
    team_longer_items = serializers.IntegerField()
    team_longer_win_rate = _num("how often the rest of the team did, on the same pairs")
    median_seconds = _num("median seconds per judgment")
    fast_judgments = serializers.IntegerField()
    gold_items = serializers.IntegerField()
    gold_accuracy = _num("gold accuracy")
    repeats = serializers.IntegerField(help_text="hidden repeats judged")
    flip_items = serializers.IntegerField(
        help_text="repeats where both this annotator's judgments chose a completion (A or B); "
        "a tie or both-bad on either side is not counted"
    )
    flip_rate = _num(
        "self-consistency: share of flip_items where the repeat, sides swapped back, chose the "
        "other completion"
    )
    flip_rate_ci95 = _wilson()
    paused = serializers.BooleanField()
    paused_reason = serializers.CharField(allow_blank=True)


class QualitySettingsSerializer(serializers.Serializer):
    gold_min_items = serializers.IntegerField()
    gold_min_accuracy = serializers.FloatField()
    fast_judgment_seconds = serializers.FloatField()
    cohen_min_shared_items = serializers.IntegerField()
    repeat_rate = serializers.FloatField(help_text="share of judgments whose pair comes back")
    repeat_delay = serializers.IntegerField(
        help_text="judgments an annotator makes before a repeat is due"
    )


class QualitySerializer(serializers.Serializer):
    judgments = serializers.IntegerField(help_text="judgments the figures cover")
    computed_at = serializers.DateTimeField(allow_null=True, help_text="when they were computed")
    stale = serializers.BooleanField(
        help_text="true on a large project after new judgments: these are the latest figures "
        "and a worker is refreshing them"
    )
    names = serializers.ChoiceField(choices=["usernames", "pseudonyms"])
    agreement = AgreementSerializer()
    project = ProjectQualitySerializer()
    annotators = AnnotatorQualitySerializer(many=True)
    settings = QualitySettingsSerializer()


class GoldInputSerializer(serializers.Serializer):
    answer = serializers.ChoiceField(
        choices=Judgment.Choice.values, help_text="the right answer, on the completions"
    )


class GoldSerializer(serializers.Serializer):
    comparison = serializers.IntegerField()
    kind = serializers.CharField()
    gold_choice = serializers.CharField(allow_blank=True)


class PauseInputSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=300)


class MemberStateSerializer(serializers.Serializer):
    username = serializers.CharField()
    paused = serializers.BooleanField()
    paused_reason = serializers.CharField(allow_blank=True)
