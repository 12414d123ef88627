"""convosyncd: moves AI coding-session handoffs between machines through a git sync branch."""

from __future__ import annotations

__version__ = "0.1.0"
