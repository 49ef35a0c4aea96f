"""Best-known minimal perturbations: the minimum over attacks per example, and gaps >= 0."""

from __future__ import annotations

import numpy as np
import pytest

from jaxadv.attacks import metrics as M


def test_best_known_is_the_best_successful_row_of_each_group():
    groups = np.array([0, 0, 0, 1, 1, 2, 2])
    snr = np.array([30.0, 90.0, 50.0, 20.0, 60.0, 40.0, np.inf])
    ok = np.array([True, False, True, True, True, False, True])
    best = M.best_known_snr(groups, snr, ok)
    # group 0: 90 dB failed, so 50 dB; group 1: 60; group 2: only an infinite SNR -> none
    np.testing.assert_array_equal(best, [50, 50, 50, 60, 60, np.nan, np.nan])
    gap = M.gap_db(snr, ok, best)
    np.testing.assert_array_equal(gap, [20, np.nan, 0, 40, 0, np.nan, np.nan])


def test_gap_properties_on_random_runs():
    rng = np.random.default_rng(0)
    for _ in range(20):
        r = 200
        groups = rng.integers(0, 30, r)
        snr = rng.normal(60, 20, r)
        ok = rng.random(r) < 0.7
        best = M.best_known_snr(groups, snr, ok)
        gap = M.gap_db(snr, ok, best)
        fin = np.isfinite(gap)
        assert np.all(gap[fin] >= 0)
        # every group with a success has a row at gap 0, and the best is the max over its rows
        for g in np.unique(groups[ok]):
            rows = (groups == g) & ok
            assert np.isclose(np.nanmin(gap[rows]), 0.0)
            assert best[rows][0] == snr[rows].max()
        # a row's best does not depend on the order of the rows
        perm = rng.permutation(r)
        np.testing.assert_array_equal(
            M.best_known_snr(groups[perm], snr[perm], ok[perm]), best[perm]
        )


def test_summarize_gap():
    s = M.summarize_gap(np.array([0.0, 1.0, 2.0, 3.0, np.nan, 10.0]))
    assert s["gap_median"] == 2.0 and s["gap_p90"] == pytest.approx(7.2)
    assert np.isnan(M.summarize_gap(np.array([np.nan]))["gap_median"])


def test_shapes_must_match():
    with pytest.raises(ValueError, match="must be \\[R\\]"):
        M.best_known_snr(np.zeros(3), np.zeros(2), np.zeros(3, bool))


def test_experiment_tables_report_each_attacks_gap():
    from jaxadv.experiments import tables

    def row(attack, fname, snr, ok, target=None, model="vgg13"):
        return {"model": model, "attack": attack, "fname": fname, "target": target,
                "snr_db": snr, "success": int(ok)}  # fmt: skip

    rows = [
        row("deepfool", "a.wav", 90.0, True), row("cw", "a.wav", 60.0, True),
        row("deepfool", "b.wav", 80.0, True), row("cw", "b.wav", 85.0, True),
        row("deepfool", "c.wav", 95.0, False), row("cw", "c.wav", 40.0, True),
        row("cw", "a.wav", 70.0, True, model="crnn"),  # another model: its own best
    ]  # fmt: skip
    t = tables.gap_table(rows, ["deepfool", "cw"])
    got = {r[0]: r[1:] for r in t.rows}
    assert got["deepfool"] == (2, 2.5, pytest.approx(4.5))  # gaps 0, 5
    assert got["cw"][0] == 4 and got["cw"][1] == pytest.approx(0.0)  # gaps 30, 0, 0, 0
    b = {(r[0], r[1]): r[3:] for r in tables.best_known(rows).rows}
    assert b[("vgg13", "a.wav")] == (90.0, "deepfool") and b[("vgg13", "c.wav")] == (40.0, "cw")
    assert b[("crnn", "a.wav")] == (70.0, "cw")
