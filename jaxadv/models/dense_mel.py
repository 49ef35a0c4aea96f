"""dense-mel of Cochlear.ai (Jeong & Lim), ORIGINALS.md §1.5, §2.4.

As written in the commented-out ``build_model_mel`` of finejuly/dcase2018_task2_cochlearai
(``utils/model.py``); the released .h5 is converted by reading its ``model_config`` (see
``jaxadv.convert``), which fills this config's fields. Waveform ``[B, N]`` (32 kHz) →

1. waveform BatchNormalization (one channel: a scalar affine map of every sample);
2. kapre 0.1.3.1 ``Melspectrogram`` (n_dft 1024, hop 128, 'same', 64 Slaney mels, magnitude,
   dB minus the clip maximum, floored at -80 dB) = :class:`jaxadv.frontend.KapreFrontend`;
3. per-mel-band BatchNormalization (Keras: Permute → BN over the 64 bands → Permute back);
4. on the (mel, time, 1) image: Conv2D(15, 3x3) concatenated after its input (16 channels) →
   8 dense blocks with squeeze-excitation (:class:`~jaxadv.models._layers.DenseSEBlock`), each
   followed by MaxPooling2D(2, 2, 'same') → BN → ReLU;
5. 8 heads Dense(41) → GlobalAveragePooling2D → softmax, averaged (done by the classifier).

The model returns the heads' pre-softmax outputs ``[B, 8, 41]``. Padding beyond each clip's
length is masked everywhere (see ``_layers``), so a clip in a padded batch equals the clip alone.
The kapre maximum is per clip (kapre 0.1.3.1 takes it over the whole batch; identical for the
batch of one the attacks used).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxadv import config as C
from jaxadv.frontend import KapreFrontend, valid_mask
from jaxadv.models._layers import DenseSEStack, batch_norm, scaled

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class DenseMelConfig:
    """dense-mel hyper-parameters; ``width=1.0`` is the commented builder's model."""

    name: ClassVar[str] = "dense_mel"
    family: ClassVar[str] = "cochlear"
    width: float = 1.0  # multiplies the stem and every block's filters
    num_classes: int = C.NUM_CLASSES
    stem: int = 15  # channels of the 3x3 conv concatenated with the 1-channel mel image
    filters: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 512, 512)  # min(512, 16 * 2**i)
    kernel: int = 3  # spatial conv size (square)
    pool: tuple[int, int] = (2, 2)  # 'same' max pooling after each block: (mel, time)
    se_reduction: int = 2  # squeeze-excitation bottleneck f // 2 (0: no SE)
    n_heads: int = 8
    sample_rate: int = C.SAMPLE_RATE  # kapre Melspectrogram
    n_dft: int = C.KAPRE_N_FFT
    n_hop: int = C.KAPRE_HOP
    n_mels: int = C.N_MELS

    def frontend(self) -> KapreFrontend:
        """The in-model kapre front-end with this config's STFT/mel settings."""
        return KapreFrontend(
            sample_rate=self.sample_rate, n_fft=self.n_dft, hop=self.n_hop, n_mels=self.n_mels
        )

    def module(self) -> DenseMel:
        return DenseMel(self)


class DenseMel(nn.Module):
    """Waveform ``[B, N]`` + lengths ``[B]`` → head logits ``[B, n_heads, num_classes]``."""

    cfg: DenseMelConfig

    @nn.compact
    def __call__(self, x: Array, lengths: Array, train: bool = False) -> Array:
        cfg = self.cfg
        x = jnp.asarray(x, jnp.float32)
        wmask = valid_mask(x.shape[1], lengths)[:, :, None]
        # The front-end zeroes samples beyond each length *after* this BN, as kapre's 'same'
        # padding appends zeros to the BN output.
        x = batch_norm(train, name="wave_bn")(x[:, :, None], mask=wmask)[:, :, 0]
        feats = cfg.frontend()(x, lengths)
        v = batch_norm(train, name="mel_bn")(feats.values, mask=feats.mask[:, :, None])
        v = jnp.swapaxes(v, 1, 2)[..., None]  # Keras layout (mel, time, 1)
        return DenseSEStack(
            stem=scaled(cfg.stem, cfg.width),
            filters=tuple(scaled(f, cfg.width) for f in cfg.filters),
            kernel=cfg.kernel,
            pool=tuple(cfg.pool),
            se_reduction=cfg.se_reduction,
            n_heads=cfg.n_heads,
            num_classes=cfg.num_classes,
            name="trunk",
        )(v, feats.mask, train)
