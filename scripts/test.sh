#!/usr/bin/env bash
# `make test`: install the test extras and run the whole suite on the embedded
# defaults (SQLite and the file-system broker). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test

# The browser tests drive Debian's Chromium; install it when we can.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "Installing Chromium for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
    || echo "Could not install chromium: browser tests will be skipped" >&2
fi

# Run against the embedded defaults even when the caller's shell points elsewhere.
unset DATABASE_URL CELERY_BROKER_URL CELERY_RESULT_BACKEND
exec .venv/bin/python -m pytest "$@"
