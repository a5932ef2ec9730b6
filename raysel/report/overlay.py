"""Section 5: knowledge-cluster overlays of the first picks, as in GEAL's visualisation.

Recomputed from the model the store's metadata records (model, tau, K, image
size, weights or seeded random init; `--weights` / `--random-init` override):
one forward pass, the kept patches (tau of the class-token attention), K-Means
on them as featurize runs it (features rounded to float16 first, as the model
stage ships them), then each kept patch coloured by its cluster and every other
patch dimmed. The recomputed clusters are compared with the stored ones, so a
wrong checkpoint shows.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass

import matplotlib
import numpy as np
import torch
from PIL import Image

from raysel import schema, storage
from raysel.cluster.kmeans import image_seed, kmeans_single, nearest_center, needs_seeds
from raysel.config import ReportConfig
from raysel.embed.backbone import BackboneError, input_spec, load_backbone
from raysel.embed.knowledge import extract_tokens, kept_patch_order, normalize_images
from raysel.images import read_and_decode
from raysel.report.contact_sheet import MAX_PIXELS
from raysel.report.inputs import ReportInputError, Selection
from raysel.report.page import Section, absent, escape, img
from raysel.store import FeatureStore, vectors_of

FEATURE_DTYPE = torch.float16  # what the model stage ships to K-Means (raysel.embed.featurizer)
DIMMED = 0.3  # brightness of patches GEAL does not keep
TINT = 0.55  # weight of the cluster colour on kept patches
DISPLAY_MIN_PIXELS = 224  # small model inputs are enlarged (nearest neighbour) to at least this
MISMATCH_TOLERANCE = 1e-2  # relative difference from the stored clusters that is flagged


@dataclass
class PatchClusters:
    """One image's overlay data: `pixels` [S, S, 3] uint8, `patch_cluster` [Gh, Gw] int64 (-1: not kept), `centers` [K, D]."""

    pixels: np.ndarray
    patch_cluster: np.ndarray
    centers: np.ndarray


def compute_patch_clusters(
    model, pixels: np.ndarray, tau: float, k: int, max_iters: int, tol: float,
    rule: dict | None = None, seeds: list[int] | None = None,
) -> list[PatchClusters]:
    """Kept patches and their K-Means cluster, per image of `pixels` [B, S, S, 3] uint8 (the model's size).

    `rule`: the store's K-Means init / stop / empty (default: farthest point, as stores before
    --kmeans-init); `seeds`: each image's `image_seed` when the rule draws random numbers.
    """
    rule = rule or {"init": "farthest", "stop": "max-shift", "empty": "keep"}
    spec = input_spec(model)
    grid_h, grid_w = model.patch_embed.grid_size
    with torch.inference_mode():
        tokens = extract_tokens(model, normalize_images(torch.from_numpy(np.ascontiguousarray(pixels)), spec.mean, spec.std))
        order, num_kept = kept_patch_order(tokens.cls_attention, tau)
        results = []
        for index in range(len(pixels)):
            kept = order[index, : int(num_kept[index])]
            points = tokens.patch_features[index, kept].to(FEATURE_DTYPE)
            centers = kmeans_single(points, k, max_iters, tol, **rule, seed=None if seeds is None else seeds[index])
            patch_cluster = torch.full((grid_h * grid_w,), -1, dtype=torch.int64)
            patch_cluster[kept] = nearest_center(points, centers)
            results.append(PatchClusters(pixels[index], patch_cluster.reshape(grid_h, grid_w).numpy(), centers.numpy()))
    return results


def cluster_colors(k: int) -> np.ndarray:
    """[K, 3] float RGB in 0..1, distinct for K up to 20."""
    palette = matplotlib.colormaps["tab10" if k <= 10 else "tab20"]
    return np.array([palette(i % palette.N)[:3] for i in range(k)])


def render_overlay(result: PatchClusters, k: int) -> bytes:
    """PNG: kept patches tinted by cluster colour, the others dimmed."""
    size = result.pixels.shape[0]
    grid_h, grid_w = result.patch_cluster.shape
    per_pixel = np.repeat(np.repeat(result.patch_cluster, size // grid_h, 0), size // grid_w, 1)
    per_pixel = np.pad(per_pixel, ((0, size - per_pixel.shape[0]), (0, size - per_pixel.shape[1])), constant_values=-1)
    pixels = result.pixels.astype(np.float64) / 255.0
    colors = cluster_colors(k)[np.maximum(per_pixel, 0)]
    kept = (per_pixel >= 0)[..., None]
    blended = np.where(kept, (1 - TINT) * pixels + TINT * colors, DIMMED * pixels)
    image = Image.fromarray(np.round(blended * 255).astype(np.uint8))
    scale = max(1, -(-DISPLAY_MIN_PIXELS // size))
    if scale > 1:
        image = image.resize((size * scale, size * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _weights(config: ReportConfig, metadata: dict) -> tuple[str | None, bool, str]:
    """(weights, random_init, words for the page): the flags win, else what the store records."""
    if config.weights:
        return config.weights, False, f"weights {config.weights}"
    if config.random_init:
        return None, True, f"random init (seed {metadata.get('seed', 0)})"
    if metadata.get("weights"):
        return metadata["weights"], False, f"weights {metadata['weights']} (as the store records)"
    if metadata.get("random_init"):
        return None, True, f"random init, seed {metadata.get('seed', 0)} (as the store records)"
    return None, False, "the timm hub's pretrained weights"


def _stored_clusters(store: FeatureStore, uris: list[str]) -> dict[str, np.ndarray]:
    wanted, found = set(uris), {}
    for table in store.iter_tables(columns=[schema.URI, schema.CLUSTERS]):
        clusters = vectors_of(table.column(schema.CLUSTERS), 3)
        for row, uri in enumerate(table.column(schema.URI).to_pylist()):
            if uri in wanted:
                found[uri] = clusters[row]
    return found


def _kmeans_settings(store: FeatureStore) -> tuple[int, float, dict, int]:
    """K-Means iterations, tolerance, rule and seed of the run that wrote the store.

    Unrecorded values are what featurize did before they were options (farthest-point init).
    """
    try:
        resolved = storage.read_json(store.path(schema.RESOLVED_CONFIG_FILE), store.options)
    except (FileNotFoundError, ValueError):
        resolved = {}
    rule = {
        "init": resolved.get("kmeans_init", "farthest"),
        "stop": resolved.get("kmeans_stop", "max-shift"),
        "empty": resolved.get("kmeans_empty", "keep"),
    }
    return int(resolved.get("kmeans_iters", 100)), float(resolved.get("kmeans_tol", 1e-4)), rule, int(resolved.get("seed", 0))


def overlay_section(config: ReportConfig, store: FeatureStore, metadata: dict, selection: Selection) -> Section:
    title = "Knowledge clusters of the first picks"
    if config.overlays == 0:
        return Section("overlays", title, absent("Overlays turned off (--overlays 0)."))
    needed = ("model", "tau", "clusters", "image_size")
    if any(metadata.get(key) is None for key in needed):
        return Section("overlays", title, absent(
            f"The store's metadata records no model ({', '.join(needed)}): it was not written by `raysel featurize`, "
            "so the knowledge clusters cannot be recomputed."
        ))
    weights, random_init, weights_words = _weights(config, metadata)
    try:
        model = load_backbone(metadata["model"], weights, random_init, config.storage(), seed=int(metadata.get("seed", 0)))
    except BackboneError as exc:
        raise BackboneError(f"{exc} (or pass --overlays 0 to leave the overlays out)") from exc
    image_size = int(metadata["image_size"])
    if input_spec(model).image_size != image_size:
        raise ReportInputError(f"the store was featurized at {image_size} px but {metadata['model']} takes {input_spec(model).image_size} px")
    k, tau = int(metadata["clusters"]), float(metadata["tau"])
    max_iters, tol, rule, seed = _kmeans_settings(store)

    uris = selection.uris[: config.overlays]
    decoded = [read_and_decode(uri, image_size, MAX_PIXELS, config.storage()) for uri in uris]
    readable = [(rank, uri, pixels) for rank, (uri, (pixels, _)) in enumerate(zip(uris, decoded)) if pixels is not None]
    results = (
        compute_patch_clusters(
            model, np.stack([p for _, _, p in readable]), tau, k, max_iters, tol, rule,
            [image_seed(uri, seed) for _, uri, _ in readable] if needs_seeds(rule["init"], rule["empty"]) else None,
        )
        if readable
        else []
    )
    stored = _stored_clusters(store, [uri for _, uri, _ in readable])
    colors = cluster_colors(k)
    figures = []
    for (rank, uri, _), result in zip(readable, results):
        kept = int((result.patch_cluster >= 0).sum())
        swatches = "".join(
            f'<span class="swatch" style="background:rgb({",".join(str(int(255 * c)) for c in colors[j])})"></span>'
            f"{int((result.patch_cluster == j).sum())}"
            for j in range(k)
        )
        check = ""
        if uri in stored:
            gap = float(np.abs(stored[uri] - result.centers).max())
            scale = max(float(np.abs(stored[uri]).max()), 1e-12)
            agrees = gap <= MISMATCH_TOLERANCE * scale
            check = (
                f'<br><span class="{"match" if agrees else "mismatch"}" data-max-gap="{gap:.3g}">'
                + ("recomputed clusters match the store" if agrees else "recomputed clusters DIFFER from the store: other weights?")
                + f" (max |difference| {gap:.2g})</span>"
            )
        figures.append(
            f'<figure class="overlay" data-rank="{rank}" title="{escape(uri)}">'
            + img(render_overlay(result, k), "image/png", f"knowledge clusters of rank {rank}")
            + f"<figcaption>#{rank} {escape(os.path.basename(uri))}: {kept} of {result.patch_cluster.size} patches kept; "
            f"patches per cluster {swatches}{check}</figcaption></figure>"
        )
    for rank, (uri, (pixels, reason)) in enumerate(zip(uris, decoded)):
        if pixels is None:
            figures.append(f'<figure class="overlay" data-rank="{rank}"><figcaption>#{rank} {escape(uri)}: {escape(reason)}</figcaption></figure>')
    note = (
        f"Model {metadata['model']} with {weights_words}; tau {tau}, K {k}. Each kept patch (together holding tau of "
        f"the class-token attention) is coloured by its K-Means cluster; the other patches are dimmed."
    )
    body = f'<p class="note">{escape(note)}</p>\n<div class="overlays">{"".join(figures)}</div>'
    return Section("overlays", title, body)
