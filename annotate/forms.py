from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from .models import Membership, Project


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = list(Project.EDITABLE_FIELDS)
        widgets = {"instructions": forms.Textarea(attrs={"rows": 8})}
        labels = {"show_strength": "Ask for strength", "rationale": "Rationale"}

    # Quality thresholds: a form that leaves them out keeps the project's values.
    KEEP_WHEN_MISSING = (
        "gold_min_items",
        "gold_min_accuracy",
        "gold_rate",
        "repeat_rate",
        "fast_judgment_seconds",
        "count_min_gold_accuracy",
        "count_weight",
        "pair_selection",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in self.KEEP_WHEN_MISSING:
            self.fields[name].required = False

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for name in self.KEEP_WHEN_MISSING:
            if data.get(name) in (None, "") and name not in self.errors:
                data[name] = getattr(self.instance, name)
        return data


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.ANNOTATOR)


class ImportForm(forms.Form):
    KINDS = [("prompts", "Prompts"), ("pairs", "Pairs to annotate")]

    kind = forms.ChoiceField(choices=KINDS)
    file = forms.FileField(required=False, help_text="JSONL, one object per line.")
    text = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "placeholder": '{"prompt": "..."}'}),
        label="Or paste JSONL",
    )

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        upload = data.get("file")
        if not upload and not (data.get("text") or "").strip():
            raise forms.ValidationError("Choose a file or paste some lines.")
        if upload and upload.size > settings.PREFLOOP_MAX_UPLOAD_BYTES:
            limit_mb = settings.PREFLOOP_MAX_UPLOAD_BYTES / (1024 * 1024)
            raise forms.ValidationError(f"The file is larger than the {limit_mb:.0f} MB limit.")
        return data
