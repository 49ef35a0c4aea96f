"""Experiment 3 (transferability): each model's DeepFool and C&W examples on every other model.

Run::

    python -m jaxadv.experiments.transfer --from-untargeted runs/untargeted-demo
    python -m jaxadv.experiments.transfer            # runs its own DeepFool and C&W first

The attacks are the untargeted experiment's DeepFool and C&W with the same preset
(:mod:`jaxadv.experiments.configs.untargeted`), so ``--from-untargeted`` reuses their examples.
Expected (the paper's Table 5): 0-10 % between the Iqbal models, at most 1.6 % into dense-mel,
0-0.2 % into dense-wav; on the demo models (``experiments/README.md``) about a quarter between
the Iqbal models, 4-10 % into dense-mel and 0 % into dense-wav.
"""

from __future__ import annotations

from jaxadv.experiments.configs import ExperimentConfig
from jaxadv.experiments.configs import untargeted as U

ATTACKS = ("deepfool", "cw")  # the minimal-perturbation attacks whose examples are transferred


def get_config(preset: str) -> ExperimentConfig:
    """The transfer experiment with ``preset`` (``"demo"`` or ``"paper"``)."""
    base = U.get_config(preset)
    iqbal, cochlear = (tuple(a for a in U.attacks(preset, f) if a.name in ATTACKS)
                       for f in ("iqbal", "cochlear"))  # fmt: skip
    return ExperimentConfig("transfer", preset, base.per_class, iqbal, cochlear)
