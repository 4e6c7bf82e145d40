"""The web process imports the training app's light modules without loading torch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["training.loop_settings", "training.services", "training.views", "annotate.views"]
)
def test_it_keeps_torch_out_of_the_web_process(module: str) -> None:
    # each module in a fresh interpreter: only the core's torch modules may load torch
    code = f"import django, sys; django.setup(); import {module}; print('torch' in sys.modules)"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "annotate.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"
