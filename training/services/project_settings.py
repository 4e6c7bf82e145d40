"""The lead's changes to a project's base model and loop settings, from the loop page."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from annotate.errors import InvalidInput
from annotate.models import Project
from training.loop_settings import clean_base_model, clean_loop_settings
from training.models import ProjectLoop
from training.services.base_chain import check_change, start_new_chain
from training.services.simulation import check_lead_rule


def clean_lead_settings(data: Any) -> dict[str, Any]:
    """Loop settings as a lead wrote them, once they validate; the lead's ``gate_judge`` is
    checked now, not first when a round reaches its gate: a built-in rule, or a callable in a
    module the server allows (``PREFLOOP_JUDGE_MODULES``).

    Raises:
        ValidationError: naming the offending key.
    """
    cleaned = clean_loop_settings(data)
    judge = cleaned.get("gate_judge") or ""
    if judge:
        try:
            check_lead_rule(judge, list(settings.PREFLOOP_JUDGE_MODULES))
        except InvalidInput as exc:
            raise ValidationError(f"gate_judge: {exc.message}") from None
    return cleaned


def update_loop_settings(
    project: Project,
    *,
    base_model: str,
    loop_settings: str | dict[str, Any],
    new_chain: bool = False,
) -> Project:
    """Check and store the project's base model and loop settings; they apply from the next round.

    ``loop_settings`` is the JSON object as a lead typed it, or already decoded. Once the
    project has trained versions a new ``base_model`` needs ``new_chain`` (see
    ``training.services.base_chain``).

    Raises:
        InvalidInput: the text is not JSON, or a value is wrong; the message names the field.
            Nothing is written then.
    """
    base_model = base_model.strip()
    try:
        data = json.loads(loop_settings) if isinstance(loop_settings, str) else loop_settings
        clean_base_model(base_model)
        clean_lead_settings(data)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"Loop settings are not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput("Loop settings are not valid JSON: nested too deeply.") from None
    except ValidationError as exc:
        raise InvalidInput("; ".join(exc.messages)) from None
    with transaction.atomic():
        check_change(project, base_model, new_chain=new_chain)
        ProjectLoop.store(project, base_model=base_model, settings=data)
        if new_chain:
            start_new_chain(project)
    return project
