"""Experiment 2 (targeted): L-BFGS and C&W from each music class towards each other one.

Run::

    python -m jaxadv.experiments.targeted                        # --preset demo
    python -m jaxadv.experiments.targeted --preset paper --data /data/FSDKaggle2018 \\
        --split train --checkpoint vgg13=ckpt/vgg13 ...          # every model's checkpoint

``paper``: the authors' settings: C&W ``authors`` on the Iqbal models and
``authors_cochlear_targeted`` (2000 iterations without abort) on the Cochlear ones, L-BFGS 200
(Iqbal) / 1000 (Cochlear) iterations; 6 clips per class. Expected (the paper's Table 4 and
Figure 2): C&W 93-109 dB, L-BFGS 50-62 dB per source → target pair, C&W more successful.

``demo``: L-BFGS 2 x 25 iterations and C&W 3 x 60 Adam steps (lr 1e-3), both from c = 1; 1 clip
per class. Expected on the demo models (``experiments/README.md``): C&W 80-100 % success per pair
at 18-43 dB, L-BFGS 0-60 %.
"""

from __future__ import annotations

from jaxadv.experiments.configs import Attack, ExperimentConfig, check_preset


def get_config(preset: str) -> ExperimentConfig:
    """The targeted experiment with ``preset`` (``"demo"`` or ``"paper"``)."""
    from jaxadv import attacks as A
    from jaxadv import config as C

    check_preset(preset)
    per_class = C.UNTARGETED_PER_CLASS if preset == "paper" else 1
    if preset == "paper":
        iqbal = (
            Attack("lbfgs", "lbfgs", A.LBFGSConfig.authors()),
            Attack("cw", "cw", A.CWConfig.authors()),
        )
        cochlear = (
            Attack("lbfgs", "lbfgs", A.LBFGSConfig.authors_cochlear()),
            Attack("cw", "cw", A.CWConfig.authors_cochlear_targeted()),
        )
        return ExperimentConfig("targeted", preset, per_class, iqbal, cochlear)
    demo = (
        Attack(
            "lbfgs",
            "lbfgs",
            A.LBFGSConfig(binary_search_steps=2, max_iterations=25, initial_const=1.0),
        ),
        Attack(
            "cw",
            "cw",
            A.CWConfig(
                binary_search_steps=3, max_iterations=60, learning_rate=1e-3, initial_const=1.0
            ),
        ),
    )
    return ExperimentConfig("targeted", preset, per_class, demo, demo)
