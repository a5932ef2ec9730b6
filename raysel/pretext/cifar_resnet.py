"""`cifar_resnet18`: the CIFAR ResNet-18 of PT4AL's released rotation net, registered as a timm model.

johnsk95/PT4AL `models/resnet.py` (the kuangliu/pytorch-cifar ResNet) differs from
timm's ImageNet `resnet18` in the stem only: a 3x3 stride-1 convolution (64
channels, no bias) + BN + ReLU and no max-pool, so a 32 px image keeps 32x32
feature maps in layer1 and 4x4 in layer4. The four stages (BasicBlock x [2, 2,
2, 2], 64/128/256/512 channels, strides 1/2/2/2, 1x1 conv + BN shortcuts) are
timm's `ResNet` as they are. The released net pools with `F.avg_pool2d(out, 4)`,
which at 32 px is the global average pool timm uses (at other sizes timm's stays
global). Registered with timm on import, so `timm.create_model("cifar_resnet18",
num_classes=0)` works wherever raysel builds pretext models (Ray workers too);
its data config is 32 px with the released code's CIFAR mean and std.
"""
from __future__ import annotations

from timm.models import register_model
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

MODEL_NAME = "cifar_resnet18"
# rotation.py / make_batches.py: transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
PRETRAINED_CFG = {
    "input_size": (3, 32, 32),
    "mean": CIFAR_MEAN,
    "std": CIFAR_STD,
    "num_classes": 10,
    "interpolation": "bicubic",
    "crop_pct": 1.0,
    "first_conv": "conv1",
    "classifier": "fc",
}


def _build(**kwargs) -> ResNet:
    in_chans = kwargs.get("in_chans", 3)
    model = ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)
    model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.pretrained_cfg = dict(PRETRAINED_CFG)
    model.default_cfg = model.pretrained_cfg
    return model


if MODEL_NAME not in __import__("timm").list_models(MODEL_NAME):

    @register_model
    def cifar_resnet18(pretrained: bool = False, **kwargs) -> ResNet:
        """PT4AL's CIFAR ResNet-18 (3x3 stride-1 stem, no max-pool); no pretrained weights exist."""
        if pretrained:
            raise ValueError("cifar_resnet18 has no pretrained weights (PT4AL trains it from scratch)")
        for factory_only in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm.create_model's own
            kwargs.pop(factory_only, None)
        return _build(**kwargs)
