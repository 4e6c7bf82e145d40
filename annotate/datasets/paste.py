"""The datasets page's "Paste JSONL" form: lines typed or pasted into a box, not a file."""

from __future__ import annotations

from django import forms

# One example line per kind; the box shows the one for the chosen kind as its placeholder.
PLACEHOLDERS = {
    "prompts": '{"prompt": "What is DPO?"}\n{"messages": [{"role": "user", "content": "Hi!"}]}',
    "pairs": '{"prompt": "2+2?", "completion_a": "4", "completion_b": "5"}',
}
KINDS = [("prompts", "Prompts"), ("pairs", "Pairs to annotate")]


class PasteForm(forms.Form):
    kind = forms.ChoiceField(choices=KINDS, label="What the lines hold")
    text = forms.CharField(
        label="Lines",
        strip=False,
        error_messages={"required": "Paste at least one line of JSONL."},
    )

    def kind_value(self) -> str:
        """The kind to show: the one posted (even on error), else the initial one."""
        value = self["kind"].value()
        return value if value in PLACEHOLDERS else "prompts"

    def placeholder(self) -> str:
        return PLACEHOLDERS[self.kind_value()]

    def clean_text(self) -> str:
        text: str = self.cleaned_data["text"]
        if not text.strip():
            raise forms.ValidationError("Paste at least one line of JSONL.")
        return text
