"""Rounds of the online-DPO loop, the training runs inside them and the model versions they make.

Nothing here imports torch: the web process reads these rows to draw the lead's page.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from annotate.datasets.versions import version_label
from annotate.models import Project

from .core.store import key_of


class ProjectLoop(models.Model):
    """A project's loop configuration: what its policy starts from and how rounds run.

    Owned by the training app, one row per project; the annotation app exposes both fields on
    the project's API through ``annotate.extensions`` (registered in ``TrainingConfig.ready``).
    A project without a row has the defaults: reading never writes.
    """

    project = models.OneToOneField(
        Project, on_delete=models.CASCADE, primary_key=True, related_name="loop"
    )
    # What the project's policy starts from: a local directory, a GGUF file, a hub id, or
    # "demo" (the bundled model).
    base_model = models.CharField(max_length=500, default="demo", blank=True)
    # Round settings as the lead wrote them; keys left out take LoopSettings' defaults.
    settings = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"loop of {self.project}"

    @classmethod
    def of(cls, project: Project) -> ProjectLoop:
        """The project's row, or an unsaved one holding the defaults."""
        return cls.objects.filter(project=project).first() or cls(project=project)

    @classmethod
    def store(cls, project: Project, **values: Any) -> ProjectLoop:
        """Write ``base_model`` and/or ``settings``; the caller owns the transaction."""
        row, _ = cls.objects.update_or_create(project=project, defaults=values)
        return row


class ModelVersion(models.Model):
    """One policy of a project: v0 ("base") is the base model; round n trains v(n) by DPO from the
    version serving when the round started (its ``parent``)."""

    class State(models.TextChoices):
        CANDIDATE = "candidate", "Trained, not promoted"
        SERVING = "serving", "Serving"
        RETIRED = "retired", "Served before"
        REJECTED = "rejected", "Failed the gate"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    number = models.PositiveIntegerField()
    # A model spec the training core loads: the project's base model for a chain's root, else
    # ``store:<project-slug>/v<N>``, the version's key in the model store (training.store).
    spec = models.CharField(max_length=1000)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    # The round whose judgments trained this version (none for v0).
    trained_in = models.OneToOneField(
        "Round", null=True, blank=True, on_delete=models.SET_NULL, related_name="new_version"
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.CANDIDATE)
    metrics = models.JSONField(default=dict, blank=True)
    # {"passed": bool, "reasons": [...], "checks": {...}} from the promotion gate.
    gate = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project", "number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="one_version_number"),
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(state="serving"),
                name="one_serving_version_per_project",
            ),
        ]

    def __str__(self) -> str:
        return self.model_name

    @property
    def label(self) -> str:
        """The version's name on every page, in the API and in exports: "base", "v1", ..."""
        return version_label(self.number)

    @property
    def model_name(self) -> str:
        """What the OpenAI-compatible server calls it: "<project-slug>:base", ":v1", ..."""
        return f"{self.project.slug}:{self.label}"

    @property
    def is_serving(self) -> bool:
        return self.state == self.State.SERVING

    @property
    def store_key(self) -> str | None:
        """The version's key in the model store, None for a base model (not in the store)."""
        return key_of(self.spec)

    def heldout(self, when: str = "after") -> dict[str, float]:
        value = self.metrics.get(f"heldout_{when}") or {}
        return dict(value)


class Round(models.Model):
    """Round n: the version serving when it starts (``policy``, v(n-1) when every earlier version
    was promoted) samples, people judge, v(n) is trained, gated and maybe promoted."""

    class State(models.TextChoices):
        GENERATING = "generating", "Generating"
        COLLECTING = "collecting", "Collecting judgments"
        TRAINING = "training", "Training"
        EVALUATING = "evaluating", "Evaluating"
        PROMOTED = "promoted", "Promoted"
        REJECTED = "rejected", "Rejected by the gate"
        FAILED = "failed", "Failed"

    OPEN_STATES = (State.GENERATING, State.COLLECTING, State.TRAINING, State.EVALUATING)
    FINISHED_STATES = (State.PROMOTED, State.REJECTED)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveIntegerField()
    # The version that generates this round's completions: the one serving when it started.
    policy = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="rounds")
    state = models.CharField(max_length=10, choices=State.choices, default=State.GENERATING)
    # The project's loop settings when the round started; later edits apply to the next round.
    settings = models.JSONField(default=dict, blank=True)
    prompt_ids = models.JSONField(default=list, blank=True)
    eval_prompt_ids = models.JSONField(default=list, blank=True)
    # Progress of the current step (prompts sampled, comparisons judged, ...).
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    # What the round's data looks like, for the lead: at generation "completions",
    # "truncated_share", "mean_tokens" (of the policy's train samples) and, while sampling,
    # "tokens_per_s" and "eta_s" (and "retokenize_mismatches" when a serving engine sampled,
    # see ``training.services.engine``); when training starts "judgments", "tie_rate" and
    # "agreement"
    # (see ``training.services.training_data.judgment_stats``).
    stats = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project", "number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="one_round_number"),
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(state__in=["generating", "collecting", "training", "evaluating"]),
                name="one_open_round_per_project",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug} round {self.number}"

    @property
    def is_open(self) -> bool:
        return self.state in self.OPEN_STATES

    @property
    def is_finished(self) -> bool:
        return self.state in self.FINISHED_STATES

    def latest_run(self) -> TrainingRun | None:
        return self.runs.order_by("-attempt").first()


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class TrainingRun(models.Model):
    """One attempt at training a round's new version; a retry is a new attempt."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="runs")
    attempt = models.PositiveIntegerField(default=1)
    # The number the version gets when this attempt succeeds; a retry keeps it.
    version_number = models.PositiveIntegerField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    config = models.JSONField(default=dict, blank=True)
    num_pairs = models.PositiveIntegerField(default=0)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    loss = models.FloatField(null=True, blank=True)
    eta_s = models.FloatField(null=True, blank=True)
    # Loss after each step, for the live plot.
    losses = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    # "host:pid" of the process running the attempt, to tell a live run from a lost one.
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["round", "attempt"]
        constraints = [
            models.UniqueConstraint(fields=["round", "attempt"], name="one_run_per_attempt"),
        ]

    def __str__(self) -> str:
        return f"{self.round} run {self.attempt} ({self.state})"

    @property
    def seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()

    def claim(self) -> None:
        """Mark the run as running in this process (the caller holds the row lock)."""
        self.state = self.State.RUNNING
        self.worker = _worker_name()
        self.started_at = self.heartbeat_at = timezone.now()
        self.error = ""
        self.save(update_fields=["state", "worker", "started_at", "heartbeat_at", "error"])

    def is_lost(self, now: Any = None) -> bool:
        """A running attempt whose process is gone, or that stopped reporting for too long."""
        if self.state != self.State.RUNNING:
            return False
        now = now or timezone.now()
        host, _, pid = self.worker.rpartition(":")
        if host == socket.gethostname() and pid.isdigit():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
        stale = timedelta(seconds=getattr(settings, "PREFLOOP_TRAIN_STALE_SECONDS", 900))
        return self.heartbeat_at is None or now - self.heartbeat_at > stale
