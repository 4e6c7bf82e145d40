"""Many annotators asking for and judging pairs at once.

Runs on whatever database the suite uses: SQLite (IMMEDIATE transactions) by
default and PostgreSQL (SELECT ... FOR UPDATE SKIP LOCKED) in the
service-backed run.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter

import pytest
from django.db import close_old_connections, connection

from annotate import services
from annotate.errors import ServiceError
from annotate.models import Comparison, Judgment

from ..factories import UserFactory


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_concurrent_annotators_never_overfill_a_pair(team):
    overlap, n_pairs, n_annotators = 2, 25, 8
    team.project.overlap = overlap
    team.project.save()
    team.pairs(n_pairs)
    annotators = [UserFactory(username=f"worker{i}") for i in range(n_annotators)]
    for user in annotators:
        services.add_member(team.project, user.username, "annotator")

    acknowledged: list[tuple[int, int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(n_annotators)

    def work(user) -> None:
        rng = random.Random(user.pk)
        try:
            start.wait()
            while True:
                assignment = services.next_assignment(team.project, user)
                if assignment is None:
                    return
                client_id = uuid.uuid4()
                data = services.JudgmentInput(
                    choice=rng.choice(services.SHOWN_CHOICES), client_id=client_id
                )
                judgment, created = services.submit_judgment(user, assignment.comparison_id, data)
                # A network retry of the same submission.
                if rng.random() < 0.3:
                    replay, again = services.submit_judgment(user, assignment.comparison_id, data)
                    assert not again and replay.pk == judgment.pk
                with lock:
                    acknowledged.append((judgment.pk, user.pk, assignment.comparison_id))
        except (ServiceError, AssertionError, Exception) as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=work, args=(u,)) for u in annotators]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert errors == []

    per_pair = Counter(Judgment.objects.values_list("comparison_id", flat=True))
    assert max(per_pair.values()) <= overlap
    # Every pair was completed: there were more annotators than the overlap.
    assert sorted(per_pair.values()) == [overlap] * n_pairs
    for comparison in Comparison.objects.filter(project=team.project):
        assert comparison.judgment_count == per_pair[comparison.pk]
    pairs_by_annotator = Counter(Judgment.objects.values_list("annotator_id", "comparison_id"))
    assert max(pairs_by_annotator.values()) == 1
    stored = set(Judgment.objects.values_list("pk", "annotator_id", "comparison_id"))
    assert set(acknowledged) == stored
    assert len(acknowledged) == overlap * n_pairs
