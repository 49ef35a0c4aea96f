"""The compression experiment: do the untargeted experiment's adversarial examples survive being
saved as 16/24-bit PCM, MP3, Vorbis or Opus?

Run::

    python -m jaxadv.experiments.compression --from-untargeted runs/untargeted-demo
    python -m jaxadv.experiments.compression --from-targeted runs/targeted-demo
    python -m jaxadv.experiments.compression          # runs the untargeted attacks itself first

Without a source run it runs the untargeted experiment's attacks with the same preset
(:mod:`jaxadv.experiments.configs.untargeted`); the codecs are :data:`jaxadv.codecs.CODECS`
(``--codecs`` picks some). Expected on the demo (``experiments/README.md``): the minimal-norm
examples (DeepFool, C&W, FMN, DDN; about 80-100 dB SNR) do not survive 16-bit PCM or any lossy
codec, while white noise and FGSM at 20 dB mostly do.
"""

from __future__ import annotations

from jaxadv.experiments.configs import ExperimentConfig
from jaxadv.experiments.configs import untargeted as U


def get_config(preset: str) -> ExperimentConfig:
    """The compression experiment with ``preset`` (``"demo"`` or ``"paper"``)."""
    base = U.get_config(preset)
    return ExperimentConfig("compression", preset, base.per_class, base.iqbal, base.cochlear)
