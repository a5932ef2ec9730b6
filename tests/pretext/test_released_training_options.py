"""`pretext train` with the released PT4AL options: cifar_resnet18 at 32 px, full reshuffle, 4 separate forwards, best epoch."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from raysel.config import PretextConfig
from raysel.pretext import checkpoints
from raysel.pretext.training import _separate_forwards_loss, train_pretext
from shape_pool import write_shape_pool

pytestmark = [pytest.mark.ray, pytest.mark.torch]


def test_separate_forwards_see_one_view_of_each_image():
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(len(x), 4)

    images = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 1, 2, 2).clone()
    from raysel.pretext.rotation import rotated_views

    views, labels = rotated_views(images + torch.tensor([[0.0, 10.0], [20.0, 30.0]]))
    loss = _separate_forwards_loss(Recorder(), views, labels, 3, [0, 0, 0, 0])
    assert torch.isclose(loss, torch.log(torch.tensor(4.0)))
    assert len(seen) == 4 and all(len(batch) == 3 for batch in seen)
    for i in range(3):  # every image appears once per forward, and in all four rotations over the four forwards
        rotations = set()
        for batch in seen:
            mine = [view for view in batch if int(view.min()) == i]
            assert len(mine) == 1
            rotations.add(tuple(mine[0].flatten().tolist()))
        assert len(rotations) == 4


def test_released_options_train_and_keep_the_best_epoch(ray_session, tmp_path):
    folder = tmp_path / "pool"
    write_shape_pool(folder, count=24)
    config = PretextConfig(
        source=str(folder), out=str(tmp_path / "rot.pt"), model="cifar_resnet18", epochs=3, batch_size=8,
        shuffle="full", rotation_forwards="separate", keep="best", keep_checkpoints=3,
    )
    summary = train_pretext(config)
    assert len(summary.history) == 3 and all(np.isfinite(summary.history))
    net, spec, meta = checkpoints.load_model(config.out)
    assert spec.image_size == 32 and meta["model_name"] == "cifar_resnet18"  # native 32 px: no upsampling
    assert meta["identity"]["shuffle"] == "full" and meta["identity"]["keep"] == "best"
    best_epoch = meta["best_epoch"]
    epoch_file = checkpoints.load(os.path.join(config.checkpoints(), checkpoints.checkpoint_name(best_epoch)))
    for key, value in epoch_file["backbone"].items():  # the model file holds the best epoch's weights
        assert torch.equal(net.backbone.state_dict()[key], value), key
    accuracies = [checkpoints.load(os.path.join(config.checkpoints(), checkpoints.checkpoint_name(e)))["best"]["accuracy"] for e in (1, 2, 3)]
    assert meta["best_rotation_accuracy"] == max(accuracies) and 0.0 <= max(accuracies) <= 1.0


@pytest.mark.pure
def test_small_images_keep_their_native_size(tmp_path):
    from PIL import Image

    from raysel.pretext.training import native_image_size
    from raysel.storage import StorageOptions

    small = []
    for i, side in enumerate((32, 32, 30)):
        path = tmp_path / f"small-{i}.png"
        Image.new("RGB", (side, side)).save(path)
        small.append(str(path))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert native_image_size([*small, str(tmp_path / "broken.png")], StorageOptions(), 224) == 32  # no upsampling
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(big)
    assert native_image_size([*small, str(big)], StorageOptions(), 224) == 224  # one large image: the model's size
    assert native_image_size([], StorageOptions(), 224) == 224
