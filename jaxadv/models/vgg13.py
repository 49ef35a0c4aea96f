"""VGG13 of Iqbal et al. (tqbl/dcase2018_task2 ``convnet.vgg13``), ORIGINALS.md §1.1-1.2.

Input: standardised log-mel chunks ``[N, 128, 64, 1]`` (time on axis 1, mel on axis 2,
channels-last, as Keras). Five blocks of 2 x [Conv2D 3x3 'same' → ReLU → BatchNorm (eps 1e-3)] →
MaxPooling2D(2, 2) 'valid' with 64-128-256-512-512 filters (128x64 → 4x2), global average pooling,
``Dense(41)``. The output is the pre-softmax logits (Keras' ``dense_1/BiasAdd:0``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxadv import config as C
from jaxadv.models._layers import ConvBlock, Dense, scaled

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class VGG13Config:
    """VGG13 hyper-parameters; ``width=1.0`` is the paper's model (9,436,649 values)."""

    name: ClassVar[str] = "vgg13"
    family: ClassVar[str] = "iqbal"
    width: float = 1.0  # multiplies every filter count
    num_classes: int = C.NUM_CLASSES
    filters: tuple[int, ...] = (64, 128, 256, 512, 512)  # per block, at width 1

    def module(self) -> VGG13:
        return VGG13(self)


class VGG13(nn.Module):
    """``[N, 128, 64, 1]`` chunks → logits ``[N, num_classes]``."""

    cfg: VGG13Config

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        for i, f in enumerate(self.cfg.filters):
            x = ConvBlock(scaled(f, self.cfg.width), name=f"block_{i}")(x, train)
        x = jnp.mean(x, axis=(1, 2))  # GlobalAveragePooling2D
        return Dense(self.cfg.num_classes, name="dense")(x)
