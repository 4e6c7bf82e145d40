"""Fixtures for the loop: a tiny model on disk and a project whose base it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission

from annotate.models import Membership, Project, Prompt
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from training.core.tiny import save_tiny, tiny_llama, word_tokenizer

# Settings that keep a round of the tiny model to a second or two.
TINY_LOOP = {
    "prompts_per_round": 4,
    "k": 2,
    "max_new_tokens": 6,
    "temperature": 1.0,
    "top_p": 1.0,
    "eval_share": 0.34,
    "gate_mode": "off",
    "dpo": {
        "batch_size": 2,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_target_modules": ["q_proj", "v_proj"],
        "max_length": 64,
        "max_prompt_length": 32,
        "heldout_fraction": 0.25,
    },
}
WORDS = ["hello world", "write a function", "the sun and the moon", "red green blue", "a cat"]
# The tiny model's vocabulary: the prompts' words and enough others for varied replies.
VOCAB = (  # noqa: SIM905
    "yes no maybe short long answer question the a is of and to in it that this be "
    "python list tuple write function hello world good bad ok one two three four five "
    "red green blue cat dog tree sun moon star sky sea"
).split()


def save_loop_model(directory: Path) -> Path:
    """The loop tests' tiny model and its tokenizer, written to ``directory``."""
    tokenizer = word_tokenizer(VOCAB)
    return save_tiny(tiny_llama(tokenizer), tokenizer, directory)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_loop_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def var_dir(tmp_path: Path, settings: Any) -> Path:
    """Model versions of this test go under a private directory."""
    settings.VAR_DIR = tmp_path
    return tmp_path


def make_loop_project(
    model_dir: Path, *, n_prompts: int = 8, n_eval: int = 2, **loop: Any
) -> Project:
    project = ProjectFactory(
        name="Loop project", base_model=str(model_dir), loop_settings={**TINY_LOOP, **loop}
    )
    lead = UserFactory(username="loop-lead")
    lead.user_permissions.add(Permission.objects.get(codename="add_project"))
    MembershipFactory(project=project, user=lead, role=Membership.Role.LEAD)
    for i in range(n_prompts + n_eval):
        Prompt.objects.create(
            project=project,
            messages=[{"role": "user", "content": f"{WORDS[i % len(WORDS)]} {i}"}],
            split=Prompt.Split.EVAL if i >= n_prompts else Prompt.Split.TRAIN,
        )
    return project


@pytest.fixture
def loop_project(db: Any, tiny_model_dir: Path, var_dir: Path) -> Project:
    return make_loop_project(tiny_model_dir)


def judge_round(project: Project, rule: str = "shorter") -> Any:
    """Start the project's next round, sample it, have one noiseless simulated annotator judge
    its pairs by ``rule`` and queue its training; returns the TrainingRun (``run.round`` is
    the round). Call it inside ``services.in_process()``."""
    from training import services
    from training.models import Round

    loop_round = services.start_round(project)
    services.generate_round(loop_round.pk)
    services.simulate_annotators(
        project, rule, annotators=1, noise=0.0, round_number=loop_round.number
    )
    return services.begin_training(Round.objects.get(pk=loop_round.pk))
