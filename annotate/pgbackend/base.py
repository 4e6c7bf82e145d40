"""Django's PostgreSQL backend, with the health check of a reused connection skipped while the
connection answered a request moments ago.

``CONN_HEALTH_CHECKS`` runs ``SELECT 1`` on a persistent connection before each request uses
it: one more round trip per request, as long as the request's own statements. Like PgBouncer's
``server_check_delay``, a connection that served a request without error less than
``PREFLOOP_DB_CHECK_DELAY`` seconds ago is taken as alive; an older one is checked as before.
If the server went away in that moment, the request's first statement fails, the request
answers 503 (``annotate.unavailable``) and Django closes the connection at its end, so the
next request opens a new one.
"""

from __future__ import annotations

import math
import time

from django.conf import settings
from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    # When the connection last finished a request's statements without error.
    answered_at = -math.inf
    health_check_done: bool

    def close_if_health_check_failed(self) -> None:
        if (
            self.connection is not None
            and not self.health_check_done
            and time.monotonic() - self.answered_at < settings.PREFLOOP_DB_CHECK_DELAY
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()

    def close_if_unusable_or_obsolete(self) -> None:
        # Runs when a request starts and when it ends. The health check's flag is set once a
        # request opens a cursor, so here it says whether the request just ended used the
        # connection.
        used = self.health_check_done
        super().close_if_unusable_or_obsolete()
        if used and self.connection is not None and not self.errors_occurred:
            self.answered_at = time.monotonic()
