"""``python -m training train|generate ...`` (see training/core/cli.py)."""

from training.core.cli import main

raise SystemExit(main())
