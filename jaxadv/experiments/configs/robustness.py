"""Robustness curves: success rate against an SNR budget (the standard robustness evaluation).

Run::

    python -m jaxadv.experiments.robustness                 # the demo models, budgets 20-100 dB
    python -m jaxadv.experiments.robustness --preset paper --from-untargeted runs/untargeted-paper

Each budget ``s`` is one row name per attack: ``fgsm@s`` (the authors' FGSM at exactly ``s`` dB),
``pgd_l2@s`` and ``pgd_linf@s`` (PGD in the ball whose perturbations all have an SNR of at least
``s``; random start, early abort); ``fmn`` is the minimal-norm attack whose per-clip SNR gives
the cumulative curve on the same axis (with ``--from-untargeted``, also DeepFool's, C&W's and
DDN's from that run). Expected on the demo (``experiments/README.md``): PGD fools (nearly) every
clip of every model at 20 dB and 62-76 % of the log-mel models' clips at 80 dB, dense_wav none
at 80 dB; FMN's curve lies at or above PGD's (80-85 % at 80 dB, 38-58 % at 100 dB).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxadv import attacks as A
from jaxadv.experiments.configs import Attack, ExperimentConfig

# SNR budgets (dB): each one is a compiled program per attack and model, so the demo keeps five
BUDGETS = {
    "demo": (20.0, 40.0, 60.0, 80.0, 100.0),  # the demo models fall at 80-100 dB (FMN, DDN)
    "paper": tuple(float(s) for s in range(10, 90, 10)),
}
PGD_STEPS = {"demo": 20, "paper": 50}  # the demo's PGD: 20 steps of 0.05 eps (Foolbox: 50 × 0.025)


def budget_name(attack: str, snr_db: float) -> str:
    """The row name of ``attack`` at a budget: ``"pgd_l2@40"``."""
    return f"{attack}@{snr_db:g}"


def attacks(preset: str) -> tuple[Attack, ...]:
    """The robustness attacks of ``preset``: FGSM, PGD L2 and PGD L∞ at each budget, and FMN."""
    steps = PGD_STEPS[preset]
    rel = 0.025 * 50 / steps  # the same total travel (1.25 eps) in fewer steps
    out = []
    for s in BUDGETS[preset]:
        out.append(Attack(budget_name("fgsm", s), "fgsm", A.FGSMConfig(snr_db=s)))
        for norm in ("l2", "linf"):
            cfg = A.PGDConfig(snr_db=s, norm=norm, steps=steps, rel_stepsize=rel)
            out.append(Attack(budget_name(f"pgd_{norm}", s), "pgd", cfg))
    fmn = A.FMNConfig(steps=100) if preset == "demo" else A.FMNConfig(steps=1000)
    out.append(Attack("fmn", "fmn", fmn))
    return tuple(out)


def get_config(preset: str) -> ExperimentConfig:
    """The robustness experiment with ``preset`` (``"demo"`` or ``"paper"``)."""
    chosen = attacks(preset)
    per_class = 1 if preset == "demo" else 6
    return ExperimentConfig("robustness", preset, per_class, chosen, chosen)


def with_budgets(
    attacks: dict[str, tuple[str, Any]], budgets: tuple[float, ...]
) -> dict[str, tuple[str, Any]]:
    """``{row name: (key, config)}`` with the budgeted attacks at ``budgets`` instead (each
    family's settings but the SNR kept; ``--budgets``); the other attacks unchanged."""
    families: dict[str, tuple[str, Any]] = {}
    for name, (key, cfg) in attacks.items():
        if "@" in name:
            families.setdefault(name.split("@")[0], (key, cfg))
    out = {
        budget_name(f, s): (key, dataclasses.replace(cfg, snr_db=float(s)))
        for s in budgets
        for f, (key, cfg) in families.items()
    }
    return {**out, **{n: v for n, v in attacks.items() if "@" not in n}}
