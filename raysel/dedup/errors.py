"""Errors of `raysel dedup`: ValueErrors raised before anything is written."""
from __future__ import annotations


class DedupError(ValueError):
    """A store or option dedup cannot use (no embeddings, zero or non-finite vectors, bad threshold)."""
