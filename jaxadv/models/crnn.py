"""CRNN of Iqbal et al. (tqbl/dcase2018_task2 ``convnet.crnn``), ORIGINALS.md §1.3.

VGG13's five conv blocks (128x64 → 4x2x512) → mean over the mel axis (Keras
``Lambda(lambda x: K.mean(x, axis=2))`` → 4 steps x 512) → ``Bidirectional(GRU(512,
activation='relu', return_sequences=True))`` with Keras 2.2.4's GRU (hard_sigmoid gates,
reset_after=False; see :class:`jaxadv.models._layers.KerasGRU`), outputs concatenated
``[forward | backward]`` → GlobalAveragePooling1D over the 4 steps → ``Dense(41)``.
Input ``[N, 128, 64, 1]`` (time, mel, channel), output pre-softmax logits.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxadv import config as C
from jaxadv.models._layers import BiGRU, ConvBlock, Dense, scaled

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class CRNNConfig:
    """CRNN hyper-parameters; ``width=1.0`` is the paper's model (12,606,441 values)."""

    name: ClassVar[str] = "crnn"
    family: ClassVar[str] = "iqbal"
    width: float = 1.0  # multiplies every filter count and the GRU units
    num_classes: int = C.NUM_CLASSES
    filters: tuple[int, ...] = (64, 128, 256, 512, 512)  # per conv block, at width 1
    gru_units: int = 512  # per direction, at width 1

    def module(self) -> CRNN:
        return CRNN(self)


class CRNN(nn.Module):
    """``[N, 128, 64, 1]`` chunks → logits ``[N, num_classes]``."""

    cfg: CRNNConfig

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        for i, f in enumerate(self.cfg.filters):
            x = ConvBlock(scaled(f, self.cfg.width), name=f"block_{i}")(x, train)
        x = jnp.mean(x, axis=2)  # the Lambda: mean over mel → [N, steps, channels]
        x = BiGRU(scaled(self.cfg.gru_units, self.cfg.width), name="bigru")(x)
        x = jnp.mean(x, axis=1)  # GlobalAveragePooling1D
        return Dense(self.cfg.num_classes, name="dense")(x)
