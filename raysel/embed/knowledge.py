"""GEAL's per-image features: embedding, patch features, class-token attention, kept patches.

Pure torch (no Ray). One forward pass of a timm ViT gives

- the global embedding (what `forward_head(forward_features(x), pre_logits=True)` returns),
- the patch tokens of the second-to-last block after the final norm (GEAL's
  patch features; class and register tokens dropped),
- the last block's class-token attention to the patches, averaged over heads and
  renormalised over the patches. timm's fused attention never materialises the
  weights, so they are recomputed from the block's own q/k projections, for the
  class-token query only.

`kept_patch_order` then picks, per image, the smallest set of highest-attention
patches holding at least `tau` of the attention.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from timm.models.vision_transformer import VisionTransformer

# Slack for "the kept attention reaches tau": float32 attention renormalised over
# ~200 patches and summed carries rounding of ~1e-7 per term, so a set whose
# attention is exactly tau on paper (e.g. 50 of 100 uniform patches at tau = 0.5)
# may sum to tau - 1e-7. Such a set counts as reaching tau.
KEPT_MASS_TOLERANCE = 1e-6


class TokenOutputs(NamedTuple):
    """Everything GEAL needs from one forward pass of B images with P patches and width D."""

    embedding: torch.Tensor  # [B, D] global embedding (pre-logits)
    patch_features: torch.Tensor  # [B, P, D] second-to-last block, final norm, patch tokens only
    cls_attention: torch.Tensor  # [B, P] float32, last block, averaged over heads, sums to 1 per image


def normalize_images(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """[B, H, W, 3] uint8 RGB images -> [B, 3, H, W] float32, scaled to 0..1 then normalised.

    Works on the images' device: move uint8 to the GPU first, it is 4x smaller.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    pixels = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean_ = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    std_ = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return pixels.sub_(mean_).div_(std_).contiguous()


def extract_tokens(model: VisionTransformer, images: torch.Tensor) -> TokenOutputs:
    """Embedding, patch features and class-token attention of a batch, in one forward pass.

    Args:
        model: a timm VisionTransformer with a class token (see `backbone.check_vit`).
        images: [B, 3, H, W] normalised float images.

    Returns:
        TokenOutputs: embedding [B, D], patch_features [B, P, D] (the model's
        dtype, or the autocast dtype), cls_attention [B, P] float32.
    """
    # The same steps as VisionTransformer.forward_features / forward_intermediates.
    tokens = model.patch_embed(images)
    tokens = model._pos_embed(tokens)
    tokens = model.patch_drop(tokens)
    tokens = model.norm_pre(tokens)
    num_prefix = model.num_prefix_tokens
    feature_block = len(model.blocks) - 2
    patch_features = None
    for index, block in enumerate(model.blocks[:-1]):
        tokens = block(tokens)
        if index == feature_block:
            patch_features = model.norm(tokens)[:, num_prefix:]
    cls_attention = class_token_attention(model.blocks[-1], tokens, num_prefix)
    tokens = model.blocks[-1](tokens)
    embedding = model.forward_head(model.norm(tokens), pre_logits=True)
    return TokenOutputs(embedding=embedding, patch_features=patch_features, cls_attention=cls_attention)


def class_token_attention(block: torch.nn.Module, tokens: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    """The class token's attention to the patches in `block`, averaged over heads, summing to 1.

    Args:
        block: a timm ViT Block (norm1 + Attention with a fused qkv projection).
        tokens: [B, N, D] the block's input; token 0 is the class token, then
            `num_prefix_tokens - 1` other prefix tokens (registers), then patches.
        num_prefix_tokens: class + register tokens before the patches.

    Returns:
        [B, P] float32, P = N - num_prefix_tokens; softmax over all N tokens,
        mean over heads, then renormalised over the P patches.
    """
    attention = block.attn
    batch, num_tokens, _ = tokens.shape
    # Float32 throughout, even under bfloat16 autocast (GEAL on GPU): the norm, the qkv
    # product and the softmax decide which patches pass tau, and bfloat16's 8-bit
    # mantissa would flip near-tied patches. Costs one [B, N, 3D] float32 matmul.
    with torch.autocast(device_type=tokens.device.type, enabled=False):
        normed = block.norm1(tokens.float())
        qkv = torch.nn.functional.linear(
            normed, attention.qkv.weight.float(), None if attention.qkv.bias is None else attention.qkv.bias.float()
        )
        qkv = qkv.reshape(batch, num_tokens, 3, attention.num_heads, attention.head_dim).permute(2, 0, 3, 1, 4)
        query, key = attention.q_norm(qkv[0]), attention.k_norm(qkv[1])  # [B, heads, N, head_dim]
        # Only the class token's query row is needed: [B, heads, 1, N] scores instead of [B, heads, N, N].
        scores = (query[:, :, :1].float() * attention.scale) @ key.float().transpose(-2, -1)
        weights = scores.softmax(dim=-1)[:, :, 0, num_prefix_tokens:].mean(dim=1)
        return weights / weights.sum(dim=-1, keepdim=True)


def kept_patch_order(cls_attention: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches by descending attention, and how many of them GEAL keeps.

    The kept patches of image b are `order[b, :num_kept[b]]`: the smallest set of
    highest-attention patches whose attention sums to at least `tau` (up to
    KEPT_MASS_TOLERANCE). Equal attention goes to the lower patch index first.
    At least one patch is always kept; all of them when the total falls short.

    Args:
        cls_attention: [B, P] attention per patch (each row sums to 1).
        tau: attention mass to keep, in (0, 1].

    Returns:
        order: [B, P] int64 patch indices, descending attention.
        num_kept: [B] int64, in 1..P.
    """
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    if cls_attention.ndim != 2 or cls_attention.shape[1] == 0:
        raise ValueError(f"cls_attention must be [B, P] with P >= 1, got shape {tuple(cls_attention.shape)}")
    # A stable sort keeps equal values in index order.
    sorted_attention, order = torch.sort(cls_attention, dim=1, descending=True, stable=True)
    # A patch is needed while the patches before it hold less than tau. Float64
    # sums so that P float32 terms do not add their own rounding.
    mass_before = torch.cumsum(sorted_attention.double(), dim=1) - sorted_attention.double()
    num_kept = (mass_before < tau - KEPT_MASS_TOLERANCE).sum(dim=1)
    return order, num_kept


def kept_patch_mask(cls_attention: torch.Tensor, tau: float) -> torch.Tensor:
    """[B, P] bool, True for the patches GEAL keeps (see `kept_patch_order`)."""
    order, num_kept = kept_patch_order(cls_attention, tau)
    kept_in_order = torch.arange(order.shape[1], device=order.device)[None, :] < num_kept[:, None]
    return torch.zeros_like(kept_in_order).scatter_(1, order, kept_in_order)


def pack_kept_patches(
    patch_features: torch.Tensor, cls_attention: torch.Tensor, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's kept patch features moved to the front, by descending attention, zeros after.

    Args:
        patch_features: [B, P, D] patch features.
        cls_attention: [B, P] attention per patch.
        tau: attention mass to keep.

    Returns:
        kept_features: [B, P, D] (dtype of patch_features); rows num_kept[b]: are zero.
        num_kept: [B] int64.
    """
    order, num_kept = kept_patch_order(cls_attention, tau)
    gathered = torch.gather(patch_features, 1, order[:, :, None].expand(-1, -1, patch_features.shape[2]))
    kept_in_order = torch.arange(order.shape[1], device=order.device)[None, :] < num_kept[:, None]
    return gathered.masked_fill(~kept_in_order[:, :, None], 0), num_kept
