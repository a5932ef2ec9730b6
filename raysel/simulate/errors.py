"""Errors of `raysel simulate`: each names the problem; all are ValueErrors (the CLI exits 2)."""
from __future__ import annotations


class SimulationError(ValueError):
    """Base class: a simulation that cannot run with these inputs."""


class OracleLabelsError(SimulationError):
    """A labels file that does not match its store: images without a label, or labels of unknown images."""


class EmptyTestSplitError(SimulationError):
    """A test split without images."""


class SimulationBudgetError(SimulationError):
    """Budgets larger than the pool."""


class SelectOptionsError(SimulationError):
    """--select-options that are not a mapping of `raysel select` options the simulation leaves to the user."""


class ResultsMismatchError(SimulationError):
    """--out already holds results of a simulation with other inputs or budgets."""
