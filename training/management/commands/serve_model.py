from __future__ import annotations

import os
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from training.serving import make_server, watch_promotions


class Command(BaseCommand):
    help = (
        "Serve every project's versions behind an OpenAI-compatible "
        "POST /v1/chat/completions (model '<project-slug>' or '<project-slug>:v3')."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.PREFLOOP_SERVE_PORT)
        parser.add_argument(
            "--api-key",
            default=os.environ.get("PREFLOOP_SERVE_API_KEY") or None,
            help="require 'Authorization: Bearer <key>' (default: $PREFLOOP_SERVE_API_KEY)",
        )
        parser.add_argument(
            "--no-preload", action="store_true", help="load versions on first request only"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        server = make_server(options["host"], options["port"], api_key=options["api_key"])
        stop = threading.Event()
        if not options["no_preload"]:
            registry = server.RequestHandlerClass.service.registry  # type: ignore[attr-defined]
            threading.Thread(
                target=watch_promotions, args=(registry, stop), daemon=True, name="preload"
            ).start()
        port = server.server_address[1]
        self.stdout.write(f"Serving on http://{options['host']}:{port}/v1/chat/completions")
        self.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            server.server_close()
