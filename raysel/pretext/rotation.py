"""PT4AL's pretext task: predict which of 4 rotations (0, 90, 180, 270 degrees) an image shows.

Pure torch (no Ray). The model is any timm backbone, built without its
classifier (`num_classes=0`, so it returns pooled features), followed by a
4-way linear rotation head. An image's pretext loss is the mean cross-entropy
over its 4 rotated views, the image itself unaugmented (PT4AL, make_batches.py).
"""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from raysel.embed.backbone import InputSpec, input_spec
from raysel.pretext import cifar_resnet  # noqa: F401  registers `cifar_resnet18` with timm

ROTATIONS = 4  # 0, 90, 180, 270 degrees; the label of a view is its number of quarter turns


class PretextError(ValueError):
    """A pretext model, checkpoint or run that cannot be used, with the reason."""


def rotated_views(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, C, H, W] square images -> views [4B, C, H, W] and labels [4B] int64.

    View-major: rows 0..B-1 are the images as they are (label 0), rows B..2B-1
    turned by 90 degrees (label 1), and so on.
    """
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be square [B, C, H, W], got shape {tuple(images.shape)}")
    views = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(ROTATIONS)])
    labels = torch.arange(ROTATIONS, device=images.device).repeat_interleave(images.shape[0])
    return views, labels


def per_image_loss(logits: torch.Tensor, labels: torch.Tensor, batch: int) -> torch.Tensor:
    """Rotation logits [4B, 4] of view-major views -> [B] float32, each image's mean cross-entropy over its views."""
    losses = F.cross_entropy(logits.float(), labels, reduction="none")
    return losses.view(ROTATIONS, batch).mean(dim=0)


class RotationNet(nn.Module):
    """A timm backbone (no classifier) plus a 4-way rotation head.

    `backbone(x)` is [B, F] pooled features; `head` is `nn.Linear(F, 4)`.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, ROTATIONS)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    @torch.no_grad()
    def pretext_loss(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images [B, 3, S, S] -> pretext loss [B] float32 (call in eval mode)."""
        views, labels = rotated_views(images)
        return per_image_loss(self(views), labels, images.shape[0])


def create_backbone(model_name: str, image_size: int | None = None, pretrained: bool = False) -> nn.Module:
    """A timm model without classifier, at `image_size` when it differs from the model's own.

    CNNs take any input size as they are; models with a fixed grid (ViTs) are
    built for `image_size` (a ViT trained at another size than its default no
    longer loads as `featurize --weights` of that model name).
    """
    if not timm.is_model(model_name):
        raise PretextError(f"unknown timm model {model_name!r}; see timm.list_models()")
    try:
        kwargs = {"img_size": image_size} if image_size is not None and image_size != default_image_size(model_name) else {}
        try:
            return timm.create_model(model_name, pretrained=pretrained, num_classes=0, **kwargs)
        except TypeError as exc:
            if kwargs and "img_size" in str(exc):  # a CNN: it has no fixed input size
                return timm.create_model(model_name, pretrained=pretrained, num_classes=0)
            raise
    except PretextError:
        raise
    except Exception as exc:  # hub errors come in many types (HTTP, offline mode, missing file)
        if pretrained:
            raise PretextError(
                f"could not get the pretrained weights of {model_name!r} from the timm / Hugging Face hub: "
                f"{type(exc).__name__}: {exc}. Drop --pretrained to train from scratch (as PT4AL does)."
            ) from exc
        raise


def default_image_size(model_name: str) -> int:
    with torch.device("meta"):
        return input_spec(timm.create_model(model_name, pretrained=False)).image_size


def feature_dim(backbone: nn.Module) -> int:
    """Width of what a headless timm model returns (its pre-logits features)."""
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


def build_rotation_net(
    model_name: str, image_size: int | None = None, pretrained: bool = False, seed: int = 0
) -> tuple[RotationNet, InputSpec]:
    """A RotationNet, seeded so every worker builds the same network, and the input it expects.

    Returns:
        (net, spec): spec.image_size is `image_size` or the model's default; mean and
        std are the model's normalisation (timm's data config).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = create_backbone(model_name, image_size, pretrained)
        net = RotationNet(backbone, feature_dim(backbone))
    default = input_spec(backbone)
    spec = InputSpec(image_size=image_size or default.image_size, mean=default.mean, std=default.std)
    return net, spec
