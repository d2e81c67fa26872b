"""The generalist CNN for CIFAR-100 and the specialists made from it.

A VGG-style net: conv(w) @32x32, pool, conv(2w) @16x16, pool, conv(4w), conv(4w) @8x8, pool,
global average pool, dropout, linear. Each conv is 3x3 + batch norm + ReLU. ``width`` scales it:
``w=16`` (about 5 M multiply-adds per image) trains an epoch of 45k images in a minute or two on
a 2-core CPU; ``w=64``-``128`` is the GPU setting.

Specialists (:func:`make_specialist`) copy the generalist's ``features`` and get a new ``head``:

- ``dustbin=True``: ``|S|+1`` outputs, the rows of the special classes ``S`` copied from the
  generalist's head and a dustbin row whose logit starts near the log-sum-exp of the
  generalist's non-special logits (mean weight, bias + log of their number);
- ``dustbin=False``: the full softmax over all classes (a copy of the generalist's head).
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn as nn


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CifarCNN(nn.Module):
    """``features`` (conv body -> ``[B, 4*width]``) followed by ``head`` (linear -> logits)."""

    def __init__(self, num_classes: int = 100, width: int = 16, dropout: float = 0.2):
        super().__init__()
        w = width
        self.width = width
        self.features = nn.Sequential(
            conv_block(3, w),
            nn.MaxPool2d(2),
            conv_block(w, 2 * w),
            nn.MaxPool2d(2),
            conv_block(2 * w, 4 * w),
            conv_block(4 * w, 4 * w),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def make_specialist(generalist: CifarCNN, classes: Sequence[int], dustbin: bool = True) -> CifarCNN:
    """A specialist for the special classes ``classes``, initialised from ``generalist``."""
    spec = copy.deepcopy(generalist)
    if not dustbin:
        return spec
    classes = list(classes)
    old = generalist.head
    n = old.out_features
    rest = [c for c in range(n) if c not in set(classes)]
    if not classes or not rest:
        raise ValueError(f"a dustbin specialist needs 1..{n - 1} special classes, got {len(classes)}")
    head = nn.Linear(old.in_features, len(classes) + 1).to(old.weight.device)
    head.weight[: len(classes)] = old.weight[classes]
    head.bias[: len(classes)] = old.bias[classes]
    head.weight[-1] = old.weight[rest].mean(0)
    head.bias[-1] = old.bias[rest].mean() + math.log(len(rest))
    spec.head = head
    return spec
