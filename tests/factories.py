"""Factories for test rows."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model

from annotate.extensions import clean_contributed, split_contributed, write_contributed
from annotate.models import Comparison, Completion, Membership, Project, Prompt


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "pw")

    @factory.post_generation
    def save_after(obj, create, extracted, **kwargs):  # noqa: N805
        if create:
            obj.save()


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")
    instructions = "Pick the **better** reply."
    overlap = 1
    # Hidden repeats are drawn at random: tests that exercise them set a rate.
    repeat_rate = 0.0

    @classmethod
    def _create(cls, model_class: type[Project], *args: Any, **kwargs: Any) -> Project:
        # base_model and loop_settings are contributed by the training app: they are stored
        # through annotate.extensions, like the API does, not as columns of the project.
        own, contributed = split_contributed(kwargs)
        project = super()._create(model_class, *args, **own)
        write_contributed(project, clean_contributed(contributed))
        return project


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = Membership.Role.ANNOTATOR


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    project = factory.SubFactory(ProjectFactory)
    messages = factory.Sequence(lambda n: [{"role": "user", "content": f"Question number {n}?"}])


class CompletionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Completion

    prompt = factory.SubFactory(PromptFactory)
    text = factory.Sequence(lambda n: f"Answer {n}.")


class ComparisonFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Comparison

    project = factory.SubFactory(ProjectFactory)
    prompt = factory.SubFactory(PromptFactory, project=factory.SelfAttribute("..project"))
    completion_a = factory.SubFactory(CompletionFactory, prompt=factory.SelfAttribute("..prompt"))
    completion_b = factory.SubFactory(CompletionFactory, prompt=factory.SelfAttribute("..prompt"))
    # The random queue key in creation order, so that tests see a predictable queue.
    random_key = factory.Sequence(float)
