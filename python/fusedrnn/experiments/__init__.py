"""Experiments behind the ``fusedrnn`` commands (one module per command)."""
