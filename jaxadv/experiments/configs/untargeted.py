"""Experiment 1 (untargeted): white noise, FGSM, DeepFool and C&W against each model.

Run::

    python -m jaxadv.experiments.untargeted                      # --preset demo
    python -m jaxadv.experiments.untargeted --preset paper --data /data/FSDKaggle2018 \\
        --split train --checkpoint vgg13=ckpt/vgg13 ...          # every model's checkpoint

``paper``: the authors' settings (ORIGINALS.md §5): white noise and FGSM at 20 dB (the SNR of
the paper's Table 2; their script's ``rms_ratio`` 6 is 15.6 dB), DeepFool and C&W as in
``VinodS7/audio-adversaries`` (including their deviations), 6 clips per class. Expected (the
paper's Table 2, 246 clips, the original models): success noise 21.14 %, FGSM 31.14 %, DeepFool
99.99 % at 41.81 dB, C&W 99.51 % at 46.23 dB.

``demo``: minimal-norm budgets from the convergence study on the demo VGG13
(``experiments/README.md``): DeepFool, FMN and DDN 100 steps, each within 1 dB (median SNR) of 10x
its budget; C&W ``CWConfig.audio()`` (5 x 100). Finished examples leave their slot, so a large
DeepFool budget costs only for the hard clips. Also runs the fast minimal-norm attacks FMN and
DDN (extra rows). 1 clip per class. Expected on the demo models (``experiments/README.md``,
128 attacked clips, about 30 minutes on a 2-core CPU): noise and FGSM at 20.00 dB with 62-64 %
success; DeepFool 96.9 % at 79.7 dB (mean), C&W 92.2 % at 91.7 dB (16/25 on dense_wav), FMN
93.8 % at 90.9 dB, DDN 97.7 % at 87.9 dB; gap to the best-known (median) FMN 0.0 dB, C&W 0.4 dB,
DDN 2.6 dB, DeepFool 10.9 dB.
"""

from __future__ import annotations

import dataclasses

from jaxadv.experiments.configs import Attack, ExperimentConfig, check_preset


def attacks(preset: str) -> tuple[Attack, ...]:
    """The four attacks of the paper's Table 2 with ``preset``'s settings (any model)."""
    from jaxadv import attacks as A

    check_preset(preset)
    if preset == "paper":
        return (
            Attack("noise", "noise", A.NoiseConfig(snr_db=20.0)),
            Attack("fgsm", "fgsm", dataclasses.replace(A.FGSMConfig.authors(), snr_db=20.0)),
            Attack("deepfool", "deepfool", A.DeepFoolConfig.authors()),
            Attack("cw", "cw", A.CWConfig.authors()),
        )
    return (
        Attack("noise", "noise", A.NoiseConfig(snr_db=20.0)),
        Attack("fgsm", "fgsm", A.FGSMConfig(snr_db=20.0)),
        Attack("deepfool", "deepfool", A.DeepFoolConfig(steps=100, candidates=10)),
        # the convergent C&W for audio (clip-relative Adam step, cosine decay, geometric const
        # search, restart from the best modifier): the 3 x 60, lr 1e-3 demo C&W stopped ~56 dB
        # short of DeepFool's perturbations on the same clips (issue 17)
        Attack("cw", "cw", A.CWConfig.audio()),
    )


def get_config(preset: str) -> ExperimentConfig:
    """The untargeted experiment with ``preset`` (``"demo"`` or ``"paper"``)."""
    from jaxadv import attacks as A
    from jaxadv import config as C

    out = attacks(preset)
    if preset == "demo":  # the fast minimal-norm attacks beside the paper's four
        out += (
            Attack("fmn", "fmn", A.FMNConfig(steps=100)),
            Attack("ddn", "ddn", A.DDNConfig(steps=100)),
        )
    per_class = C.UNTARGETED_PER_CLASS if preset == "paper" else 1
    return ExperimentConfig("untargeted", preset, per_class, out, out)
