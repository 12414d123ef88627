"""``python -m bench``: see :mod:`bench.cli`."""

from __future__ import annotations

from bench.cli import main

raise SystemExit(main())
