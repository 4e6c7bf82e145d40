"""``{% round_stall round as stall %}``: why a collecting round is not finishing, for the
loop page's current-round card (``templates/training/_stall.html``)."""

from __future__ import annotations

from django import template

from ..models import Round
from ..services.stall import Stall
from ..services.stall import round_stall as analyse

register = template.Library()


@register.simple_tag
def round_stall(loop_round: Round | None) -> Stall | None:
    if loop_round is None:
        return None
    return analyse(loop_round)
