"""A ViT learns the rotation task with the default recipe (AdamW + warmup + cosine), and chance is called out.

With PT4AL's SGD lr 0.1 (made for ResNet-18) a ViT ends at ln 4 = 1.3863: it outputs a constant.
"""
from __future__ import annotations

import math

import pytest

from raysel.config import PretextConfig
from raysel.pretext import checkpoints
from raysel.pretext.training import CHANCE_LOSS, adamw_step_lr, chance_warning, optimizer_name, train_pretext
from shape_pool import write_shape_pool


@pytest.mark.pure
def test_chance_warning_is_given_within_two_percent_of_ln4_and_above():
    assert chance_warning(1.3863) and chance_warning(1.36) and chance_warning(1.56)
    assert chance_warning(1.35) is None and chance_warning(0.7) is None and chance_warning(None) is None
    assert CHANCE_LOSS == pytest.approx(math.log(4))


@pytest.mark.torch
def test_auto_recipe_is_adamw_for_transformers_and_sgd_for_cnns():
    assert optimizer_name(PretextConfig(model="test_vit")) == "adamw"
    assert optimizer_name(PretextConfig(model="resnet18")) == "sgd"
    assert optimizer_name(PretextConfig(model="test_vit", optimizer="sgd")) == "sgd"
    config = PretextConfig(model="test_vit", adamw_lr=1e-3, warmup=0.1)
    lrs = [adamw_step_lr(config, step, 100) for step in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3) and max(lrs) == pytest.approx(1e-3)
    assert all(b <= a for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 1e-5


@pytest.mark.ray
@pytest.mark.torch
def test_small_vit_learns_rotation_with_the_default_recipe(ray_session, tmp_path):
    pool = tmp_path / "pool"
    write_shape_pool(pool, count=48)
    config = PretextConfig(source=str(pool), out=str(tmp_path / "vit.pt"), model="test_vit", image_size=64,
                           epochs=10, batch_size=8, num_workers=1, shuffle_buffer=48)
    summary = train_pretext(config)
    assert summary.final_loss < 0.85 * CHANCE_LOSS, summary.history  # clearly below ln 4 = 1.386
    assert summary.warning is None and "WARNING" not in summary.lines()
    meta = checkpoints.load(config.out)["pretext"]
    assert meta["optimizer"] == "adamw" and meta["at_chance"] is False and meta["warning"] is None


@pytest.mark.pure
def test_model_left_at_chance_is_flagged_in_the_summary():
    from raysel.pretext.training import PretextSummary

    lines = PretextSummary(out="m.pt", images=8, epochs=1, resumed_from_epoch=0, history=[1.3862]).lines()
    assert "WARNING" in lines and "chance level" in lines
    assert "WARNING" not in PretextSummary(out="m.pt", images=8, epochs=1, resumed_from_epoch=0, history=[0.9]).lines()
