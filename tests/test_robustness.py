"""The robustness command: every budgeted attack stays within its budget, the table (and the
figure, which plots it) is recomputable from the rows, and the minimal-norm curves are the share
of clips whose smallest perturbation clears each budget."""

from __future__ import annotations

import numpy as np
import pytest

from jaxadv.experiments import results, robustness
from jaxadv.experiments.configs import robustness as R
from tests.test_experiments import small_data


def test_robustness_rows_table_and_figure(tmp_path):
    data = small_data(tmp_path / "data", ("Cello", "Bark"))
    out = tmp_path / "r"
    budgets = (20.0, 60.0, 100.0)  # three of the demo's five: fewer programs to compile
    argv = ["--out", str(out), "--data", data, "--models", "dense_mel", "--batch-size", "2",
            "--no-audio", "--set", "fmn.steps=10", "--set", "fmn.search_steps=50",
            "--budgets", "20,60,100", "--set", "pgd_l2@20.steps=5"]  # fmt: skip
    robustness.run(robustness.build_parser().parse_args(argv))
    rows = results.read_rows(out / "results.csv")
    names = {f"{a}@{s:g}" for s in budgets for a in robustness.FAMILIES} | {"fmn"}
    assert {r["attack"] for r in rows} == names
    for r in rows:
        if r["attack"].startswith("fgsm@"):  # the authors' FGSM: exactly the budget
            # exactly the budget (float32: 0.01 dB at 100 dB, where delta is 1e-5 of x)
            assert r["snr_db"] == pytest.approx(float(r["attack"].split("@")[1]), abs=0.01)
        elif r["attack"].startswith("pgd_") and r["success"]:  # PGD: inside the ball
            assert r["snr_db"] >= float(r["attack"].split("@")[1]) - 0.01  # float32
    table = (out / "robustness.csv").read_text().splitlines()
    assert table[0] == "Model,Attack,Budget (dB),N,Success %"
    got = {(m, a, float(s)): float(v) for m, a, s, _, v in (ln.split(",") for ln in table[1:])}
    for (_, a, s), v in got.items():  # one model
        if a in robustness.FAMILIES:
            g = [r["success"] for r in rows if r["attack"] == f"{a}@{s:g}"]
        else:
            g = [bool(r["success"]) and r["snr_db"] >= s for r in rows if r["attack"] == a]
        assert v == pytest.approx(100 * np.mean(g))
    fmn = [got[("dense_mel", "fmn", s)] for s in budgets]
    assert fmn == sorted(fmn, reverse=True)  # a cumulative curve: a higher budget, fewer clips
    assert got[("dense_mel", "pgd_l2", 20.0)] == 100.0  # 20 dB fools the demo models
    assert (out / "figure_robustness.png").stat().st_size > 10000
    assert 'data-stem="robustness"' in (out / "report.html").read_text()
    cfg = __import__("json").loads((out / "config.json").read_text())
    assert cfg["attacks"]["dense_mel"]["pgd_l2@20"][1]["steps"] == 5  # --set after --budgets
    assert R.BUDGETS["demo"] != budgets


def test_bad_budgets_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        robustness.main(["--out", str(tmp_path / "r"), "--budgets", "20,x"])
    assert e.value.code == 2 and "--budgets: expected dB values" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
