"""GCNN of Iqbal et al. (tqbl/dcase2018_task2 ``convnet.gcnn``, ``gated_conv.py``), ORIGINALS.md §1.4.

VGG13 with gated convolutions: five blocks of 2 x [GatedConv(n) 3x3 'same' → BatchNorm] →
MaxPooling2D(2, 2) 'valid', n = 64-128-256-512-512, global average pooling, ``Dense(41)``.
``GatedConv(n)`` is a Conv2D with ``2n`` filters whose output is ``value * sigmoid(gate)`` with
value = the first ``n`` channels and gate = the last ``n`` (no ReLU anywhere). Input
``[N, 128, 64, 1]`` (time, mel, channel), output pre-softmax logits.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxadv import config as C
from jaxadv.models._layers import Dense, GatedConvBlock, scaled

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class GCNNConfig:
    """GCNN hyper-parameters; ``width=1.0`` is the paper's model (18,840,489 values)."""

    name: ClassVar[str] = "gcnn"
    family: ClassVar[str] = "iqbal"
    width: float = 1.0  # multiplies every filter count
    num_classes: int = C.NUM_CLASSES
    filters: tuple[int, ...] = (64, 128, 256, 512, 512)  # gated outputs per block, at width 1

    def module(self) -> GCNN:
        return GCNN(self)


class GCNN(nn.Module):
    """``[N, 128, 64, 1]`` chunks → logits ``[N, num_classes]``."""

    cfg: GCNNConfig

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        for i, f in enumerate(self.cfg.filters):
            x = GatedConvBlock(scaled(f, self.cfg.width), name=f"block_{i}")(x, train)
        x = jnp.mean(x, axis=(1, 2))  # GlobalAveragePooling2D
        return Dense(self.cfg.num_classes, name="dense")(x)
