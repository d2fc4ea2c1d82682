"""Posterior-collapse remedies, one per file, each a ``Remedy`` registered under a snake-case name."""
