"""dense-wav of Cochlear.ai: a **reconstruction**, ORIGINALS.md §1.6.

The raw-waveform model the paper attacks exists only inside Cochlear.ai's released .h5
(``model_config``); no builder for it is public. This module is a raw-waveform counterpart in the
style of dense-mel, so that the pipeline, the attacks and the converter have a fifth model:

waveform ``[B, N]`` (32 kHz) → waveform BatchNormalization → Conv1D(15, 3) concatenated after the
1-channel waveform (16 channels) → 8 one-dimensional dense blocks with squeeze-excitation
(BN → ReLU → Conv1D(f, 1) → BN → ReLU → Conv1D(f, 3) → SE → concatenate), each followed by
MaxPooling1D(3, 'same') → BN → ReLU → 8 heads Dense(41) → GlobalAveragePooling1D → softmax,
averaged. f = 16, 32, 64, 128, 256, 512, 512, 512 as in dense-mel. The pool of 3 with 3-tap
convolutions follows sample-level raw-waveform CNNs (3**8 = 6561 samples per output step, ~5
steps per second); it is a guess, not a fact about Cochlear's model.

When the released file is converted (``jaxadv-convert``), the converter reads its
``model_config`` and fills this config's fields (filters, kernel, pool, stem, SE, heads), and
fails with a message naming any layer outside this family. Nothing here has been checked against
the real file (it is not available offline).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxadv import config as C
from jaxadv.frontend import valid_mask
from jaxadv.models._layers import DenseSEStack, batch_norm, scaled

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class DenseWavConfig:
    """dense-wav hyper-parameters (a reconstruction; see the module docstring)."""

    name: ClassVar[str] = "dense_wav"
    family: ClassVar[str] = "cochlear"
    width: float = 1.0  # multiplies the stem and every block's filters
    num_classes: int = C.NUM_CLASSES
    stem: int = 15  # channels of the Conv1D concatenated with the 1-channel waveform
    filters: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 512, 512)
    kernel: int = 3  # Conv1D size
    pool: tuple[int] = (3,)  # 'same' MaxPooling1D after each block
    se_reduction: int = 2  # squeeze-excitation bottleneck f // 2 (0: no SE)
    n_heads: int = 8
    sample_rate: int = C.SAMPLE_RATE

    def module(self) -> DenseWav:
        return DenseWav(self)


class DenseWav(nn.Module):
    """Waveform ``[B, N]`` + lengths ``[B]`` → head logits ``[B, n_heads, num_classes]``."""

    cfg: DenseWavConfig

    @nn.compact
    def __call__(self, x: Array, lengths: Array, train: bool = False) -> Array:
        cfg = self.cfg
        x = jnp.asarray(x, jnp.float32)
        mask = valid_mask(x.shape[1], lengths)
        x = batch_norm(train, name="wave_bn")(x[:, :, None], mask=mask[:, :, None])
        return DenseSEStack(
            stem=scaled(cfg.stem, cfg.width),
            filters=tuple(scaled(f, cfg.width) for f in cfg.filters),
            kernel=cfg.kernel,
            pool=tuple(cfg.pool),
            se_reduction=cfg.se_reduction,
            n_heads=cfg.n_heads,
            num_classes=cfg.num_classes,
            name="trunk",
        )(x, mask, train)
