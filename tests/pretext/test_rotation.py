"""The rotation pretext model, its files and the scorer, single process (no Ray)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raysel import schema
from raysel.embed.backbone import load_backbone
from raysel.pretext import checkpoints
from raysel.pretext.rotation import PretextError, build_rotation_net, per_image_loss, rotated_views
from raysel.pretext.scorer import PretextScorer

pytestmark = pytest.mark.torch


def reference_pretext_loss(net, images: torch.Tensor) -> np.ndarray:
    """PT4AL's make_batches.py: one image at a time, 4 forward passes, mean of the 4 cross-entropies."""
    losses = []
    for image in images:
        per_view = []
        for k in range(4):
            view = torch.from_numpy(np.ascontiguousarray(np.rot90(image.numpy(), k, axes=(1, 2))))[None]
            per_view.append(F.cross_entropy(net(view), torch.tensor([k])).item())
        losses.append(sum(per_view) / 4)
    return np.array(losses)


def test_rotated_views_turn_counterclockwise_in_label_order():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    views, labels = rotated_views(images)
    assert views.shape == (8, 3, 4, 4)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for k in range(4):
        expected = np.rot90(images.numpy(), k, axes=(2, 3))
        assert np.array_equal(views[2 * k : 2 * k + 2].numpy(), expected)
    with pytest.raises(ValueError, match="square"):
        rotated_views(torch.zeros(1, 3, 4, 5))


def test_pretext_loss_matches_one_image_at_a_time_reference():
    net, _ = build_rotation_net("test_resnet", image_size=32, seed=3)
    net.eval()
    images = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batched = net.pretext_loss(images).numpy()
        reference = reference_pretext_loss(net, images)
    assert batched.dtype == np.float32 and batched.shape == (5,)
    np.testing.assert_allclose(batched, reference, rtol=1e-4, atol=1e-5)
    logits = torch.zeros(8, 4)
    assert np.allclose(per_image_loss(logits, rotated_views(torch.zeros(2, 1, 2, 2))[1], 2).numpy(), np.log(4))


def test_same_seed_builds_the_same_network():
    first, _ = build_rotation_net("test_resnet", image_size=32, seed=7)
    second, _ = build_rotation_net("test_resnet", image_size=32, seed=7)
    other, _ = build_rotation_net("test_resnet", image_size=32, seed=8)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values()))


def test_model_file_round_trips_and_its_vit_backbone_loads_in_featurize(tmp_path):
    net, spec = build_rotation_net("test_vit", seed=1)  # the model's own size (160): featurize-compatible
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.01)  # "trained": differs from any fresh init
    path = str(tmp_path / "pretext.pt")
    checkpoints.save(checkpoints.export_model(net, "test_vit", spec, {"history": [1.0]}), path)

    loaded, loaded_spec, meta = checkpoints.load_model(path)
    assert loaded_spec == spec and meta["featurize_compatible"] and meta["history"] == [1.0]
    images = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    net.eval()
    assert torch.allclose(loaded.pretext_loss(images), net.pretext_loss(images))

    # `raysel featurize --model test_vit --weights pretext.pt` reads the "model" entry.
    backbone = load_backbone("test_vit", weights=path)
    trained = net.backbone.state_dict()
    for key, value in backbone.state_dict().items():
        if key in trained:
            assert torch.equal(value, trained[key]), key
        else:  # the default 1000-way classifier: zeros, never trained
            assert key.startswith("head.") and not value.any()


def test_vit_trained_at_another_size_is_marked_not_featurize_compatible(tmp_path):
    net, spec = build_rotation_net("test_vit", image_size=32, seed=1)
    payload = checkpoints.export_model(net, "test_vit", spec, {})
    assert payload["pretext"]["featurize_compatible"] is False
    path = str(tmp_path / "small.pt")
    checkpoints.save(payload, path)
    loaded, loaded_spec, _ = checkpoints.load_model(path)  # still a fine pretext model at 32 px
    assert loaded_spec.image_size == 32
    assert loaded.pretext_loss(torch.zeros(1, 3, 32, 32)).shape == (1,)


class Payload:
    """Any class: torch.load(weights_only=True) must refuse to build it."""


def test_load_model_rejects_other_files(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(PretextError, match="not a raysel pretext model"):
        checkpoints.load_model(str(plain))

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"pretext": Payload()}, unsafe)
    with pytest.raises(PretextError, match="weights_only"):
        checkpoints.load_model(str(unsafe))
    with pytest.raises(PretextError, match="does not exist"):
        checkpoints.load_model(str(tmp_path / "missing.pt"))


def test_scorer_adds_pretext_loss_and_passes_every_column_through(tmp_path):
    net, spec = build_rotation_net("test_resnet", image_size=32, seed=2)
    path = str(tmp_path / "pretext.pt")
    checkpoints.save(checkpoints.export_model(net, "test_resnet", spec, {}), path)
    scorer = PretextScorer(path)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    batch = {"uri": np.array(["a", "b", "c"], dtype=object), "image": images, "chunk_id": np.array([0, 0, 1])}
    out = scorer(batch)
    assert set(out) == {"uri", "image", "chunk_id", schema.PRETEXT_LOSS}
    assert out[schema.PRETEXT_LOSS].dtype == np.float32 and out[schema.PRETEXT_LOSS].shape == (3,)
    assert out["image"] is images and list(out["uri"]) == ["a", "b", "c"]
    net.eval()
    pixels = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    np.testing.assert_allclose(out[schema.PRETEXT_LOSS], net.pretext_loss(pixels).numpy(), rtol=1e-5, atol=1e-6)

    # Images at the featurize model's size are resized to the pretext model's first.
    big = np.repeat(np.repeat(images, 5, axis=1), 5, axis=2)  # 160 px
    resized = scorer({"image": big})[schema.PRETEXT_LOSS]
    assert resized.shape == (3,) and np.isfinite(resized).all()
    with pytest.raises(ValueError, match="uint8"):
        scorer({"image": images.astype(np.float32)})
