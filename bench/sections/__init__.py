"""The benchmark's five sections, one module each, each a ``run(context)``."""
