"""`cifar_resnet18` against PT4AL's released ResNet-18 (johnsk95/PT4AL models/resnet.py lines 14-108, re-typed)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from raysel.pretext.rotation import build_rotation_net, default_image_size

pytestmark = pytest.mark.torch


class ReleasedBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ReleasedResNet18(nn.Module):
    def __init__(self, num_classes=4):  # rotation.py line 57: net.linear = nn.Linear(512, 4)
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, 2, 1)
        self.layer2 = self._make_layer(128, 2, 2)
        self.layer3 = self._make_layer(256, 2, 2)
        self.layer4 = self._make_layer(512, 2, 2)
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(self, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(ReleasedBasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


def released_name(ours: str) -> str:
    """Our parameter name -> the released one (timm: downsample / fc, released: shortcut / linear)."""
    name = ours.replace("backbone.", "").replace("downsample", "shortcut")
    return name.replace("head.", "linear.")


def test_layer_shapes_and_outputs_match_the_released_network():
    net, spec = build_rotation_net("cifar_resnet18", seed=0)
    assert spec.image_size == 32 == default_image_size("cifar_resnet18")
    released = ReleasedResNet18()
    ours = {released_name(k): v for k, v in net.state_dict().items()}
    theirs = released.state_dict()
    assert sorted(ours) == sorted(theirs)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    conv1 = net.backbone.conv1
    assert (conv1.kernel_size, conv1.stride, conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert isinstance(net.backbone.maxpool, nn.Identity)

    # The same weights give the same rotation logits, and the same intermediate shapes.
    released.load_state_dict(ours)
    net.eval(), released.eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(net(images), released(images), atol=1e-5, rtol=1e-5)
        stem = net.backbone.act1(net.backbone.bn1(net.backbone.conv1(images)))
        assert stem.shape == (3, 64, 32, 32)  # stride-1 stem, no max-pool: CIFAR maps stay 32x32
        assert net.backbone.forward_features(images).shape == (3, 512, 4, 4)
