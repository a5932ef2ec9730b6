"""`uncertainty`: a classifier on frozen self-supervised embeddings ranks the unlabeled pool.

    raysel select STORE --method uncertainty --acquisition entropy --labeled labels.csv --budget 500 --out next.parquet

As in "Reducing Label Effort: Self-Supervised meets Active Learning" (Zolfaghari
Bengar et al., 2021): the encoder is frozen (the store's `embedding`), a linear
classifier is trained on the labeled images each cycle, and an acquisition
function ranks every unlabeled image; the `budget` most uncertain are picked.
`--predictions FILE` replaces the built-in linear head with your model's probabilities.

Acquisitions (score column; picked in this order, ties by uri):
- entropy: -sum_k p_k log p_k, highest first.
- margin: p_(1) - p_(2) (top-1 minus top-2 probability), smallest first.
- least-confidence: 1 - p_(1), highest first.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raysel import schema
from raysel.config import SelectConfig
from raysel.select.base import Pick, SelectionContext, SelectionMethod, selection_table
from raysel.select.errors import BudgetError, SelectionConfigError
from raysel.select.supervision.labels import check_known
from raysel.select.supervision.posteriors import build_posteriors, iter_rows, store_uris
from raysel.select.registry import register_method
from raysel.select.pool.store_rows import RowSlice, load_rows, plan_shards
from raysel.store import FeatureStore

ACQUISITIONS = ("entropy", "margin", "least-confidence")


def acquisition_scores(probabilities: np.ndarray, acquisition: str) -> np.ndarray:
    """[n, K] class probabilities -> [n] float64 acquisition scores (see the module docstring)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if acquisition == "entropy":
        return -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)
    top = -np.sort(-p, axis=1) if len(p) else np.zeros((0, 2))
    if acquisition == "margin":
        return top[:, 0] - top[:, 1]
    if acquisition == "least-confidence":
        return 1.0 - top[:, 0]
    raise SelectionConfigError(f"--acquisition must be one of {', '.join(ACQUISITIONS)}, got {acquisition!r}")


def most_uncertain(uris: list[str], probabilities: np.ndarray, acquisition: str, budget: int) -> list[Pick]:
    """The `budget` most uncertain uris under `acquisition`, most uncertain first (ties by uri)."""
    return _top(uris, acquisition_scores(probabilities, acquisition), acquisition, budget)


def _top(uris: list[str], score: np.ndarray, acquisition: str, budget: int) -> list[Pick]:
    sign = 1.0 if acquisition == "margin" else -1.0  # small margins first; high entropy / 1 - p_max first
    if not uris:
        return []
    order = np.lexsort((np.asarray(uris, dtype=str), sign * np.asarray(score, dtype=np.float64)))[:budget]
    return [Pick(uris[i], float(score[i])) for i in order]


SCORE_CHUNK_ROWS = 65_536  # rows a scoring task holds at once
PREDICT_ROWS = 16_384  # rows the driver's stream scores at once: [rows, classes] probabilities (113 MB at 862 classes)


def _chunks(slices: list[RowSlice]) -> list[list[RowSlice]]:
    return [
        [RowSlice(piece.file, start, min(start + SCORE_CHUNK_ROWS, piece.stop))]
        for piece in slices
        for start in range(piece.start, piece.stop, SCORE_CHUNK_ROWS)
    ]


def score_slices(store_uri: str, options, slices: list[RowSlice], probe, acquisition: str, labeled: pa.Array, budget: int) -> list[Pick]:
    """The `budget` most uncertain unlabeled images among some rows of the store (runs in a Ray task)."""
    store = FeatureStore(store_uri, options)
    best: list[Pick] = []
    for chunk in _chunks(slices):
        uris, vectors = load_rows(store, chunk, schema.EMBEDDING)
        keep = np.flatnonzero(~pc.is_in(pa.array(uris, pa.string()), value_set=labeled).to_numpy(zero_copy_only=False))
        if not len(keep):
            continue
        score = acquisition_scores(probe.predict_proba(vectors[keep, 0, :]), acquisition)
        merged = np.concatenate([np.array([pick.score for pick in best], dtype=np.float64), score])
        best = _top([pick.uri for pick in best] + [uris[i] for i in keep], merged, acquisition, budget)
    return best


def top_on_shards(store: FeatureStore, shards: int, probe, acquisition: str, labeled: pa.Array, budget: int) -> list[Pick]:
    """The linear head scores the store's rows on `shards` Ray tasks (each its top `budget`); the driver merges."""
    import ray

    from raysel.runtime import ensure_ray

    ensure_ray()
    plan = plan_shards(store, shards)
    cpus = min(1.0, float(ray.cluster_resources().get("CPU", 1.0)) / shards)
    task = ray.remote(score_slices).options(num_cpus=cpus)
    probe_ref, labeled_ref = ray.put(probe), ray.put(labeled)
    parts = ray.get([task.remote(store.uri, store.options, slices, probe_ref, acquisition, labeled_ref, budget) for slices in plan])
    merged = [pick for part in parts for pick in part]
    return _top([p.uri for p in merged], np.array([p.score for p in merged], dtype=np.float64), acquisition, budget)


@register_method("uncertainty")
class UncertaintyMethod(SelectionMethod):
    """Entropy, margin or least-confidence sampling over the whole unlabeled pool."""

    fingerprint_options = ("acquisition", "labeled", "predictions")  # labels: by content

    def validate(self, config: SelectConfig) -> None:
        if config.acquisition not in ACQUISITIONS:
            raise SelectionConfigError(f"--acquisition must be one of {', '.join(ACQUISITIONS)}, got {config.acquisition!r}")

    def select(self, config: SelectConfig, store: FeatureStore, context: SelectionContext) -> pa.Table:
        self.validate(config)
        uris = store_uris(store)
        known = set(uris)
        labeled = set(context.labeled)
        check_known(sorted(labeled), known, f"labeled file {config.labeled!r}")
        pool = len(uris) - len(labeled)
        if config.budget < 1 or config.budget > pool:
            raise BudgetError(
                f"--budget {config.budget} must be in 1 .. {pool}: {len(uris)} images in the store, "
                f"{len(labeled)} labeled"
            )
        posteriors = build_posteriors(config, store, known, "uncertainty")
        labeled_array = pa.array(sorted(labeled), pa.string())
        if posteriors.probe is not None and config.shards > 1:
            best = top_on_shards(store, config.shards, posteriors.probe, config.acquisition, labeled_array, config.budget)
            context.record(best)
            context.stats.update(
                images=len(uris), labeled=len(labeled), acquisition=config.acquisition, scores=posteriors.source,
                classes=len(posteriors.classes), picks=len(best), scored_on_shards=config.shards,
            )
            return selection_table(best)
        # Stream the store, keeping the best `budget` so far: memory stays O(budget + shard + PREDICT_ROWS x classes).
        best: list[Pick] = []
        for part, vectors in iter_rows(store, embeddings=posteriors.needs_embeddings):
            keep = ~pc.is_in(pa.array(part, pa.string()), value_set=labeled_array).to_numpy(zero_copy_only=False)
            rows = np.flatnonzero(keep)
            for start in range(0, len(rows), PREDICT_ROWS):  # [rows, classes] probabilities a block at a time
                block = rows[start : start + PREDICT_ROWS]
                candidates = [part[i] for i in block]
                probabilities = posteriors.predict(candidates, vectors[block] if vectors is not None else None)
                score = acquisition_scores(probabilities, config.acquisition)
                merged_score = np.concatenate([np.array([pick.score for pick in best], dtype=np.float64), score])
                best = _top([pick.uri for pick in best] + candidates, merged_score, config.acquisition, config.budget)
        context.record(best)
        context.stats.update(
            images=len(uris), labeled=len(labeled), acquisition=config.acquisition, scores=posteriors.source,
            classes=len(posteriors.classes), picks=len(best),
        )
        return selection_table(best)
