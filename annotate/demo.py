"""The demo project the run command seeds: users, prompts, ready-made pairs and a past team's
judgments of some of them (`annotate.demo_team`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import transaction

from .datasets.imports import ImportReport, import_file
from .demo_team import seed_team
from .extensions import clean_contributed, write_contributed
from .models import Membership, Project

DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEMO_SLUG = "demo-assistant-replies"

DEMO_INSTRUCTIONS = """\
Compare the two replies to the conversation and pick the one **you would rather receive**.

1. **Correct first.** A reply with a factual or code error loses to a correct one,
   however well written.
2. **Then helpful.** It answers what was asked, in the format asked for, without padding.
3. **Then clear and kind.** Plain language, polite tone, no needless refusals.

Use *Tie* when both are equally good and *Both bad* when neither is acceptable.
Replies may contain code or HTML: it is shown as text, never run.
"""


# Round settings sized for a CPU: a round of 8 prompts x 2 samples trains a
# LoRA adapter in a few minutes on two cores. Validated by the training app.
# The system prompt and the token budget keep completions whole: on 8 demo prompts x 2
# samples at temperature 0.9, 3 of 16 ended within 64 tokens without it, 4 of 16 with it,
# and 8 of 16 (median 73 tokens) with it at 128 tokens.
DEMO_LOOP_SETTINGS = {
    "prompts_per_round": 8,
    "k": 2,
    "max_new_tokens": 128,
    "system_prompt": "Answer briefly, in one or two sentences.",
    "temperature": 0.9,
    "trigger": "all_judged",
    "dpo": {"epochs": 2, "batch_size": 4, "max_length": 256, "max_prompt_length": 128},
}


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    role: str


DEMO_USERS = (
    DemoUser("lead", "prefloop-lead", Membership.Role.LEAD),
    DemoUser("alice", "prefloop-alice", Membership.Role.ANNOTATOR),
    DemoUser("bob", "prefloop-bob", Membership.Role.ANNOTATOR),
)


@transaction.atomic
def seed_demo() -> tuple[Project, ImportReport | None]:
    """Create the demo users and project once; later calls change nothing.

    Returns the project and the import report (None when it was seeded before).
    """
    User = get_user_model()
    users = {}
    for demo in DEMO_USERS:
        user, created = User.objects.get_or_create(username=demo.username)
        if created:
            user.set_password(demo.password)
            user.save()
        users[demo.username] = user
    lead = users["lead"]
    lead.user_permissions.add(
        Permission.objects.get(codename="add_project", content_type__app_label="annotate")
    )
    project, created = Project.objects.get_or_create(
        slug=DEMO_SLUG,
        defaults={
            "name": "Demo: assistant replies",
            "instructions": DEMO_INSTRUCTIONS,
            "overlap": 2,
            "show_strength": True,
            "rationale": Project.Rationale.OPTIONAL,
            "license": "CC-BY-4.0",
            "created_by": lead,
        },
    )
    if created:
        # The loop's fields belong to the training app; they are set through the same
        # extension point the project API uses.
        write_contributed(
            project,
            clean_contributed({"base_model": "demo", "loop_settings": DEMO_LOOP_SETTINGS}),
        )
    for demo in DEMO_USERS:
        Membership.objects.get_or_create(
            project=project, user=users[demo.username], defaults={"role": demo.role}
        )
    if not created:
        return project, None
    with (DEMO_DIR / "prompts.jsonl").open("rb") as fh:
        report = import_file(project, "prompts", fh, "prompts.jsonl")
    with (DEMO_DIR / "pairs.jsonl").open("rb") as fh:
        pairs = import_file(project, "pairs", fh, "pairs.jsonl")
    report.comparisons_added = pairs.comparisons_added
    # A past team's judgments and gold pairs, so that the Quality page has figures to show.
    seed_team(project)
    return project, report
