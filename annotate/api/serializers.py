from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import set_override
from rest_framework import serializers

from annotate.extensions import ProjectField, project_fields
from annotate.models import Judgment, Membership, Project
from annotate.services import SHOWN_CHOICES


class ContributedField(serializers.Field):
    """A project field that another app owns (see ``annotate.extensions``).

    It reads the whole project (``source="*"``) and hands its owner the raw value to clean;
    the cleaned value lands in ``validated_data`` under the field's name.
    """

    def __init__(self, spec: ProjectField) -> None:
        self.spec = spec
        super().__init__(source="*", required=False, help_text=spec.help_text or None)
        set_override(self, "field", dict(spec.schema))

    def to_representation(self, value: Project) -> Any:
        return self.spec.read(value)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        try:
            return {self.spec.name: self.spec.clean(data)}
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None


class ProjectSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Project
        # what a lead may edit is the model's one list; the rest is read-only
        fields = ["id", "slug", *Project.EDITABLE_FIELDS, "created_at", "role"]
        read_only_fields = ["id", "slug", "created_at", "role"]

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        for spec in project_fields():
            fields[spec.name] = ContributedField(spec)
        return fields

    def get_role(self, project: Project) -> str | None:
        request = self.context.get("request")
        return project.role_of(request.user) if request else None


class MemberSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Membership.Role.values)


class MessageSerializer(serializers.Serializer):
    role = serializers.CharField()
    content = serializers.CharField(allow_blank=True, trim_whitespace=False)


class SideSerializer(serializers.Serializer):
    text = serializers.CharField(trim_whitespace=False)
    finished = serializers.BooleanField(
        allow_null=True,
        help_text="false: the model was cut off by its token budget; null: unknown",
    )


class TaskSerializer(serializers.Serializer):
    comparison = serializers.IntegerField()
    messages = MessageSerializer(many=True)
    left = SideSerializer()
    right = SideSerializer()
    lease_expires = serializers.DateTimeField()
    instructions = serializers.CharField()
    show_strength = serializers.BooleanField()
    rationale = serializers.CharField()


class JudgmentInputSerializer(serializers.Serializer):
    choice = serializers.ChoiceField(choices=SHOWN_CHOICES)
    client_id = serializers.UUIDField()
    strength = serializers.IntegerField(min_value=1, max_value=3, required=False, allow_null=True)
    rationale = serializers.CharField(
        required=False, allow_blank=True, max_length=5000, trim_whitespace=False
    )
    duration_ms = serializers.IntegerField(
        min_value=0, max_value=86_400_000, required=False, allow_null=True
    )


class JudgmentSerializer(serializers.ModelSerializer):
    choice = serializers.CharField(source="shown_choice")

    class Meta:
        model = Judgment
        fields = [
            "id",
            "comparison",
            "choice",
            "strength",
            "rationale",
            "duration_ms",
            "client_id",
            "created_at",
        ]

    def to_representation(self, instance: Judgment) -> dict[str, Any]:
        return dict(super().to_representation(instance))


class ImportReportSerializer(serializers.Serializer):
    rows = serializers.IntegerField()
    prompts_added = serializers.IntegerField()
    prompts_skipped = serializers.IntegerField()
    comparisons_added = serializers.IntegerField()
