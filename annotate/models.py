"""Projects, prompts, comparisons and the judgments people make on them."""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.validators import MaxLengthValidator, MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Abs
from django.utils import timezone
from django.utils.text import slugify


def messages_hash(messages: list[dict[str, Any]]) -> str:
    """A stable fingerprint of a chat, used to skip duplicate prompts."""
    canonical = json.dumps(
        [{"role": m["role"], "content": m["content"]} for m in messages],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# A lease or undo window longer than a week only hides abandoned work (and far longer ones
# overflow date arithmetic on every page that reads the queue).
MAX_LEASE_SECONDS = 7 * 24 * 3600
MAX_UNDO_SECONDS = 7 * 24 * 3600
# Instructions are read before every session; a hundred thousand characters is a long manual.
MAX_INSTRUCTIONS = 100_000


def draw_random_key() -> float:
    """A comparison's place in the random queue order, drawn once when it is created."""
    return random.random()


def content_random_key(*parts: Any) -> float:
    """A random queue place that follows from what a comparison holds (its prompt, texts and
    round), so that a seeded run of the loop, which samples the same texts, queues its pairs in
    the same order; different texts scatter uniformly over [0, 1)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:7], "big") / float(1 << 56)


def _new_salt() -> str:
    return secrets.token_hex(16)


class Project(models.Model):
    class Rationale(models.TextChoices):
        OFF = "off", "Off"
        OPTIONAL = "optional", "Optional"
        REQUIRED = "required", "Required"

    class PairWeight(models.TextChoices):
        UNIFORM = "uniform", "Uniform"
        AGREEMENT = "agreement", "Agreement"
        GOLD_ACCURACY = "gold_accuracy", "Gold accuracy"

    class PairSelection(models.TextChoices):
        RANDOM = "random", "Random"
        UNCERTAINTY = "uncertainty", "Uncertainty (policy margin nearest zero)"
        DISAGREEMENT = "disagreement", "Disagreement (prompts annotators disagree on)"
        COVERAGE = "coverage", "Coverage (prompts with the fewest judged pairs)"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200, unique=True)
    instructions = models.TextField(
        blank=True,
        validators=[MaxLengthValidator(MAX_INSTRUCTIONS)],
        help_text="Markdown shown to annotators.",
    )
    overlap = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(50)],
        help_text="How many distinct annotators judge each pair.",
    )
    lease_seconds = models.PositiveIntegerField(
        default=600,
        validators=[MinValueValidator(10), MaxValueValidator(MAX_LEASE_SECONDS)],
        help_text="How long a pair handed to an annotator stays reserved for them.",
    )
    undo_seconds = models.PositiveIntegerField(
        default=60,
        validators=[MaxValueValidator(MAX_UNDO_SECONDS)],
        help_text="How long after judging an annotator may undo.",
    )
    show_strength = models.BooleanField(
        default=False, help_text="Ask how much better (slightly / clearly / much)."
    )
    rationale = models.CharField(max_length=10, choices=Rationale.choices, default=Rationale.OFF)
    license = models.CharField(max_length=100, blank=True)
    # Quality thresholds (annotate.quality): the gold pause rule and the fast-judgment floor.
    gold_min_items = models.PositiveSmallIntegerField(
        default=10,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Gold pairs an annotator must have judged before the accuracy rule applies.",
    )
    gold_min_accuracy = models.FloatField(
        default=0.6,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Gold accuracy (0-1) below which an annotator is paused; 0 never pauses.",
    )
    gold_rate = models.FloatField(
        default=0.1,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of the pairs handed out that are gold, while an annotator has gold "
        "pairs left to judge (0-1). Gold goes to every annotator, beyond the overlap.",
    )
    repeat_rate = models.FloatField(
        default=0.05,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of an annotator's judgments whose pair comes back to them later, sides "
        "swapped, as a hidden repeat (0-1); their flip rate measures self-consistency.",
    )
    fast_judgment_seconds = models.FloatField(
        default=2.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(3600.0)],
        help_text="Judgments made faster than this many seconds are flagged as too fast.",
    )
    # Which judgments count for training and exports (annotate.datasets.counting).
    count_skip_paused = models.BooleanField(
        default=False, help_text="Leave out every judgment of annotators who are paused."
    )
    count_min_gold_accuracy = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Leave out annotators whose gold accuracy (after gold_min_items gold pairs) "
        "is below this (0-1); 0 keeps everyone.",
    )
    count_skip_fast = models.BooleanField(
        default=False,
        help_text="Leave out judgments made faster than fast_judgment_seconds.",
    )
    count_weight = models.CharField(
        max_length=20,
        choices=PairWeight.choices,
        default=PairWeight.UNIFORM,
        help_text="Weight of each pair: 1, its agreement, or its voters' gold accuracy.",
    )
    # The order of the open pairs within a round (annotate.selection).
    pair_selection = models.CharField(
        max_length=12,
        choices=PairSelection.choices,
        default=PairSelection.RANDOM,
        help_text="Which open pairs come first: random, the policy's margin nearest zero, "
        "prompts with the most disagreement, or prompts with the fewest judged pairs.",
    )
    # Salt for the pseudonymous annotator ids written into exports.
    export_salt = models.CharField(max_length=64, default=_new_salt, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="projects"
    )

    # What a lead may change (the settings form, PATCH); slug, salt and authorship stay as created.
    EDITABLE_FIELDS = (
        "name",
        "instructions",
        "overlap",
        "show_strength",
        "rationale",
        "lease_seconds",
        "undo_seconds",
        "license",
        "gold_min_items",
        "gold_min_accuracy",
        "gold_rate",
        "repeat_rate",
        "fast_judgment_seconds",
        "count_skip_paused",
        "count_min_gold_accuracy",
        "count_skip_fast",
        "count_weight",
        "pair_selection",
    )

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.slug:
            self.slug = self._unique_slug()
        super().save(*args, **kwargs)

    def _unique_slug(self) -> str:
        base = slugify(self.name)[:180] or "project"
        slug, n = base, 1
        while Project.objects.filter(slug=slug).exists():
            n += 1
            slug = f"{base}-{n}"
        return slug

    @property
    def lease_duration(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    def role_of(self, user: Any) -> str | None:
        if not user.is_authenticated:
            return None
        membership = self.memberships.filter(user=user).first()
        return membership.role if membership else None


class Membership(models.Model):
    class Role(models.TextChoices):
        LEAD = "lead", "Lead"
        ANNOTATOR = "annotator", "Annotator"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.ANNOTATOR)
    # A paused member gets no pairs: annotate.quality.gold pauses on failed gold, a lead resumes.
    paused = models.BooleanField(default=False)
    paused_reason = models.CharField(max_length=300, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    # The gold rule only counts gold judged after the last resume, so a resumed annotator
    # starts afresh instead of being paused again by the same mistakes.
    resumed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="one_membership_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.project}"


class Prompt(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        EVAL = "eval", "Eval"
        # held out for the promotion gate; like eval, never trained on
        DEV = "dev", "Dev"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    messages = models.JSONField(help_text='[{"role": "user", "content": "..."}, ...]')
    metadata = models.JSONField(default=dict, blank=True)
    split = models.CharField(max_length=5, choices=Split.choices, default=Split.TRAIN)
    content_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "content_hash"], name="unique_prompt_per_project"
            )
        ]

    def __str__(self) -> str:
        return self.preview

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.content_hash = messages_hash(self.messages)
        super().save(*args, **kwargs)

    @property
    def preview(self) -> str:
        last = self.messages[-1]["content"] if self.messages else ""
        return last[:80]


class Completion(models.Model):
    class Source(models.TextChoices):
        IMPORTED = "imported", "Imported"
        MODEL = "model", "Model version"

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="completions")
    text = models.TextField(blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.IMPORTED)
    # The training app's ModelVersion id when a model wrote it; kept as a plain
    # integer so that the annotation app does not depend on the training app.
    model_version_id = models.PositiveIntegerField(null=True, blank=True)
    generation_params = models.JSONField(default=dict, blank=True)
    token_count = models.PositiveIntegerField(null=True, blank=True)
    logprob = models.FloatField(null=True, blank=True)
    # True: the model ended its turn; False: max_new_tokens cut it off, so it is trained as a
    # prefix; None: unknown (imported, or written before this was recorded), trained as before.
    finished = models.BooleanField(null=True, blank=True)
    # The ids the model sampled (end-of-turn included when it ended), so training scores exactly
    # these tokens instead of re-encoding the text; None when unknown.
    token_ids = models.JSONField(null=True, blank=True)
    # Where a round's generation put this row: its round number, and which of the version's
    # samples of the prompt it is. Together with the prompt and version they identify the row, so
    # a retried generation task skips what a stopped one already wrote. None outside rounds.
    round_number = models.PositiveIntegerField(null=True, blank=True)
    sample_index = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "round_number", "model_version_id", "sample_index"],
                condition=Q(round_number__isnull=False),
                name="one_completion_per_round_sample",
            ),
        ]

    def __str__(self) -> str:
        return self.text[:80]


class Negated(models.Func):
    """``-(expression)``, compiled without a parameter, so that a query ordering by it matches
    an index built on it (SQLite matches an indexed expression only to the same text)."""

    template = "-(%(expressions)s)"
    output_field = models.FloatField()


def queue_index(name: str, *key: Any) -> models.Index:
    """An index of the queue's pairs: project, whose hidden repeat (none for the pairs the
    queue serves) and judgment count (the ranges it walks), then its order: the newest round
    first, the strategy's ``key``, the random key."""
    return models.Index(
        F("project"),
        F("repeat_for"),
        F("judgment_count"),
        F("round").desc(),
        *key,
        F("random_key"),
        F("id"),
        name=name,
    )


# The categories of a judgment (Judgment.Choice), repeated here because Comparison comes first.
GOLD_CHOICES = [("a", "A"), ("b", "B"), ("tie", "Tie"), ("both_bad", "Both bad")]


class Comparison(models.Model):
    class Kind(models.TextChoices):
        TRAIN = "train", "Train"
        EVAL = "eval", "Eval"
        GOLD = "gold", "Gold"
        # A hidden repeat (annotate.quality.repeats): never trained on, exported or imported.
        REPEAT = "repeat", "Hidden repeat"

    # The kinds a pair can be imported, exported and trained as.
    PAIR_KINDS = (Kind.TRAIN, Kind.EVAL, Kind.GOLD)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="comparisons")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="comparisons")
    completion_a = models.ForeignKey(Completion, on_delete=models.CASCADE, related_name="+")
    completion_b = models.ForeignKey(Completion, on_delete=models.CASCADE, related_name="+")
    round = models.PositiveIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=6, choices=Kind.choices, default=Kind.TRAIN)
    # The right answer of a gold pair ("a", "b", "tie" or "both_bad", on the completions, not the
    # sides shown); empty when the pair is not gold or its answer is unknown.
    gold_choice = models.CharField(max_length=8, choices=GOLD_CHOICES, blank=True)
    # Judgments stored so far; kept in step with the Judgment rows inside the
    # same transaction, so that the queue can skip finished pairs cheaply.
    judgment_count = models.PositiveIntegerField(default=0)
    # A hidden repeat (kind "repeat") is the pair ``repeat_of`` with A and B swapped, served only
    # to ``repeat_for`` once they have made ``repeat_due`` judgments in the project.
    repeat_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="repeats"
    )
    repeat_for = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    repeat_due = models.PositiveIntegerField(null=True, blank=True)
    # Queue order keys (annotate.selection): a random key drawn at creation; the serving
    # policy's implicit-reward margin of A over B, written by the worker after each promotion
    # (training.services.active), null until scored; and, copied onto every pair of the prompt,
    # the prompt's annotator disagreement and its number of judged pairs.
    random_key = models.FloatField(default=draw_random_key)
    policy_margin = models.FloatField(null=True, blank=True)
    prompt_disagreement = models.FloatField(default=0.0)
    prompt_judged_pairs = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["project", "judgment_count"]),
            # The queue (annotate.queue) walks one of these per pair selection strategy, in its
            # order from (project, repeat_for, judgment count) on. Descending keys keep missing
            # values last: SQLite's DESC does so by itself; on PostgreSQL the migration adds
            # NULLS LAST.
            queue_index("queue_open_random"),
            queue_index("queue_open_uncertainty", Negated(Abs("policy_margin")).desc()),
            queue_index("queue_open_disagreement", F("prompt_disagreement").desc()),
            queue_index("queue_open_coverage", Negated(F("prompt_judged_pairs")).desc()),
            # A round's progress and trigger (training.services.triggers).
            models.Index(fields=["project", "round", "kind", "judgment_count"], name="round_pairs"),
            # The gold pairs the queue serves beyond the overlap, in their random order.
            models.Index(fields=["project", "kind", "random_key"], name="pairs_by_kind_key"),
            # The queue's look-up of a user's repeats still to judge; judged ones leave it.
            models.Index(
                fields=["repeat_for", "project", "repeat_due"],
                condition=Q(repeat_for__isnull=False, judgment_count=0),
                name="pending_repeats",
            ),
        ]

    def __str__(self) -> str:
        return f"Comparison {self.pk} ({self.project})"

    @classmethod
    def work(cls, prefix: str = "") -> Q:
        """Pairs that are work toward the overlap: not a gold pair with its answer, not a
        hidden repeat (those are checks). ``prefix`` reaches them through a relation
        (``"comparison__"``)."""
        gold = Q(**{f"{prefix}kind": cls.Kind.GOLD, f"{prefix}gold_choice__gt": ""})
        return ~gold & ~Q(**{f"{prefix}kind": cls.Kind.REPEAT})


class Assignment(models.Model):
    """A comparison leased to one annotator, with the order it is shown in."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Leased"
        DONE = "done", "Judged"
        SKIPPED = "skipped", "Skipped"
        EXPIRED = "expired", "Lease expired"

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="assignments")
    # True when completion A is shown on the left.
    left_is_a = models.BooleanField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    leased_at = models.DateTimeField(default=timezone.now)
    lease_expires = models.DateTimeField()
    # How often this annotator skipped the pair: after one skip it comes back once the rest of
    # their queue is done; after ``MAX_SKIPS`` it is never offered to them again.
    skips = models.PositiveSmallIntegerField(default=0)

    MAX_SKIPS = 2

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "annotator"], name="one_assignment_per_annotator"
            )
        ]
        indexes = [models.Index(fields=["annotator", "project", "status"])]

    def __str__(self) -> str:
        return f"{self.comparison_id} -> {self.annotator_id} ({self.status})"

    @property
    def skipped_for_good(self) -> bool:
        return self.skips >= self.MAX_SKIPS

    def is_live(self, now: Any = None) -> bool:
        now = now or timezone.now()
        return self.status == self.Status.ACTIVE and self.lease_expires > now

    def shown_completions(self) -> tuple[Completion, Completion]:
        """The comparison's completions in the order the annotator sees them: (left, right)."""
        a, b = self.comparison.completion_a, self.comparison.completion_b
        return (a, b) if self.left_is_a else (b, a)


class Judgment(models.Model):
    class Choice(models.TextChoices):
        A = "a", "A is better"
        B = "b", "B is better"
        TIE = "tie", "Tie"
        BOTH_BAD = "both_bad", "Both bad"

    class Source(models.TextChoices):
        HUMAN = "human", "Annotator"
        IMPORTED = "imported", "Imported"
        SIMULATED = "simulated", "Simulated annotator"

    class Strength(models.IntegerChoices):
        SLIGHTLY = 1, "Slightly better"
        CLEARLY = 2, "Clearly better"
        MUCH = 3, "Much better"

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="judgments")
    # Empty only for imported judgments, which name their origin in
    # ``external_annotator`` instead.
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="judgments",
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.HUMAN)
    external_annotator = models.CharField(max_length=200, blank=True)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="judgments")
    choice = models.CharField(max_length=8, choices=Choice.choices)
    strength = models.PositiveSmallIntegerField(choices=Strength.choices, null=True, blank=True)
    rationale = models.TextField(blank=True)
    left_is_a = models.BooleanField(help_text="The order the annotator saw.")
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    client_id = models.UUIDField(default=uuid.uuid4, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "annotator"], name="one_judgment_per_annotator"
            )
        ]
        indexes = [models.Index(fields=["annotator", "project", "created_at"])]

    def __str__(self) -> str:
        return f"{self.annotator_id} on {self.comparison_id}: {self.choice}"

    @property
    def shown_choice(self) -> str:
        """The choice as the annotator saw it: left, right, tie or both_bad."""
        return choice_as_shown(self.choice, self.left_is_a)


def choice_as_shown(choice: str, left_is_a: bool) -> str:
    """A stored choice as the annotator saw it: "a" or "b" becomes "left" or "right"."""
    if choice in (Judgment.Choice.A, Judgment.Choice.B):
        return "left" if (choice == Judgment.Choice.A) == left_is_a else "right"
    return str(choice)


class DatasetJob(models.Model):
    """An import or export run in the background, polled by its page until it is ready."""

    class Kind(models.TextChoices):
        IMPORT = "import", "Import"
        EXPORT = "export", "Export"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for a worker"
        RUNNING = "running", "Running"
        DONE = "done", "Ready"
        FAILED = "failed", "Failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="dataset_jobs")
    kind = models.CharField(max_length=6, choices=Kind.choices)
    format = models.CharField(max_length=20)
    options = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=7, choices=Status.choices, default=Status.PENDING)
    # Bytes read (imports) or pairs written (exports) out of ``total``.
    progress = models.PositiveBigIntegerField(default=0)
    total = models.PositiveBigIntegerField(null=True, blank=True)
    # The uploaded file (imports) or the file made (exports), relative to VAR_DIR.
    source_path = models.CharField(max_length=500, blank=True)
    result_path = models.CharField(max_length=500, blank=True)
    filename = models.CharField(max_length=255, blank=True)
    error = models.TextField(blank=True)
    report = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.format} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)
