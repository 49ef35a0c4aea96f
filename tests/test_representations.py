"""The representations command: every number of its summary is recomputable from its rows (clean
accuracy, minimal SNR, robust accuracy, certified SNR), the transfer matrix holds only the chosen
attacks' successful examples on other models, a resume refuses other smoothing settings, and the
demo's VGG13 variants resolve by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxadv.cli import UserError
from jaxadv.experiments import representations as X
from jaxadv.experiments import results
from jaxadv.experiments.configs import representations as P
from tests.test_experiments import read_csv, small_data


def test_minimal_snr_and_robust_accuracy_by_hand():
    rows = [
        {"model": "a", "attack": "deepfool", "fname": "x", "success": True, "snr_db": 80.0},
        {"model": "a", "attack": "fmn", "fname": "x", "success": True, "snr_db": 85.0},
        {"model": "a", "attack": "fmn", "fname": "y", "success": False, "snr_db": 99.0},
        {"model": "a", "attack": "pgd_l2@40", "fname": "x", "success": True, "snr_db": 41.0},
        {"model": "b", "attack": "fmn", "fname": "x", "success": True, "snr_db": 10.0},
    ]
    # the best successful minimal-norm example per clip; a clip none fooled has -inf
    assert X.minimal_snr(rows, "a") == {"x": 85.0, "y": -np.inf}
    # 4 clips, 3 classified correctly, 1 of them fooled at 40 dB: 2 of 4 still correct
    assert X.robust_accuracy(rows, "a", "pgd_l2@40", 4, 3) == 50.0
    assert X.robust_accuracy(rows, "a", "pgd_l2@80", 4, 3) == 75.0


def test_the_study_and_its_transfer_names_are_in_the_config():
    names = [a.name for a in P.attacks("demo")]
    assert names[-2:] == ["deepfool", "fmn"]
    assert all(f"{f}@{s:g}" in names for s in P.BUDGETS["demo"] for f in ("fgsm", "pgd_l2"))
    assert set(X.transfer_attacks()) <= set(names)
    for preset in ("demo", "paper"):
        assert P.TRANSFER_BUDGET in P.BUDGETS[preset]


def test_demo_variants_resolve_by_name():
    from jaxadv.experiments import flags
    from jaxadv.experiments.configs import architecture, demo_variants, family

    assert set(demo_variants()) == {
        "vgg13_fluidr3", "dense_wav_fluidr3", "vgg13_stft", "vgg13_cqt", "vgg13_pgd"
    }  # fmt: skip
    assert architecture("vgg13_cqt") == "vgg13" and family("vgg13_pgd") == "iqbal"
    assert architecture("dense_wav_fluidr3") == "dense_wav"
    assert family("dense_wav_fluidr3") == "cochlear" and family("vgg13_fluidr3") == "iqbal"
    # the study's default models are the like-for-like FluidR3-only ones
    from jaxadv.experiments.configs import representations as P

    assert P.MODELS == (
        "vgg13_fluidr3", "vgg13_stft", "vgg13_cqt", "vgg13_pgd", "dense_wav_fluidr3"
    )  # fmt: skip
    assert flags.parse_models("vgg13,vgg13_stft") == ["vgg13", "vgg13_stft"]
    with pytest.raises(UserError, match="taken"):
        flags.parse_model_fns(["vgg13_pgd=mymod:build"])


def test_representations_run_tables_and_resume(tmp_path, capsys):
    data = small_data(tmp_path / "data", ("Cello", "Bark"))
    out = tmp_path / "r"
    argv = ["--out", str(out), "--data", data, "--models", "vgg13,dense_wav", "--batch-size",
            "4", "--no-audio", "--budgets", "40", "--set", "deepfool.steps=30",
            "--set", "fmn.steps=10", "--set", "fmn.search_steps=50", "--n", "50", "--n0", "50"]  # fmt: skip
    X.run(X.build_parser().parse_args(argv))
    rows = results.read_rows(out / "results.csv")
    assert {r["attack"] for r in rows} == {
        "fgsm@40", "pgd_l2@40", "deepfool", "fmn",
    }  # fmt: skip
    clean = read_csv(out / "clean.csv")
    summary = read_csv(out / "representations.csv")
    cert = read_csv(out / "certify.csv")
    assert [s["Model"] for s in summary] == ["vgg13", "dense_wav"]
    for s in summary:
        m = s["Model"]
        mine = [c for c in clean if c["model"] == m]
        ok = sum(c["prediction"] == c["label"] for c in mine)
        assert float(s["Clean acc %"]) == pytest.approx(100 * ok / len(mine))
        best = list(X.minimal_snr(rows, m).values())
        assert float(s["Median minimal SNR dB"]) == pytest.approx(np.median(best), abs=1e-3)
        for b in (40,):
            fooled = sum(
                r["success"] for r in rows if r["model"] == m and r["attack"] == f"pgd_l2@{b}"
            )
            want = 100 * (ok - fooled) / len(mine)
            assert float(s[f"PGD robust acc % @{b} dB"]) == pytest.approx(want)
        snr = np.array([float(c["certified_snr_db"]) for c in cert if c["model"] == m])
        assert len(snr) == len(mine)
        fin = snr[np.isfinite(snr)]
        if fin.size:
            assert float(s["Median certified SNR dB"]) == pytest.approx(np.median(fin), abs=1e-3)
    assert summary[0]["Representation"] == "log-mel" and summary[1]["Representation"] == "waveform"
    # transfer: only the chosen attacks' successful examples, each on the other model
    trows = read_csv(out / "transfer.csv")
    ok_rows = {(r["model"], r["attack"], r["fname"]) for r in rows if r["success"]}
    assert trows and all(t["attack"] in X.transfer_attacks() for t in trows)
    assert all(t["source_model"] != t["eval_model"] for t in trows)
    assert all((t["source_model"], t["attack"], t["fname"]) in ok_rows for t in trows)
    for stem in (
        "robust_accuracy",
        "certified_accuracy",
        "transfer_pgd_l2@40",
        "transfer_deepfool",
    ):
        assert (out / f"{stem}.md").is_file(), stem
    assert (out / "figure_representations.png").stat().st_size > 10000
    assert json.loads((out / X.SMOOTHING_FILE).read_text())
    # the same command resumes without new work; other smoothing settings are refused in one line
    before = (out / "certify.csv").read_text()
    X.run(X.build_parser().parse_args(argv))
    assert (out / "certify.csv").read_text() == before
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        X.main([*argv[:-4], "--n", "100", "--n0", "50"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other smoothing settings" in err[0], err
    assert (out / "certify.csv").read_text() == before
