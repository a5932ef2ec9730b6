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
    assert out[KEPT_FEATURES].shape == (4, 100, 64) and out[KEPT_FEATURES].dtype == np.float16
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
        np.testing.assert_array_equal(out[KEPT_FEATURES][image, :count], expected)
        assert not out[KEPT_FEATURES][image, count:].any()


def test_feature_dtype_float32():
    featurizer = Featurizer("test_vit", None, True, tau=0.9, storage_options=StorageOptions(), feature_dtype="float32")
    out = featurizer(image_batch(2))
    assert out[KEPT_FEATURES].dtype == np.float32


def test_wrong_image_size_is_a_clear_error(featurizer):
    batch = image_batch(2)
    batch["image"] = np.zeros((2, 224, 224, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"\[B, 160, 160, 3\] uint8"):
        featurizer(batch)


def test_random_init_is_the_same_on_every_actor(featurizer):
    other = Featurizer("test_vit", None, True, tau=0.5, storage_options=StorageOptions())
    batch = image_batch(2, seed=4)
    np.testing.assert_array_equal(featurizer(batch)["embedding"], other(batch)["embedding"])
