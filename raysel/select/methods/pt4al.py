"""`pt4al`: PT4AL (Yi et al., ECCV 2022), one active-learning cycle per call.

    raysel select STORE --method pt4al --cycles 10 --cycle 0 --budget 1000 --out c0.parquet
    raysel select STORE --method pt4al --cycles 10 --cycle 1 --budget 1000 --labeled labels.csv --out c1.parquet

1. The store's `pretext_loss` (`raysel featurize --pretext MODEL`) sorts the pool,
   hardest first (numerically; ties by uri; `--pt4al-sort string` sorts the
   text `str(float(loss))` as the released make_batches.py does). The order is
   cut into `cycles` batches of equal size (the first N mod C batches hold one image more).
2. Cycle 0 (no model yet): every (|batch| / budget)-th image of batch 0, i.e.
   positions floor(j * |batch| / budget), j = 0 .. budget-1.
3. Cycle c >= 1: a main-task classifier trained on all labels so far (a linear
   head on the store's embeddings, or your own model's `--predictions`) scores
   batch c; the `budget` images with the lowest top-1 probability are picked
   (`--confidence normalized`, the default as in the released main.py: the
   softmax of L2-normalised logits; `softmax`: of the logits as they are).

Already-labeled images are never picked. Scores: the pretext loss in cycle 0,
the top-1 probability in later cycles.

With the linear head and `--shards S` > 1, cycle c >= 1 scores on S Ray tasks (the store's row
plan, `pool/store_rows.plan_shards`), each reading its rows in chunks and keeping the batch's
lowest `budget`; the driver merges them (same picks as the driver's own stream).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raysel import schema, storage
from raysel.config import SelectConfig
from raysel.select.base import Pick, SelectionContext, SelectionMethod, selection_table
from raysel.select.errors import BudgetError, DuplicateUriError, EmptyStoreError, SelectionConfigError, SelectionError
from raysel.select.supervision.labels import check_known
from raysel.select.supervision.posteriors import build_posteriors, iter_rows
from raysel.select.registry import register_method
from raysel.select.pool.store_rows import RowSlice, load_rows, plan_shards
from raysel.store import FeatureStore

SCORE_CHUNK_ROWS = 65_536  # rows a scoring task holds at once


class CycleError(SelectionConfigError):
    """--cycles below 1, or --cycle outside 0 .. cycles-1."""


class PretextLossMissingError(SelectionError):
    """A feature store without usable `pretext_loss` values."""


PT4AL_SORTS = ("numeric", "string")
CONFIDENCES = ("normalized", "softmax")


def loss_text(loss: float) -> str:
    """A loss as the released make_batches.py writes it: `str(float(loss))`, e.g. '0.25' or '9.5e-05'."""
    return str(float(loss))


def pretext_order(uris: list[str], losses: np.ndarray, sort: str = "numeric") -> list[int]:
    """Row indices, hardest first: by loss descending, or by `loss_text` descending (`sort="string"`); ties by uri.

    The string order is the released code's `np.argsort(strings)` reversed: '9.5e-05'
    sorts above '0.98' (and '1.2' above '0.98'), so the easiest images, whose losses print
    in scientific notation, join the hardest batch.
    """
    if sort not in PT4AL_SORTS:
        raise SelectionConfigError(f"--pt4al-sort must be one of {list(PT4AL_SORTS)}, got {sort!r}")
    if sort == "numeric":
        return sorted(range(len(uris)), key=lambda i: (-float(losses[i]), uris[i]))
    texts = [loss_text(loss) for loss in losses]
    by_uri = sorted(range(len(uris)), key=lambda i: uris[i])
    return sorted(by_uri, key=lambda i: texts[i], reverse=True)  # stable: ties stay in uri order


def pretext_batches(uris: list[str], losses: np.ndarray, cycles: int, sort: str = "numeric") -> list[list[str]]:
    """PT4AL's batches: uris sorted by loss, descending (ties by uri), cut into `cycles` near-equal parts."""
    order = pretext_order(uris, losses, sort)
    return [[uris[i] for i in part] for part in np.array_split(np.asarray(order, dtype=np.int64), cycles)]


def top1_confidence(logits: np.ndarray, confidence: str = "normalized") -> np.ndarray:
    """[n, K] logits -> [n] top-1 probability: of softmax(logits / |logits|_2) ('normalized'), or of softmax(logits).

    'normalized' is the released main.py (`F.softmax(F.normalize(outputs, dim=1))`,
    the norm clamped at 1e-12 as F.normalize does). Unit-norm logits lie in [-1, 1],
    so every top-1 probability stays near 1 / K and the order can differ from the
    plain softmax's (it ranks the direction of the logits, not their size).
    """
    if confidence not in CONFIDENCES:
        raise SelectionConfigError(f"--confidence must be one of {list(CONFIDENCES)}, got {confidence!r}")
    logits = np.asarray(logits, dtype=np.float64)
    if len(logits) == 0:
        return np.zeros(0)
    if confidence == "normalized":
        logits = logits / np.maximum(np.linalg.norm(logits, axis=1, keepdims=True), 1e-12)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (exp / exp.sum(axis=1, keepdims=True)).max(axis=1)


def uniform_positions(size: int, budget: int) -> list[int]:
    """Every (size / budget)-th position of a batch of `size`: floor(j * size / budget), j < budget."""
    return [j * size // budget for j in range(budget)]


def lowest_confidence(uris: list[str], probabilities: np.ndarray, budget: int) -> list[Pick]:
    """The `budget` uris with the lowest top-1 probability, lowest first (ties by uri)."""
    return lowest_scores(uris, probabilities.max(axis=1) if len(uris) else np.zeros(0), budget)


def lowest_scores(uris: list[str], confidence: np.ndarray, budget: int) -> list[Pick]:
    """The `budget` uris with the lowest confidence [n], lowest first (ties by uri)."""
    order = sorted(range(len(uris)), key=lambda i: (float(confidence[i]), uris[i]))[:budget]
    return [Pick(uris[i], float(confidence[i])) for i in order]


def score_candidates(
    store_uri: str, options, slices: list[RowSlice], probe, confidence: str, candidates: pa.Array, budget: int
) -> list[Pick]:
    """The `budget` least confident of `candidates` (uris) among some rows of the store (runs in a Ray task)."""
    store = FeatureStore(store_uri, options)
    best: list[Pick] = []
    for piece in slices:
        for start in range(piece.start, piece.stop, SCORE_CHUNK_ROWS):
            uris, vectors = load_rows(store, [RowSlice(piece.file, start, min(start + SCORE_CHUNK_ROWS, piece.stop))], schema.EMBEDDING)
            keep = np.flatnonzero(pc.is_in(pa.array(uris, pa.string()), value_set=candidates).to_numpy(zero_copy_only=False))
            if not len(keep):
                continue
            scores = top1_confidence(probe.predict_logits(vectors[keep, 0, :]), confidence)
            merged = np.concatenate([np.array([pick.score for pick in best], dtype=np.float64), scores])
            best = lowest_scores([pick.uri for pick in best] + [uris[i] for i in keep], merged, budget)
    return best


def lowest_on_shards(store: FeatureStore, shards: int, probe, confidence: str, candidates: list[str], budget: int) -> list[Pick]:
    """`score_candidates` on `shards` Ray tasks (each its lowest `budget`), merged on the driver."""
    import ray

    from raysel.runtime import ensure_ray

    ensure_ray()
    plan = plan_shards(store, shards)
    cpus = min(1.0, float(ray.cluster_resources().get("CPU", 1.0)) / shards)
    task = ray.remote(score_candidates).options(num_cpus=cpus)
    probe_ref, candidates_ref = ray.put(probe), ray.put(pa.array(candidates, pa.string()))
    parts = ray.get([task.remote(store.uri, store.options, slices, probe_ref, confidence, candidates_ref, budget) for slices in plan])
    merged = [pick for part in parts for pick in part]
    return lowest_scores([p.uri for p in merged], np.array([p.score for p in merged], dtype=np.float64), budget)


def read_pretext_losses(store: FeatureStore) -> tuple[list[str], np.ndarray]:
    """(uris [N], pretext_loss [N] float64) of the whole store."""
    store.metadata()  # a clear error when `store` is not a feature store
    uris: list[str] = []
    losses: list[np.ndarray] = []
    for shard in store.shard_uris():
        fs, path = storage.filesystem(shard, store.options)
        with fs.open(path, "rb") as handle:
            names = pq.ParquetFile(handle).schema_arrow.names
        if schema.PRETEXT_LOSS not in names:
            raise PretextLossMissingError(
                f"the feature store {store.uri} has no '{schema.PRETEXT_LOSS}' column (shard {shard}): "
                "train a rotation model (`raysel pretext train`) and featurize with --pretext MODEL"
            )
        table = store.read_shard(shard, columns=[schema.URI, schema.PRETEXT_LOSS])
        uris.extend(table.column(schema.URI).to_pylist())
        column = table.column(schema.PRETEXT_LOSS)
        if column.null_count:
            raise PretextLossMissingError(f"{shard} has rows without a {schema.PRETEXT_LOSS}")
        losses.append(column.to_numpy(zero_copy_only=False).astype(np.float64))
    if not uris:
        raise EmptyStoreError(f"the feature store {store.uri} has no rows")
    values = np.concatenate(losses)
    if not np.isfinite(values).all():
        bad = uris[int(np.argmax(~np.isfinite(values)))]
        raise PretextLossMissingError(f"{store.uri}: {bad} has a NaN or infinite {schema.PRETEXT_LOSS}")
    if len(set(uris)) != len(uris):
        raise DuplicateUriError(f"{store.uri}: a uri appears on more than one row of the store")
    return uris, values


@register_method("pt4al")
class PT4ALMethod(SelectionMethod):
    """Pretext-loss batches; uniform in cycle 0, lowest top-1 confidence in later cycles."""

    fingerprint_options = (
        "cycles", "cycle", "labeled", "predictions", "pt4al_sort", "confidence", "predictions_logits"
    )  # labels: by content

    def validate(self, config: SelectConfig) -> None:
        if config.cycles < 1:
            raise CycleError(f"--cycles must be >= 1, got {config.cycles}")
        if not 0 <= config.cycle < config.cycles:
            raise CycleError(f"--cycle must be in 0 .. {config.cycles - 1} (--cycles {config.cycles}), got {config.cycle}")
        if config.pt4al_sort not in PT4AL_SORTS:
            raise SelectionConfigError(f"--pt4al-sort must be one of {list(PT4AL_SORTS)}, got {config.pt4al_sort!r}")
        if config.confidence not in CONFIDENCES:
            raise SelectionConfigError(f"--confidence must be one of {list(CONFIDENCES)}, got {config.confidence!r}")

    def select(self, config: SelectConfig, store: FeatureStore, context: SelectionContext) -> pa.Table:
        self.validate(config)
        uris, losses = read_pretext_losses(store)
        known = set(uris)
        labeled = set(context.labeled)
        check_known(sorted(labeled), known, f"labeled file {config.labeled!r}")
        batches = pretext_batches(uris, losses, config.cycles, config.pt4al_sort)
        batch = batches[config.cycle]
        candidates = [uri for uri in batch if uri not in labeled]
        if config.budget < 1 or config.budget > len(candidates):
            raise BudgetError(
                f"--budget {config.budget} does not fit batch {config.cycle} of {config.cycles}: it holds "
                f"{len(batch)} images ({len(batch) - len(candidates)} labeled), so the budget must be in "
                f"1 .. {len(candidates)}; use fewer --cycles or a smaller --budget"
            )
        if config.cycle == 0:
            loss_of = dict(zip(uris, losses))
            picks = [Pick(candidates[p], float(loss_of[candidates[p]])) for p in uniform_positions(len(candidates), config.budget)]
            source = "pretext loss"
        else:
            posteriors = build_posteriors(config, store, known, "pt4al cycle >= 1")
            wanted = set(candidates)
            found_uris: list[str] = []
            found_scores: list[np.ndarray] = []

            def confidence_of(uris_: list[str], vectors_: np.ndarray | None) -> np.ndarray:
                # Logits (linear head, --predictions-logits) go through --confidence; probabilities as given.
                if posteriors.has_logits:
                    return top1_confidence(posteriors.predict_logits(uris_, vectors_), config.confidence)
                probs = posteriors.predict(uris_, vectors_)
                return probs.max(axis=1) if len(probs) else np.zeros(0)

            if posteriors.probe is not None and config.shards > 1:
                picks = lowest_on_shards(store, config.shards, posteriors.probe, config.confidence, candidates, config.budget)
                context.stats.update(scored_on_shards=config.shards)
            else:
                if posteriors.needs_embeddings:
                    for part, vectors in iter_rows(store, embeddings=True):
                        rows = [i for i, uri in enumerate(part) if uri in wanted]
                        if rows:
                            found_uris.extend(part[i] for i in rows)
                            found_scores.append(confidence_of([part[i] for i in rows], vectors[rows]))
                else:
                    found_uris = candidates
                    found_scores = [confidence_of(candidates, None)]
                scores = np.concatenate(found_scores) if found_scores else np.zeros(0)
                picks = lowest_scores(found_uris, scores, config.budget)
            source = posteriors.source
            context.stats.update(
                confidence=config.confidence if posteriors.has_logits else "top-1 of the given probabilities"
            )
        context.record(picks)
        context.stats.update(
            images=len(uris), cycles=config.cycles, cycle=config.cycle, batch_size=len(batch), pt4al_sort=config.pt4al_sort,
            batch_labeled=len(batch) - len(candidates), scores=source, picks=len(picks),
        )
        return selection_table(picks)
