"""`featurize --precision`: float32 end to end (the released code) or bfloat16; the CPU default stays float32."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raysel.cluster.knowledge_clusters import KEPT_FEATURES
from raysel.embed.featurizer import Featurizer
from raysel.embed.knowledge import extract_tokens, normalize_images, pack_kept_patches
from raysel.storage import StorageOptions

pytestmark = pytest.mark.torch


def featurizer(**options) -> Featurizer:
    return Featurizer(
        "test_vit", weights=None, random_init=True, tau=0.5, storage_options=StorageOptions(), compact=False, **options
    )


def test_float32_precision_ships_float32_patches_equal_to_a_float32_reference():
    images = np.random.default_rng(0).integers(0, 256, size=(3, 160, 160, 3), dtype=np.uint8)
    model = featurizer(precision="float32")
    assert model.autocast_dtype is None
    out = model({"uri": np.array(["a", "b", "c"], dtype=object), "image": images})
    assert out[KEPT_FEATURES].dtype == np.float32
    with torch.inference_mode():  # the reference: plain float32, no autocast, no float16 hop
        tokens = extract_tokens(model.model, normalize_images(torch.from_numpy(images), model.spec.mean, model.spec.std))
        kept, num_kept = pack_kept_patches(tokens.patch_features, tokens.cls_attention, 0.5)
    np.testing.assert_array_equal(out[KEPT_FEATURES], kept.numpy())
    np.testing.assert_array_equal(out["num_kept_patches"], num_kept.numpy())

    default = featurizer()({"uri": np.array(["a", "b", "c"], dtype=object), "image": images})
    assert default[KEPT_FEATURES].dtype == np.float16  # the default ships float16 to K-Means
    np.testing.assert_array_equal(default["embedding"], out["embedding"])  # same float32 model on the CPU
    bf16 = featurizer(precision="bf16")
    assert bf16.autocast_dtype == torch.bfloat16
    low = bf16({"uri": np.array(["a", "b", "c"], dtype=object), "image": images})
    assert not np.array_equal(low["embedding"], out["embedding"])  # bfloat16 arithmetic really ran
    np.testing.assert_allclose(low["embedding"], out["embedding"], atol=0.1, rtol=0.1)
    with pytest.raises(ValueError, match="precision"):
        featurizer(precision="fp8")
