"""``python -m golden``: the golden pipeline's command line (see :mod:`golden.cli`)."""

from .cli import main

raise SystemExit(main())
