#!/usr/bin/env bash
# `make run`: everything a fresh machine needs, then web + worker + beat.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export PREFLOOP_PORT="${PREFLOOP_PORT:-8000}"
export PREFLOOP_SERVE_PORT="${PREFLOOP_SERVE_PORT:-8001}"
export DEBUG="${DEBUG:-0}"
py=.venv/bin/python

$py manage.py migrate --noinput
$py manage.py collectstatic --noinput >/dev/null
$py manage.py seed_demo
# Convert the bundled demo model to its safetensors cache once (about 30 s the
# first time), so that the worker and the model server start from the cache.
$py -c 'from training.core import resolve_demo_model; print("Demo model:", resolve_demo_model())'

cat <<BANNER

  prefloop is starting.
    Web app:    http://127.0.0.1:${PREFLOOP_PORT}/   (log in at /accounts/login/)
    API docs:   http://127.0.0.1:${PREFLOOP_PORT}/api/docs/
    Models:     http://127.0.0.1:${PREFLOOP_SERVE_PORT}/v1/chat/completions   (OpenAI-compatible)
                key: \$PREFLOOP_SERVE_API_KEY, else ${PREFLOOP_VAR_DIR:-var}/serve_api_key (made on first start)
  Demo logins (see above): lead / prefloop-lead, alice / prefloop-alice, bob / prefloop-bob
  Stop with Ctrl-C.

BANNER
exec .venv/bin/honcho start -f Procfile
