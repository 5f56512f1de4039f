"""ResNets with torchvision's parameter names.

``resnet18``/``resnet34`` have exactly the state-dict keys and shapes of
``torchvision.models.resnet18/34`` (with ``num_classes`` set, ``fc`` too), so their weights
load there unchanged. ``resnet8/20/32/56`` are the CIFAR ResNets of Relational Reasoning:
3x3 stem of 16 channels, three stages of widths 16/32/64, 1x1-conv + BN shortcuts, 64-d
features. Models follow timm's manners: ``forward_features`` -> feature map,
``forward_head(x, pre_logits)`` -> pooled features or logits, ``num_features``.
"""
from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, blocks: list, widths: list, stem: str = "imagenet", num_classes: int = 0, in_chans: int = 3):
        super().__init__()
        stem_width = widths[0]
        if stem == "imagenet":  # 7x7 stride-2 conv + max-pool, as torchvision
            self.conv1 = nn.Conv2d(in_chans, stem_width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        elif stem == "cifar":  # 3x3 stride-1 conv, no pool: keeps 32 px images large enough
            self.conv1 = nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        in_channels = stem_width
        for stage, (count, width) in enumerate(zip(blocks, widths), 1):
            layers = []
            for i in range(count):
                layers.append(BasicBlock(in_channels, width, stride=2 if i == 0 and stage > 1 else 1))
                in_channels = width
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.num_stages = len(blocks)
        self.num_features = in_channels
        self.fc = nn.Linear(in_channels, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set:
        return set()  # biases and BatchNorm, being 1-D, are left out by the optimiser's own rule

    def constructor_kwargs(self) -> dict:
        """``ResNet(**kwargs)`` rebuilds this model: its state dict then loads strictly. Read from the
        layers, so a classifier set after construction is described as it is."""
        stages = [getattr(self, f"layer{stage}") for stage in range(1, self.num_stages + 1)]
        return {"blocks": [len(stage) for stage in stages], "widths": [stage[0].conv2.out_channels for stage in stages],
                "stem": "cifar" if isinstance(self.maxpool, nn.Identity) else "imagenet",
                "num_classes": self.fc.out_features if isinstance(self.fc, nn.Linear) else 0,
                "in_chans": self.conv1.in_channels}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{stage}")(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))  # global average pool; AdaptiveAvgPool2d's CUDA backward is not deterministic
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cifar_resnet(depth: int, **kwargs) -> ResNet:
    per_stage = (depth - 2) // 6
    return ResNet([per_stage] * 3, [16, 32, 64], stem="cifar", **kwargs)


def resnet8(**kwargs) -> ResNet:
    return _cifar_resnet(8, **kwargs)


def resnet20(**kwargs) -> ResNet:
    return _cifar_resnet(20, **kwargs)


def resnet32(**kwargs) -> ResNet:
    return _cifar_resnet(32, **kwargs)


def resnet56(**kwargs) -> ResNet:
    return _cifar_resnet(56, **kwargs)


def resnet18(cifar_stem: bool = False, **kwargs) -> ResNet:
    return ResNet([2, 2, 2, 2], [64, 128, 256, 512], stem="cifar" if cifar_stem else "imagenet", **kwargs)


def resnet34(cifar_stem: bool = False, **kwargs) -> ResNet:
    return ResNet([3, 4, 6, 3], [64, 128, 256, 512], stem="cifar" if cifar_stem else "imagenet", **kwargs)
