"""`raysel simulate`: evaluate selection methods by simulated labeling rounds.

    from raysel.simulate import run_simulation
    from raysel.config import SimulateConfig

    run_simulation(SimulateConfig(store="pool/", labels="pool.csv", test_store="test/",
                                  test_labels="test.csv", out="sim/", methods="random,coreset"))

Modules: oracle (true labels), rounds (one method x seed curve), classifier (the
linear probe scored on the test split), results (the tidy table), plot (accuracy.png),
runner (all curves, config.yaml, resume).
"""
from __future__ import annotations

from raysel.simulate.errors import (
    EmptyTestSplitError,
    OracleLabelsError,
    ResultsMismatchError,
    SelectOptionsError,
    SimulationBudgetError,
    SimulationError,
)
from raysel.simulate.runner import run_simulation

__all__ = [
    "EmptyTestSplitError",
    "OracleLabelsError",
    "ResultsMismatchError",
    "SelectOptionsError",
    "SimulationBudgetError",
    "SimulationError",
    "run_simulation",
]
