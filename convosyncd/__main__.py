"""`python -m convosyncd` runs the command line."""

from __future__ import annotations

from convosyncd.cli import main

raise SystemExit(main())
