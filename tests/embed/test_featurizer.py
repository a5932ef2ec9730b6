from __future__ import annotations

import numpy as np
import pytest
import torch

from raysel.cluster.knowledge_clusters import KEPT_FEATURES
from raysel.embed.featurizer import Featurizer
from raysel.embed.knowledge import extract_tokens, kept_patch_mask, normalize_images
from raysel.storage import StorageOptions

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def featurizer():
    return Featurizer("test_vit", weights=None, random_init=True, tau=0.5, storage_options=StorageOptions())


def image_batch(num_images: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num_images, 160, 160, 3), dtype=np.uint8)
    images[0] = 0  # a failed decode arrives as a blank image and must pass through too
    return {
        "uri": np.array([f"/data/{i}.jpg" for i in range(num_images)], dtype=object),
        "image": images,
        "error": np.array(["cannot decode"] + [""] * (num_images - 1), dtype=object),
        "chunk_id": np.arange(num_images, dtype=np.int64),
    }


def test_featurizer_columns_shapes_and_passthrough(featurizer):
    batch = image_batch(4)
    out = featurizer(batch)
    assert set(out) == {"uri", "error", "chunk_id", "embedding", KEPT_FEATURES, "num_kept_patches"}
    for column in ("uri", "error", "chunk_id"):
        assert out[column] is batch[column]
    assert out["embedding"].shape == (4, 64) and out["embedding"].dtype == np.float32
    # Only the kept patches leave the model actor: one [n_b, D] array per image.
    assert out[KEPT_FEATURES].dtype == object and len(out[KEPT_FEATURES]) == 4
    for rows, count in zip(out[KEPT_FEATURES], out["num_kept_patches"]):
        assert rows.shape == (count, 64) and rows.dtype == np.float16
    assert sum(r.nbytes for r in out[KEPT_FEATURES]) < 4 * 100 * 64 * 2
    assert out["num_kept_patches"].shape == (4,) and out["num_kept_patches"].dtype == np.int32


def test_kept_features_are_the_kept_patches_by_attention(featurizer):
    batch = image_batch(3, seed=1)
    out = featurizer(batch)
    with torch.inference_mode():
        pixels = normalize_images(torch.from_numpy(batch["image"]), featurizer.spec.mean, featurizer.spec.std)
        tokens = extract_tokens(featurizer.model, pixels)
    kept = kept_patch_mask(tokens.cls_attention, 0.5)
    np.testing.assert_array_equal(out["num_kept_patches"], kept.sum(1).numpy())
    np.testing.assert_allclose(out["embedding"], tokens.embedding.numpy(), atol=1e-5, rtol=1e-5)
    for image in range(3):
        count = int(out["num_kept_patches"][image])
        assert 1 <= count <= 100
        by_attention = torch.argsort(tokens.cls_attention[image], descending=True, stable=True)[:count]
        assert set(by_attention.tolist()) == set(torch.nonzero(kept[image]).flatten().tolist())
        expected = tokens.patch_features[image, by_attention].half().numpy()
        np.testing.assert_array_equal(out[KEPT_FEATURES][image], expected)


def test_feature_dtype_float32():
    featurizer = Featurizer("test_vit", None, True, tau=0.9, storage_options=StorageOptions(), feature_dtype="float32")
    out = featurizer(image_batch(2))
    assert all(rows.dtype == np.float32 for rows in out[KEPT_FEATURES])


def test_wrong_image_size_is_a_clear_error(featurizer):
    batch = image_batch(2)
    batch["image"] = np.zeros((2, 224, 224, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"\[B, 160, 160, 3\] uint8"):
        featurizer(batch)


def test_random_init_is_the_same_on_every_actor(featurizer):
    other = Featurizer("test_vit", None, True, tau=0.5, storage_options=StorageOptions())
    batch = image_batch(2, seed=4)
    np.testing.assert_array_equal(featurizer(batch)["embedding"], other(batch)["embedding"])


def test_kmeans_in_the_model_actor_gives_the_clusters_of_the_kmeans_stage(featurizer):
    """The GPU path (K-Means where the patches are, only [B, K, D] leaves) equals the CPU K-Means actor path."""
    from raysel.cluster.knowledge_clusters import KnowledgeClusterer
    from raysel.embed.featurizer import KMeansSettings

    in_actor = Featurizer("test_vit", None, True, tau=0.5, storage_options=StorageOptions(), kmeans=KMeansSettings(3, 50, 1e-4))
    batch = image_batch(6, seed=5)
    direct = in_actor(batch)
    assert KEPT_FEATURES not in direct and direct["clusters"].shape == (6, 3, 64)
    staged = KnowledgeClusterer(3, 50, 1e-4)(featurizer(batch))
    np.testing.assert_allclose(direct["clusters"], staged["clusters"], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(direct["num_kept_patches"], staged["num_kept_patches"])


def test_bf16_autocast_keeps_attention_and_tau_in_float32():
    """Under bfloat16 autocast the class-token attention is the float32 computation, and kept sets barely change."""
    from raysel.embed.knowledge import class_token_attention

    fp32 = Featurizer("test_vit", None, True, tau=0.5, storage_options=StorageOptions(), autocast="off")
    bf16 = Featurizer("test_vit", None, True, tau=0.5, storage_options=StorageOptions(), autocast="bfloat16")
    model = fp32.model
    rng = np.random.default_rng(9)
    tokens = torch.from_numpy(rng.standard_normal((4, 101, 64)).astype(np.float32))
    with torch.inference_mode():
        reference = class_token_attention(model.blocks[-1], tokens, model.num_prefix_tokens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = class_token_attention(model.blocks[-1], tokens.bfloat16(), model.num_prefix_tokens)
    assert autocast.dtype == torch.float32
    # Same float32 math on the bf16-rounded input: far closer than a bf16 softmax (~4e-3 relative) would be.
    np.testing.assert_allclose(autocast.numpy(), reference.numpy(), rtol=2e-2, atol=2e-4)

    # Whole forward pass: bf16 vs float32 kept masks. Random test_vit attention on noise images is
    # nearly uniform (every patch near the tau boundary), the hardest case for agreement.
    images = torch.from_numpy(image_batch(32, seed=11)["image"])
    pixels = normalize_images(images, fp32.spec.mean, fp32.spec.std)
    with torch.inference_mode():
        masks = kept_patch_mask(extract_tokens(model, pixels).cls_attention, 0.5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            masks_bf16 = kept_patch_mask(extract_tokens(model, pixels).cls_attention, 0.5)
    assert (masks == masks_bf16).float().mean() >= 0.99  # per patch
    assert (masks == masks_bf16).all(1).float().mean() >= 0.7  # identical kept sets per image
    out = bf16(image_batch(2))
    assert out["embedding"].dtype == np.float32 and all(r.dtype == np.float16 for r in out[KEPT_FEATURES])
