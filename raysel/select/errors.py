"""Errors of `raysel select`: each names the problem and is raised before anything is written.

All are `ValueError`s, so the CLI reports them as input errors (exit code 2).
"""
from __future__ import annotations

from raysel.store import FeatureStoreError


class SelectionError(ValueError):
    """Base class: a selection that cannot run with these inputs."""


class SelectionConfigError(SelectionError):
    """An option out of range or unknown (sampling, distance, dtype, shards, ...)."""


class UnknownMethodError(SelectionConfigError):
    """A method name that is not registered; the message lists the valid ones."""


class BudgetError(SelectionError):
    """Budget below 1 or larger than the unlabeled pool."""


class EmptyStoreError(SelectionError, FeatureStoreError):
    """A feature store without rows."""


class InconsistentVectorsError(SelectionError, FeatureStoreError):
    """Rows with different K or dimensions, within a shard or across shards."""


class InvalidVectorError(SelectionError):
    """NaN or infinite values (or a zero vector under cosine distance); the message names a uri."""


class DuplicateUriError(SelectionError):
    """The same uri on two rows of the store."""


class LabeledError(SelectionError):
    """A labeled file that cannot be used: missing `uri` column, or uris the store does not have."""


class CheckpointError(SelectionError):
    """A checkpoint next to the output that another configuration wrote."""
