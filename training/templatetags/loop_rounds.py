"""Template tags of the loop page: a round's pair counts, computed where the page shows them."""

from __future__ import annotations

from django import template

from training.models import Round
from training.services.round_stats import PairCounts, pair_counts

register = template.Library()


@register.simple_tag
def round_pair_counts(loop_round: Round) -> PairCounts:
    """``{% round_pair_counts round as counts %}``: what the round trains on, and why not more."""
    return pair_counts(loop_round)
