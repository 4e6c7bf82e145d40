from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from annotate.models import Comparison, Prompt

from .exporters import BUNDLES, EXPORT_FORMATS
from .formats import IMPORT_FORMATS
from .labels import AGGREGATIONS, WEIGHTS

RULE_CHOICES = [("", "Project's rule"), ("true", "Leave out"), ("false", "Count")]

IMPORT_LABELS = {
    "prompts": "Prompts (.jsonl, .csv, .tsv, .txt, .parquet)",
    "pairs": "Pairs to annotate (.jsonl, .csv, .tsv, .parquet)",
    "trl": "Labeled: TRL prompt / chosen / rejected",
    "hh": "Labeled: Anthropic HH transcripts",
    "ultrafeedback": "Labeled: UltraFeedback-binarized",
    "label-studio": "Labeled: Label Studio JSON export (pairwise)",
}
EXPORT_LABELS = {
    "trl": "TRL conversational JSONL",
    "trl-plain": "TRL plain-string JSONL",
    "parquet": "Parquet (TRL columns)",
    "csv": "CSV",
    "judgments": "Raw judgments (JSONL)",
}
# Hidden repeats are made by the queue only, and never imported or exported.
_PAIR_KIND_CHOICES = [
    (kind, label) for kind, label in Comparison.Kind.choices if kind in Comparison.PAIR_KINDS
]

BUNDLE_LABELS = {
    "file": "The data file alone",
    "zip": "Zip: data file + dataset card",
    "hf": "Hugging Face datasets directory (zipped) + card",
}


class DatasetImportForm(forms.Form):
    format = forms.ChoiceField(choices=[(f, IMPORT_LABELS[f]) for f in IMPORT_FORMATS])
    file = forms.FileField()
    column = forms.CharField(
        required=False, initial="prompt", help_text="Prompts from CSV/TSV: the column to read."
    )
    kind = forms.ChoiceField(required=False, choices=[("", "Default (train)"), *_PAIR_KIND_CHOICES])
    round = forms.IntegerField(required=False, min_value=0)
    split = forms.ChoiceField(
        required=False, choices=[("", "Default (train)"), *Prompt.Split.choices]
    )
    skip_bad_rows = forms.BooleanField(
        required=False,
        label="Skip bad rows",
        help_text="Import the good rows and list the bad ones; unticked, one bad row "
        "rejects the whole file.",
    )

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        limit = settings.PREFLOOP_MAX_UPLOAD_BYTES
        if upload.size > limit:
            raise forms.ValidationError(
                f"The file is {upload.size / (1024 * 1024):.1f} MB, over the upload limit of "
                f"{limit / (1024 * 1024):.1f} MB."
            )
        return upload


class DatasetExportForm(forms.Form):
    format = forms.ChoiceField(choices=[(f, EXPORT_LABELS[f]) for f in EXPORT_FORMATS])
    bundle = forms.ChoiceField(choices=[(b, BUNDLE_LABELS[b]) for b in BUNDLES], initial="file")
    rounds = forms.CharField(required=False, help_text="Comma-separated; empty for all.")
    splits = forms.MultipleChoiceField(
        required=False,
        choices=Prompt.Split.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked means train: eval and dev prompts measure versions.",
    )
    kinds = forms.MultipleChoiceField(
        required=False,
        choices=_PAIR_KIND_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked means every kind but eval: train and gold pairs. Eval pairs "
        "measure the model and are never trained on, so they are exported only when ticked.",
    )
    versions = forms.CharField(
        required=False,
        help_text="Comma-separated, e.g. base, v1: pairs with a completion sampled by one of "
        "them. Empty for all.",
    )
    include_ties = forms.BooleanField(required=False)
    include_both_bad = forms.BooleanField(required=False)
    aggregation = forms.ChoiceField(choices=[(a, a) for a in AGGREGATIONS], initial="majority")
    min_agreement = forms.FloatField(required=False, min_value=0, max_value=1, initial=0.0)
    min_votes = forms.IntegerField(required=False, min_value=1, initial=1)
    weight = forms.ChoiceField(
        required=False,
        choices=[("", "Project's rule"), *((w, w) for w in WEIGHTS)],
        initial="",
    )
    # The project's counting rule, overridden for this export when chosen.
    skip_paused = forms.ChoiceField(
        required=False, label="Paused annotators' judgments", choices=RULE_CHOICES
    )
    min_gold_accuracy = forms.FloatField(
        required=False,
        min_value=0,
        max_value=1,
        label="Minimum gold accuracy",
        help_text="Empty: the project's; 0 keeps every annotator.",
    )
    skip_fast = forms.ChoiceField(required=False, label="Fast judgments", choices=RULE_CHOICES)
    label_smoothing = forms.BooleanField(
        required=False,
        label="Soft labels",
        help_text="Add a label_smoothing column: the minority's vote share, for conservative DPO.",
    )
