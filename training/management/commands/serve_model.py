from __future__ import annotations

import ipaddress
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from training.serving import make_server, watch_promotions
from training.serving_key import key_file, serve_api_key


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Command(BaseCommand):
    help = (
        "Serve every project's versions behind an OpenAI-compatible "
        "POST /v1/chat/completions (model '<project-slug>' or '<project-slug>:v3'). "
        "Requests need 'Authorization: Bearer <key>': --api-key, else $PREFLOOP_SERVE_API_KEY, "
        "else the key generated once into $PREFLOOP_VAR_DIR/serve_api_key, which the "
        "Playground sends."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.PREFLOOP_SERVE_PORT)
        parser.add_argument(
            "--api-key",
            default=None,
            help="require 'Authorization: Bearer <key>' (default: $PREFLOOP_SERVE_API_KEY, "
            "else the key in $PREFLOOP_VAR_DIR/serve_api_key, made on first use)",
        )
        parser.add_argument(
            "--no-api-key",
            action="store_true",
            help="answer requests without a key (loopback hosts only, for development)",
        )
        parser.add_argument("--show-api-key", action="store_true", help="print the key at start-up")
        parser.add_argument(
            "--no-preload", action="store_true", help="load versions on first request only"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        host = options["host"]
        if options["no_api_key"]:
            if options["api_key"]:
                raise CommandError("--api-key and --no-api-key: pick one")
            if not _is_loopback(host):
                raise CommandError(
                    f"--no-api-key serves without a key on the loopback only, not on {host}"
                )
            api_key = None
            where = "none: --no-api-key (anyone on this machine can ask)"
        elif options["api_key"]:
            api_key = options["api_key"]
            where = "the one given with --api-key"
        else:
            api_key = serve_api_key()
            where = (
                "$PREFLOOP_SERVE_API_KEY"
                if settings.PREFLOOP_SERVE_API_KEY
                else f"in {key_file()} (the Playground sends it)"
            )
        server = make_server(host, options["port"], api_key=api_key)
        stop = threading.Event()
        if not options["no_preload"]:
            registry = server.RequestHandlerClass.service.registry  # type: ignore[attr-defined]
            threading.Thread(
                target=watch_promotions, args=(registry, stop), daemon=True, name="preload"
            ).start()
        port = server.server_address[1]
        self.stdout.write(f"Serving on http://{host}:{port}/v1/chat/completions")
        self.stdout.write(f"API key ('Authorization: Bearer <key>'): {where}")
        if options["show_api_key"] and api_key:
            self.stdout.write(f"API key: {api_key}")
        self.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            server.server_close()
