from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.models.vision_transformer import VisionTransformer

from raysel.embed.backbone import load_backbone
from raysel.embed.knowledge import (
    KEPT_MASS_TOLERANCE,
    extract_tokens,
    kept_patch_mask,
    kept_patch_order,
    normalize_images,
    pack_kept_patches,
)

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def test_vit():
    return load_backbone("test_vit", random_init=True, seed=0)


@pytest.fixture(scope="module")
def vit_small():
    return load_backbone("vit_small_patch16_224", random_init=True, seed=0)


def vit_with_registers_and_qk_norm():
    """A small ViT with register tokens and q/k norms: paths test_vit does not take."""
    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=64, patch_size=16, embed_dim=64, depth=3, num_heads=4, qk_norm=True, reg_tokens=2, num_classes=0
    )
    with torch.no_grad():  # non-trivial q/k norm affine parameters
        for norm in (model.blocks[-1].attn.q_norm, model.blocks[-1].attn.k_norm):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_()
    return model.eval()


def reference_cls_attention(model: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Class-token attention read from timm's own unfused attention, through a hook on attn_drop."""
    attention = model.blocks[-1].attn
    captured = []
    handle = attention.attn_drop.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    attention.fused_attn = False
    try:
        model.forward_features(images)
    finally:
        attention.fused_attn = True
        handle.remove()
    weights = captured[0][:, :, 0, model.num_prefix_tokens :].mean(dim=1)
    return weights / weights.sum(dim=-1, keepdim=True)


@pytest.mark.parametrize("model_fixture", ["test_vit", "vit_small", "registers"])
@torch.inference_mode()
def test_extract_tokens_matches_timm(model_fixture, request):
    model = vit_with_registers_and_qk_norm() if model_fixture == "registers" else request.getfixturevalue(model_fixture)
    size = model.patch_embed.img_size[0]
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    tokens = extract_tokens(model, images)

    embedding = model.forward_head(model.forward_features(images), pre_logits=True)
    (patch_features,) = model.forward_intermediates(
        images, indices=[len(model.blocks) - 2], norm=True, output_fmt="NLC", intermediates_only=True
    )
    num_patches = model.patch_embed.num_patches
    assert tokens.embedding.shape == (2, model.embed_dim)
    assert tokens.patch_features.shape == (2, num_patches, model.embed_dim)
    assert tokens.cls_attention.shape == (2, num_patches) and tokens.cls_attention.dtype == torch.float32
    torch.testing.assert_close(tokens.embedding, embedding, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tokens.patch_features, patch_features, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tokens.cls_attention, reference_cls_attention(model, images), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(tokens.cls_attention.sum(1), torch.ones(2))


@torch.inference_mode()
def test_equal_keys_give_uniform_attention_and_half_the_patches(test_vit):
    model = load_backbone("test_vit", random_init=True, seed=0)
    model.blocks[-1].attn.qkv.weight.zero_()
    model.blocks[-1].attn.qkv.bias.zero_()
    tokens = extract_tokens(model, torch.randn(3, 3, 160, 160))
    num_patches = 100
    torch.testing.assert_close(tokens.cls_attention, torch.full((3, num_patches), 1 / num_patches))
    kept = kept_patch_mask(tokens.cls_attention, tau=0.5)
    assert kept.sum(1).tolist() == [math.ceil(num_patches / 2)] * 3
    assert kept[:, :50].all() and not kept[:, 50:].any()  # equal attention: lower patch index first
    assert kept_patch_mask(tokens.cls_attention, tau=0.3).sum(1).tolist() == [30] * 3
    assert kept_patch_mask(tokens.cls_attention, tau=1.0).all()


def alternating_patterns(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two orthogonal +-1 patterns with mean 0 and variance 1: LayerNorm leaves c*s + d*t alone when c^2 + d^2 = 1."""
    index = torch.arange(dim)
    s = torch.where(index % 2 == 0, 1.0, -1.0)
    t = torch.where((index // 2) % 2 == 0, 1.0, -1.0)
    return s, t


@torch.inference_mode()
def test_attention_concentrated_on_known_patches():
    """Hand-set weights so the class token's attention score to patch j is 10 * cos(theta_j)."""
    model = load_backbone("test_vit", random_init=True, seed=0)
    dim, num_patches = model.embed_dim, model.patch_embed.num_patches
    s, t = alternating_patterns(dim)
    # Every block but the last becomes the identity, and the patch embedding zero:
    # the last block's input is then exactly the position embedding.
    for block in model.blocks[:-1]:
        for layer in (block.attn.proj, block.mlp.fc2):
            layer.weight.zero_()
            layer.bias.zero_()
    model.patch_embed.proj.weight.zero_()
    model.patch_embed.proj.bias.zero_()
    model.cls_token.zero_()
    cosines = torch.full((num_patches,), -1.0)
    cosines[[42, 7, 93]] = torch.tensor([1.0, 0.8, 0.6])  # strongest first: 42, then 7, then 93
    sines = (1 - cosines.square()).clamp_min(0).sqrt()
    model.pos_embed[0, 0] = s  # class token: cosine 1
    model.pos_embed[0, 1:] = cosines[:, None] * s + sines[:, None] * t

    last = model.blocks[-1]
    last.norm1.weight.fill_(1.0)
    last.norm1.bias.zero_()
    attention = last.attn
    head_unit = torch.full((attention.head_dim,), attention.head_dim**-0.5).repeat(attention.num_heads)  # unit per head
    qkv_weight, qkv_bias = attention.qkv.weight, attention.qkv.bias
    qkv_weight[:dim] = 0  # every query is the bias: the same direction in every head
    qkv_bias[:dim] = (10 / attention.scale) * head_unit
    qkv_weight[dim : 2 * dim] = torch.outer(head_unit, s) / dim  # key = head_unit * (s . token) / dim = head_unit * cos
    qkv_bias[dim : 2 * dim] = 0

    tokens = extract_tokens(model, torch.randn(2, 3, 160, 160))
    scores = torch.cat([torch.tensor([10.0]), 10 * cosines])  # class token first
    expected = scores.softmax(0)[1:]
    expected = expected / expected.sum()
    torch.testing.assert_close(tokens.cls_attention, expected.expand(2, -1), atol=1e-5, rtol=1e-4)

    def kept_set(tau: float) -> set[int]:
        return set(torch.nonzero(kept_patch_mask(tokens.cls_attention, tau)[0]).flatten().tolist())

    top, second = float(expected[42]), float(expected[7])
    assert top > 0.8 and top + second < 0.99
    assert kept_set(0.5) == {42}
    assert kept_set(top + 0.01) == {42, 7}
    assert kept_set(0.99) == {42, 7, 93}
    order, num_kept = kept_patch_order(tokens.cls_attention, 0.99)
    assert order[0, :3].tolist() == [42, 7, 93] and num_kept.tolist() == [3, 3]


def mask_of(values: list[float], tau: float) -> list[bool]:
    return kept_patch_mask(torch.tensor([values], dtype=torch.float32), tau)[0].tolist()


def test_kept_patch_mask_on_hand_given_vectors():
    assert mask_of([0.5, 0.3, 0.2], 0.5) == [True, False, False]  # one patch holds exactly tau
    assert mask_of([0.2, 0.3, 0.5], 0.6) == [False, True, True]
    assert mask_of([0.1, 0.2, 0.7], 0.9) == [False, True, True]  # 0.7f + 0.2f = 0.89999999 counts as 0.9
    assert mask_of([0.1, 0.2, 0.7], 0.91) == [True, True, True]
    assert mask_of([0.5, 0.5, 0.0], 1.0) == [True, True, False]  # tau = 1 needs no zero-attention patch
    assert mask_of([0.2, 0.2, 0.2, 0.2, 0.2], 1.0) == [True] * 5
    assert mask_of([0.25] * 4, 0.5) == [True, True, False, False]  # ties: lower index first
    assert mask_of([0.1, 0.4, 0.4, 0.1], 0.5) == [False, True, True, False]
    assert mask_of([0.1, 0.4, 0.4, 0.1], 0.85) == [True, True, True, False]
    assert mask_of([1.0], 0.01) == [True]
    for num_patches in (10, 100, 196):  # uniform attention: exactly tau at P * tau patches
        uniform = torch.full((1, num_patches), 1 / num_patches)
        assert int(kept_patch_mask(uniform, 0.5).sum()) == math.ceil(num_patches / 2)
        assert int(kept_patch_mask(uniform, 0.3).sum()) == math.ceil(round(num_patches * 0.3, 6))


def test_kept_patch_mask_rejects_bad_tau():
    for tau in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="tau"):
            kept_patch_mask(torch.ones(1, 4) / 4, tau)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=40).filter(lambda v: sum(v) > 0),
    tau=st.floats(min_value=0.01, max_value=1.0),
)
def test_kept_patch_mask_is_the_smallest_top_set(raw, tau):
    # Small integers make ties common; float32 like the model's attention.
    attention = torch.tensor(raw, dtype=torch.float32)
    attention = attention / attention.sum()
    kept = kept_patch_mask(attention[None], tau)[0]
    values = attention.double().numpy()
    kept_np = kept.numpy()
    assert kept_np.any()
    kept_mass = values[kept_np].sum()
    slack = 1e-9  # summation order differs from the kernel's
    if not kept_np.all():
        assert kept_mass >= tau - KEPT_MASS_TOLERANCE - slack
    assert kept_mass - values[kept_np].min() < tau - KEPT_MASS_TOLERANCE + slack  # none to spare
    if not kept_np.all():
        # The highest attention is kept; at the boundary value, lower indices first.
        lowest_kept, highest_dropped = values[kept_np].min(), values[~kept_np].max()
        assert lowest_kept >= highest_dropped
        if lowest_kept == highest_dropped:
            boundary = np.flatnonzero(values == lowest_kept)
            kept_at_boundary = kept_np[boundary]
            assert (np.sort(kept_at_boundary)[::-1] == kept_at_boundary).all()


def test_pack_kept_patches_orders_by_attention_and_zero_pads():
    attention = torch.tensor([[0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])
    features = torch.arange(1.0, 7.0).reshape(1, 3, 2).expand(2, -1, -1).clone()  # patch j = [2j+1, 2j+2]
    packed, num_kept = pack_kept_patches(features, attention, tau=0.8)
    assert num_kept.tolist() == [2, 3]
    assert packed[0].tolist() == [[3.0, 4.0], [5.0, 6.0], [0.0, 0.0]]
    assert packed[1].tolist() == [[5.0, 6.0], [1.0, 2.0], [3.0, 4.0]]
    assert packed.dtype == features.dtype


def test_normalize_images():
    images = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    normalized = normalize_images(images, mean, std)
    assert normalized.shape == (2, 3, 8, 8) and normalized.dtype == torch.float32
    pixels = images.permute(0, 3, 1, 2).float() / 255
    expected = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(normalized, expected)
    with pytest.raises(ValueError, match="uint8"):
        normalize_images(images.float(), mean, std)


def test_test_vit_is_what_the_notes_say():
    model = timm.create_model("test_vit", pretrained=False)
    assert len(model.blocks) == 6 and model.embed_dim == 64 and model.num_prefix_tokens == 1
