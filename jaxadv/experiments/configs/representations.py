"""Input representations and defences: the same VGG13 on log-mel, STFT and CQT, and
adversarially trained; the raw-waveform dense_wav beside them.

Run::

    python -m jaxadv.experiments.representations          # the demo's five models, 20-80 dB

Per model: FGSM and PGD L2 at each SNR budget (row names ``fgsm@s``, ``pgd_l2@s``; the
robustness experiment's settings, :mod:`jaxadv.experiments.configs.robustness`), and the
minimal-norm attacks DeepFool and FMN (the untargeted demo's settings), whose best per clip is
the clip's minimal-perturbation SNR. The command adds randomized-smoothing certificates and the
transfer matrix of the PGD examples at :data:`TRANSFER_BUDGET` and of DeepFool's.
"""

from __future__ import annotations

from jaxadv.experiments.configs import Attack, ExperimentConfig, check_preset
from jaxadv.experiments.configs import robustness as R
from jaxadv.experiments.configs import untargeted as U

# the demo's models of the study: one architecture on three representations, one defence, and
# the raw-waveform model (another architecture: the waveform representation), all trained on the
# same FluidR3 clips without augmentation (the five attacked demo models train on three banks
# with augmentation, so their vgg13 and dense_wav are not like-for-like with the variants)
MODELS = ("vgg13_fluidr3", "vgg13_stft", "vgg13_cqt", "vgg13_pgd", "dense_wav_fluidr3")
BUDGETS = {"demo": (20.0, 40.0, 60.0, 80.0), "paper": (10.0, 20.0, 30.0, 40.0, 50.0, 60.0)}
MINIMAL = ("deepfool", "fmn")  # their best successful SNR per clip: the minimal perturbation
TRANSFER_BUDGET = 40.0  # the PGD L2 examples whose transfer between models is measured


def attacks(preset: str) -> tuple[Attack, ...]:
    """FGSM and PGD L2 at every budget of ``preset``, then DeepFool and FMN."""
    check_preset(preset)
    budgeted = {a.name: a for a in R.attacks(preset)}
    # the robustness preset's budgets (demo 20-100, paper 10-80 dB) hold all of these
    out = [budgeted[R.budget_name(f, s)] for s in BUDGETS[preset] for f in ("fgsm", "pgd_l2")]
    minimal = {a.name: a for a in U.get_config(preset).iqbal}
    return (*out, minimal["deepfool"], budgeted["fmn"])


def get_config(preset: str) -> ExperimentConfig:
    """The representations experiment with ``preset``: 1 clip per class on the demo."""
    chosen = attacks(preset)
    return ExperimentConfig("representations", preset, 1 if preset == "demo" else 6, chosen, chosen)
