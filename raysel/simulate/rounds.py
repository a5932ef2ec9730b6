"""One simulated curve: the labeling rounds of one (method, seed).

Round r (0-based) labels budgets[r] - budgets[r-1] more images (budgets[0] in round 0):

1. `run_selection` with the method, `seed`, the images labeled so far as `--labeled`
   (a labels file with `uri` and `label`, written to DIR/runs/METHOD/seed-S/labeled-{r-1}.parquet),
   and for pt4al `cycle` = r, `cycles` = the number of rounds.
2. The oracle reveals the picks' labels; DIR/runs/METHOD/seed-S/labeled-{r}.parquet holds all labels so far.
3. A linear probe on the labeled images' embeddings is scored on the test split.

Cold start: a method that cannot choose without labels (it raises LabelsMissingError in round
0, as uncertainty does) or without two classes among them (SingleClassError) gets that round's
images from the `random` method with the same seed, and the row says picked_by = "random".
With the same seed, random's picks are nested across rounds, so uncertainty's first round is
exactly random's first round.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from raysel import schema, storage
from raysel.config import SelectConfig
from raysel.select import run_selection
from raysel.select.supervision.labels import LabelsMissingError, SingleClassError
from raysel.simulate.classifier import embeddings_of, probe_accuracy
from raysel.store import FeatureStore
from raysel.simulate.errors import SimulationError
from raysel.simulate.oracle import Oracle
from raysel.storage import StorageOptions

COLD_START_METHOD = "random"


@dataclass
class SimulationData:
    """Everything the rounds read: the pool store, embeddings of pool and test split, the oracle.

    `pool_features` None (what `load_data` gives): the labeled images' embeddings are
    streamed from the pool store each round, so memory holds the uris and the labeled
    rows, never the whole pool's [N, D].
    """

    pool_store: str
    pool_uris: list[str]
    pool_features: np.ndarray | None  # [N, D] float32 in pool_uris order, or None: read per round
    test_features: np.ndarray  # [M, D] float32
    test_targets: np.ndarray  # [M] int64 class indices (oracle.classes)
    oracle: Oracle
    pool_options: StorageOptions | None = None

    def labeled_features(self, labeled: Sequence[str]) -> np.ndarray:
        if self.pool_features is not None:
            row = {uri: index for index, uri in enumerate(self.pool_uris)}
            return self.pool_features[[row[uri] for uri in labeled]]
        return embeddings_of(FeatureStore(self.pool_store, self.pool_options or StorageOptions()), list(labeled))

    def accuracy(self, labeled: Sequence[str]) -> float:
        targets = self.oracle.class_indices(self.oracle.reveal(labeled))
        return probe_accuracy(self.labeled_features(labeled), targets, self.test_features, self.test_targets, len(self.oracle.classes))


def curve_dir(out: str, method: str, seed: int) -> str:
    return storage.join(out, "runs", method, f"seed-{seed}")


def run_curve(
    method: str, seed: int, budgets: Sequence[int], data: SimulationData, out: str,
    select_options: dict[str, Any], s3_endpoint: str | None = None,
) -> list[dict]:
    """The results rows (method, seed, round, labeled, accuracy, picked_by) of one curve."""
    run_dir = curve_dir(out, method, seed)
    options = StorageOptions(s3_endpoint=s3_endpoint)
    labeled: list[str] = []
    rows = []
    for round_index, target in enumerate(budgets):
        labeled_uri = storage.join(run_dir, f"labeled-{round_index - 1}.parquet") if labeled else None
        config = SelectConfig(
            store=data.pool_store, out=storage.join(run_dir, f"round-{round_index}.parquet"), budget=target - len(labeled),
            method=method, labeled=labeled_uri, seed=seed, cycles=len(budgets), cycle=round_index,
            s3_endpoint=s3_endpoint, **select_options,
        )
        picked_by = method
        try:
            selection = run_selection(config, progress=False)
        except (LabelsMissingError, SingleClassError):
            picked_by = COLD_START_METHOD
            cold = dataclasses.replace(config, method=COLD_START_METHOD, out=storage.join(run_dir, f"round-{round_index}-random.parquet"))
            selection = run_selection(cold, progress=False)
        picks = selection.column(schema.URI).to_pylist()
        already = set(labeled)
        if len(picks) != config.budget or len(set(picks)) != len(picks) or already.intersection(picks):
            raise SimulationError(
                f"{method} (seed {seed}, round {round_index}) returned {len(picks)} picks for a budget of {config.budget}, "
                f"{len(picks) - len(set(picks))} repeated, {len(already.intersection(picks))} already labeled"
            )
        labeled += picks
        data.oracle.write_labeled(labeled, storage.join(run_dir, f"labeled-{round_index}.parquet"), options)
        rows.append(
            {"method": method, "seed": seed, "round": round_index, "labeled": len(labeled),
             "accuracy": data.accuracy(labeled), "picked_by": picked_by}
        )
    return rows
