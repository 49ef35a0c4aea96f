"""The per-experiment config modules give exactly the presets the commands run.

The ``paper`` presets are pinned to the values they always had (faithful presets never change);
a change of a ``demo`` preset must change this reference too, visibly.
"""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from jaxadv import attacks as A
from jaxadv.experiments import configs


def former_attack_configs(experiment: str, preset: str, model: str) -> dict:
    """A frozen copy of ``attack_configs`` as it was before the config modules (the reference)."""
    fam = "iqbal" if model in ("vgg13", "crnn", "gcnn") else "cochlear"
    if experiment in ("untargeted", "transfer", "compression"):
        if preset == "paper":
            out = {
                "noise": ("noise", A.NoiseConfig(snr_db=20.0)),
                "fgsm": ("fgsm", dataclasses.replace(A.FGSMConfig.authors(), snr_db=20.0)),
                "deepfool": ("deepfool", A.DeepFoolConfig.authors()),
                "cw": ("cw", A.CWConfig.authors()),
            }
        else:
            out = {
                "noise": ("noise", A.NoiseConfig(snr_db=20.0)),
                "fgsm": ("fgsm", A.FGSMConfig(snr_db=20.0)),
                "deepfool": ("deepfool", A.DeepFoolConfig(steps=500, candidates=10)),
                "cw": ("cw", A.CWConfig.audio()),  # issue 17: the convergent C&W
            }  # fmt: skip
            if fam == "cochlear":  # issue 17: dense_wav needs a larger step and const
                out["cw"] = ("cw", dataclasses.replace(A.CWConfig.audio(), learning_rate=1e-3,
                                                       initial_const=1e-3))  # fmt: skip
        if preset == "demo" and experiment in ("untargeted", "compression"):
            out["fmn"] = ("fmn", A.FMNConfig(steps=100))
            out["ddn"] = ("ddn", A.DDNConfig(steps=100))
        if experiment == "transfer":
            out = {k: v for k, v in out.items() if k in ("deepfool", "cw")}
        return out
    if preset == "paper":
        cw = A.CWConfig.authors() if fam == "iqbal" else A.CWConfig.authors_cochlear_targeted()
        lb = A.LBFGSConfig.authors() if fam == "iqbal" else A.LBFGSConfig.authors_cochlear()
        return {"lbfgs": ("lbfgs", lb), "cw": ("cw", cw)}
    return {
        "lbfgs": ("lbfgs", A.LBFGSConfig(binary_search_steps=1, max_iterations=20,
                                         initial_const=1.0)),  # issue 17: was 2 x 25
        "cw": ("cw", A.CWConfig(binary_search_steps=2, max_iterations=60, learning_rate=1e-3,
                                initial_const=1.0)),  # issue 17: was 3 x 60
    }  # fmt: skip


# robustness and representations came after the config modules: their own tests pin them
@pytest.mark.parametrize(
    "experiment", [e for e in configs.EXPERIMENTS if e not in ("robustness", "representations")]
)
@pytest.mark.parametrize("preset", configs.PRESETS)
def test_get_config_gives_the_former_presets(experiment, preset):
    module = importlib.import_module(f"jaxadv.experiments.configs.{experiment}")
    cfg = module.get_config(preset)
    assert cfg == configs.get_config(experiment, preset)
    assert (cfg.experiment, cfg.preset) == (experiment, preset)
    assert cfg.per_class == (6 if preset == "paper" else 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.per_class = 2
    for model in configs.ALL_MODELS:
        got = cfg.attacks(model)
        want = former_attack_configs(experiment, preset, model)
        assert list(got) == list(want) and got == want, (experiment, preset, model)
    assert f"python -m jaxadv.experiments.{experiment}" in module.__doc__


def test_unknown_presets_and_experiments_are_refused():
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        configs.get_config("untargeted", "fast")
    with pytest.raises(ValueError, match="unknown experiment"):
        configs.get_config("convergence", "demo")


@pytest.mark.parametrize("preset", configs.PRESETS)
def test_robustness_runs_three_attacks_per_budget_and_fmn(preset):
    from jaxadv.experiments.configs import robustness as R

    cfg = configs.get_config("robustness", preset)
    got = cfg.attacks("vgg13")
    assert got == cfg.attacks("dense_wav")  # the same for both families
    budgets = R.BUDGETS[preset]
    assert list(got) == [f"{a}@{s:g}" for s in budgets for a in ("fgsm", "pgd_l2", "pgd_linf")] + [
        "fmn"
    ]
    for s in budgets:
        assert got[f"fgsm@{s:g}"] == ("fgsm", A.FGSMConfig(snr_db=s))
        for norm in ("l2", "linf"):
            key, pgd = got[f"pgd_{norm}@{s:g}"]
            assert key == "pgd" and (pgd.snr_db, pgd.norm) == (s, norm)
            assert pgd.steps * pgd.rel_stepsize == pytest.approx(1.25)  # Foolbox's travel
    assert "python -m jaxadv.experiments.robustness" in R.__doc__
