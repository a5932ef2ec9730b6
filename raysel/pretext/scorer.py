"""Ray Data stage: decoded images -> PT4AL pretext loss per image.

`map_batches(PretextScorer, fn_constructor_kwargs={"model_uri": ...}, compute=ActorPoolStrategy(...))`
before the Featurizer (which drops `image`). Each actor loads the trained
rotation model once; GPU when the actor has one, else CPU.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from raysel import schema
from raysel.embed.knowledge import normalize_images
from raysel.pretext import checkpoints
from raysel.storage import StorageOptions

IMAGE = "image"  # [B, H, W, 3] uint8, from raysel.images.DecodeBatch
# [B, S, S, 3] uint8 at the pretext model's own size, decoded from the same bytes as `image`
# (DecodeBatch(extra_sizes={PRETEXT_IMAGE: S})): exactly what pretext training decoded. Dropped here.
PRETEXT_IMAGE = "pretext_image"


class PretextScorer:
    """Callable class for `Dataset.map_batches`.

    Input columns: `pretext_image` [B, S, S, 3] uint8 at the model's training size
    (what `featurize --pretext` decodes), else `image` [B, H, W, 3] uint8, and any
    others, which pass through unchanged (`image` included, `pretext_image`
    dropped). Output adds `pretext_loss` [B] float32: each image's mean
    cross-entropy over its 4 rotations. An `image` whose size is not the model's
    training size is resized (bicubic, antialiased) first.
    """

    def __init__(self, model_uri: str, storage_options: StorageOptions | None = None):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        net, self.spec, self.meta = checkpoints.load_model(model_uri, storage_options)
        self.net = net.to(self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = np.asarray(batch[PRETEXT_IMAGE] if PRETEXT_IMAGE in batch else batch[IMAGE])
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"'{IMAGE}' must be [B, H, W, 3] uint8, got {images.shape} {images.dtype}")
        out = {key: value for key, value in batch.items() if key != PRETEXT_IMAGE}
        out[schema.PRETEXT_LOSS] = self.losses(images)
        return out

    def losses(self, images: np.ndarray) -> np.ndarray:
        """[B, H, W, 3] uint8 -> [B] float32."""
        if len(images) == 0:
            return np.zeros(0, dtype=np.float32)
        with torch.inference_mode():
            pixels = torch.from_numpy(np.require(images, requirements=["C", "W"])).to(self.device)  # Ray hands read-only arrays
            size = self.spec.image_size
            if pixels.shape[1:3] != (size, size):
                resized = F.interpolate(
                    pixels.permute(0, 3, 1, 2).float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False
                )
                pixels = resized.clamp_(0, 255).round_().to(torch.uint8).permute(0, 2, 3, 1)
            normalized = normalize_images(pixels, self.spec.mean, self.spec.std)
            return self.net.pretext_loss(normalized).float().cpu().numpy()
