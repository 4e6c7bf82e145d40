"""Rounds sampled through an OpenAI-compatible engine: prefloop's own ``serve_model``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import torch
from django.test import Client

from annotate.models import Completion, Membership, Project
from tests.conftest import api_for
from training import services
from training.core.generation import generate
from training.core.loading import load_model
from training.loop_settings import LoopSettings
from training.models import ProjectLoop, Round
from training.services.engine import EngineError, engine_batches, load_tokenizer, retokenize
from training.serving import make_server

from .conftest import make_loop_project


@pytest.fixture
def server_url(transactional_db: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, api_key="engine-key")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture
def engine_project(server_url: str, tiny_model_dir: Any, var_dir: Any) -> Project:
    backend = {"kind": "openai", "base_url": server_url, "model": "{name}"}
    backend["api_key_env"] = "PREFLOOP_TEST_ENGINE_KEY"
    return make_loop_project(tiny_model_dir, generation_backend=backend, k=3)


@pytest.fixture
def engine_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFLOOP_TEST_ENGINE_KEY", "engine-key")


def _round(project: Project) -> Round:
    with services.in_process():
        loop_round = services.start_round(project)
        services.generate_round(loop_round.pk)
    return Round.objects.get(pk=loop_round.pk)


@pytest.mark.slow
def test_it_samples_a_round_from_serve_model_with_ids_that_reencode(
    engine_project: Project, engine_key: None, tiny_model_dir: Any
) -> None:
    loop_round = _round(engine_project)
    assert loop_round.state == Round.State.COLLECTING, loop_round.error
    rows = list(Completion.objects.filter(round_number=loop_round.number))
    assert len(rows) == 3 * len(loop_round.prompt_ids) + 2 * len(loop_round.eval_prompt_ids)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    end = tokenizer.eos_token_id
    kept = 0
    for row in rows:
        assert row.finished is not None
        assert row.generation_params["engine_model"] == f"{engine_project.slug}:base"
        assert row.logprob is not None and row.logprob <= 0
        if row.token_ids is None:
            continue
        kept += 1
        ids = row.token_ids[:-1] if row.finished else row.token_ids
        assert (row.token_ids[-1] == end) is row.finished
        assert tokenizer.decode(ids) == row.text
        assert tokenizer.encode(row.text, add_special_tokens=False) == ids
        assert row.token_count == len(row.token_ids)
    mismatches = sum(row.token_ids is None for row in rows)
    assert loop_round.stats["retokenize_mismatches"] == mismatches
    assert kept > 0 and mismatches > 0
    lead = engine_project.memberships.get(role=Membership.Role.LEAD).user
    client = Client()
    client.force_login(lead)
    page = client.get(f"/projects/{engine_project.pk}/loop/").content.decode()
    assert f"{mismatches} not re-encoded" in page
    # the round trains as any other: ids where they round-trip, the text elsewhere
    with services.in_process():
        services.simulate_annotators(
            engine_project, "shorter", annotators=1, noise=0.0, round_number=loop_round.number
        )
        run = services.begin_training(Round.objects.get(pk=loop_round.pk))
        services.train_round(run.pk)
    assert Round.objects.get(pk=loop_round.pk).state == Round.State.PROMOTED


@pytest.mark.slow
def test_serve_model_logprobs_match_a_direct_scoring(
    server_url: str, engine_project: Project, tiny_model_dir: Any
) -> None:
    api = openai.OpenAI(base_url=server_url, api_key="engine-key", max_retries=0)
    messages: Any = [{"role": "user", "content": "hello world"}]
    answer = api.chat.completions.create(
        model=f"{engine_project.slug}:base",
        messages=messages,
        n=3,
        seed=7,
        max_tokens=6,
        temperature=1.0,
        logprobs=True,
    )
    # the same request sampled again in process gives the ids behind each answer
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    samples = generate(
        (model, tokenizer),
        [messages],
        k=3,
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=6,
        seed=7,
        batch_size=3,
    )[0]
    prompt = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    for choice, sample in zip(answer.choices, samples, strict=True):
        assert choice.message.content == sample.text
        assert choice.logprobs is not None and choice.logprobs.content is not None
        content = choice.logprobs.content
        assert [c.token for c in content] == [tokenizer.decode([i]) for i in sample.token_ids]
        ids = torch.tensor([prompt + sample.token_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float()
        steps = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
        direct = steps.gather(1, torch.tensor(sample.token_ids)[:, None]).squeeze(1)
        served = torch.tensor([c.logprob for c in content])
        assert torch.allclose(served, direct, atol=1e-4), (served, direct)
    plain = api.chat.completions.create(
        model=engine_project.slug,
        messages=messages,
        max_tokens=2,
    )
    assert plain.choices[0].logprobs is None
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        api.chat.completions.create(
            model=engine_project.slug,
            messages=messages,
            logprobs=True,
            top_logprobs=2,
        )


def test_a_missing_key_fails_the_round_naming_the_setting(
    engine_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFLOOP_TEST_ENGINE_KEY", raising=False)
    with pytest.raises(EngineError, match="api_key_env"):
        _round(engine_project)
    assert Round.objects.get(project=engine_project).state == Round.State.FAILED


def test_a_wrong_key_is_refused_by_the_engine(
    engine_project: Project, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Any
) -> None:
    monkeypatch.setenv("PREFLOOP_TEST_ENGINE_KEY", "wrong")
    ls = LoopSettings.from_dict(ProjectLoop.of(engine_project).settings)
    version = services.base_version(engine_project)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    messages = [[{"role": "user", "content": "hello"}]]
    with pytest.raises(EngineError, match="401"):
        list(engine_batches(ls, version, tokenizer, messages, k=2, seed=0))


def test_retokenize_keeps_ids_only_when_they_reproduce_the_text(tiny_model_dir: Any) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    end = tokenizer.eos_token_id
    ids = tokenizer.encode("yes no maybe", add_special_tokens=False)
    assert retokenize(tokenizer, "yes no maybe", True, None) == [*ids, end]
    assert retokenize(tokenizer, "yes no maybe", False, ["yes", "no", "maybe"]) == ids
    # the engine may list its end-of-turn token, or not
    assert retokenize(tokenizer, "yes no maybe", True, ["yes", "no", "maybe", "<end>"]) == [
        *ids,
        end,
    ]
    # the engine sampled other tokens than the text re-encodes to (a role token dropped)
    assert retokenize(tokenizer, "yes no", True, ["yes", "<|user|>", "no"]) is None
    # a word outside the vocabulary does not decode back to itself
    assert retokenize(tokenizer, "yes zebra", False, None) is None


@pytest.mark.parametrize(
    ("backend", "named"),
    [
        ("openai", "generation_backend: expected dict"),
        ({"kind": "vllm"}, "generation_backend.kind"),
        ({"kind": "openai", "model": "x"}, "generation_backend.base_url"),
        ({"kind": "openai", "base_url": "ftp://h/v1"}, "generation_backend.base_url"),
        (
            {"kind": "openai", "base_url": "http://h/v1", "model": "{slug}"},
            "generation_backend.model",
        ),
        ({"kind": "openai", "base_url": "http://h/v1", "model": ""}, "generation_backend.model"),
        (
            {"kind": "openai", "base_url": "http://h/v1", "api_key": "sk-1"},
            "generation_backend.api_key",
        ),
        (
            {"kind": "openai", "base_url": "http://h/v1", "api_key_env": "A B"},
            "generation_backend.api_key_env",
        ),
        ({"kind": "hf", "base_url": "http://h/v1"}, "generation_backend.base_url"),
    ],
)
def test_bad_backend_settings_are_refused_with_a_400(
    loop_project: Project, backend: Any, named: str
) -> None:
    lead = loop_project.memberships.get(role=Membership.Role.LEAD).user
    before = dict(ProjectLoop.of(loop_project).settings)
    response = api_for(lead).patch(
        f"/api/projects/{loop_project.pk}/",
        {"loop_settings": {"generation_backend": backend}},
        format="json",
    )
    assert response.status_code == 400
    assert named in str(response.json())
    assert "sk-1" not in str(response.json())
    assert ProjectLoop.of(loop_project).settings == before


def test_a_good_backend_setting_is_saved_and_documented(loop_project: Project) -> None:
    lead = loop_project.memberships.get(role=Membership.Role.LEAD).user
    backend = {"kind": "openai", "base_url": "http://gpu-1:8000/v1", "model": "{project}-{version}"}
    response = api_for(lead).patch(
        f"/api/projects/{loop_project.pk}/",
        {"loop_settings": {"generation_backend": backend}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert ProjectLoop.of(loop_project).settings["generation_backend"] == backend
    from training.loop_settings import json_schema

    schema = json_schema()["properties"]["generation_backend"]
    assert schema["properties"]["kind"]["enum"] == ["hf", "openai"]


def test_the_settings_form_takes_the_backend_and_shows_its_error_by_the_field(
    loop_project: Project,
) -> None:
    client = Client()
    client.force_login(loop_project.memberships.get(role=Membership.Role.LEAD).user)
    url = f"/projects/{loop_project.pk}/loop/settings/"
    before = dict(ProjectLoop.of(loop_project).settings)
    bad = client.post(url, {"generation_backend": '{"kind": "openai"}'})
    assert bad.status_code == 400
    body = bad.content.decode()
    start = body.index('id="field-generation_backend"')
    field = (
        body[start : body.index('id="field-', start + 5)]
        if 'id="field-' in body[start + 5 :]
        else body[start:]
    )
    assert 'class="field-error"' in field and "base_url: required" in field
    assert ProjectLoop.of(loop_project).settings == before
    backend = '{"kind": "openai", "base_url": "http://gpu-1:8000/v1"}'
    good = client.post(url, {"generation_backend": backend})
    assert good.status_code == 302
    saved = ProjectLoop.of(loop_project).settings["generation_backend"]
    assert saved == {"kind": "openai", "base_url": "http://gpu-1:8000/v1"}
    # a form left empty keeps the default backend
    assert client.post(url, {}).status_code == 302
    assert "generation_backend" not in ProjectLoop.of(loop_project).settings


def test_more_samples_than_one_request_answers_are_asked_in_parts(
    engine_project: Project, engine_key: None, tiny_model_dir: Any
) -> None:
    ls = LoopSettings.from_dict(ProjectLoop.of(engine_project).settings)
    version = services.base_version(engine_project)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    messages: Any = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "a cat"}]]
    batches = list(engine_batches(ls, version, tokenizer, messages, k=10, seed=3, skip={0}))
    assert len(batches) == 1 and set(batches[0].completed) == {1}
    samples = batches[0].completed[1]
    assert len(samples) == 10  # serve_model answers at most n=8 a request
    assert batches[0].sequences_total == 10
    assert all(len(s.token_logprobs) == s.token_count for s in samples)
