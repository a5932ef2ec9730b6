from __future__ import annotations

import time

import pytest
import torch

from raysel.embed.backbone import BackboneError, input_spec, load_backbone
from raysel.storage import StorageOptions

pytestmark = pytest.mark.torch


def test_random_init_is_an_eval_vit_and_seeded():
    model = load_backbone("test_vit", random_init=True, seed=3)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    again = load_backbone("test_vit", random_init=True, seed=3)
    other = load_backbone("test_vit", random_init=True, seed=4)
    assert torch.equal(model.pos_embed, again.pos_embed)
    assert not torch.equal(model.pos_embed, other.pos_embed)


def test_random_init_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    load_backbone("test_vit", random_init=True)
    assert torch.equal(torch.rand(3), expected)


def test_input_spec_of_test_vit():
    spec = input_spec(load_backbone("test_vit", random_init=True))
    assert spec.image_size == 160
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("nesting", [None, "model", "state_dict"])
def test_weights_from_a_local_file_roundtrip(tmp_path, nesting):
    source = load_backbone("test_vit", random_init=True, seed=1)
    state_dict = source.state_dict()
    path = tmp_path / "weights.pt"
    torch.save(state_dict if nesting is None else {nesting: state_dict, "epoch": torch.tensor(3)}, path)
    loaded = load_backbone("test_vit", weights=str(path))
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state_dict[key]), key


class NotATensor:
    pass


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save({"model": load_backbone("test_vit", random_init=True).state_dict(), "extra": NotATensor()}, path)
    with pytest.raises(BackboneError, match="weights_only=True"):
        load_backbone("test_vit", weights=str(path))


def test_wrong_shapes_and_missing_keys_are_listed(tmp_path):
    state_dict = load_backbone("test_vit", random_init=True).state_dict()
    state_dict["pos_embed"] = torch.zeros(1, 5, 64)
    del state_dict["norm.bias"]
    state_dict["surprise.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(state_dict, path)
    with pytest.raises(BackboneError) as info:
        load_backbone("test_vit", weights=str(path))
    message = str(info.value)
    assert "missing keys: norm.bias" in message
    assert "unexpected keys: surprise.weight" in message
    assert "pos_embed: checkpoint (1, 5, 64) vs model (1, 101, 64)" in message


def test_missing_weights_file(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        load_backbone("test_vit", weights=str(tmp_path / "nope.pt"))


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(BackboneError, match="not a torch checkpoint"):
        load_backbone("test_vit", weights=str(path))


def test_weights_and_random_init_together_are_refused(tmp_path):
    with pytest.raises(BackboneError, match="not both"):
        load_backbone("test_vit", weights=str(tmp_path / "w.pt"), random_init=True)


def test_non_vit_model_is_refused():
    with pytest.raises(BackboneError, match="not a timm VisionTransformer"):
        load_backbone("resnet18", random_init=True)


def test_vit_without_class_token_is_refused():
    with pytest.raises(BackboneError, match="no class token"):
        load_backbone("vit_medium_patch16_gap_256", random_init=True)


def test_unknown_model_name_points_to_list_models():
    with pytest.raises(BackboneError, match="timm.list_models"):
        load_backbone("vit_does_not_exist", random_init=True)


def test_unreachable_hub_fails_fast_with_advice(monkeypatch, tmp_path):
    # No cached weights, and no hub: this machine may have internet or not.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "https://127.0.0.1:9")  # nothing listens on port 9
    started = time.monotonic()
    with pytest.raises(BackboneError, match=r"--weights PATH_OR_S3_URI.*--random-init"):
        load_backbone("test_vit")
    assert time.monotonic() - started < 10


@pytest.mark.s3
def test_weights_from_s3(s3_endpoint, s3_bucket):
    from raysel import storage

    options = StorageOptions(s3_endpoint=s3_endpoint)
    source = load_backbone("test_vit", random_init=True, seed=2)
    import io

    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    uri = f"s3://{s3_bucket}/models/test_vit.pt"
    storage.write_bytes_atomic(uri, buffer.getvalue(), options)
    loaded = load_backbone("test_vit", weights=uri, options=options)
    assert torch.equal(loaded.pos_embed, source.pos_embed)
