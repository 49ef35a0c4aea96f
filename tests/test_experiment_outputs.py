"""Result store (resume, kill-safety), the paper's tables from rows, and the figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxadv.experiments import arrays, figures, results, tables


def row(**kw):
    base = dict.fromkeys(results.COLUMNS, "")
    base.update(model="vgg13", attack="cw", fname="a.wav", label="Cello", target="", original="Cello",
                adversarial="Oboe", success=1, gt_conf=0.8, new_conf=0.6, gt_conf_adv=0.1,
                target_conf=None, snr_db=40.0, l2=0.01, linf=0.001, steps=10, seconds=0.5)  # fmt: skip
    base.update(kw)
    return base


def test_store_appends_dedupes_and_resumes(tmp_path):
    p = tmp_path / "r.csv"
    s = results.ResultStore(p)
    assert s.append([row(), row(fname="b.wav")]) == 2
    assert s.append([row()]) == 0  # same key: not written twice
    s2 = results.ResultStore(p)  # reopen = resume
    assert len(s2) == 2 and ("vgg13", "cw", "a.wav", "") in s2
    rows = s2.rows()
    assert rows[0]["success"] == 1 and rows[0]["snr_db"] == 40.0 and rows[0]["target_conf"] is None


def test_store_drops_partial_last_line_after_a_kill(tmp_path):
    p = tmp_path / "r.csv"
    s = results.ResultStore(p)
    s.append([row()])
    with open(p, "a") as f:
        f.write("vgg13,cw,b.wav,Cel")  # killed mid-write
    s2 = results.ResultStore(p)
    assert len(s2) == 1 and len(s2.rows()) == 1
    s2.append([row(fname="b.wav")])
    assert [r["fname"] for r in results.ResultStore(p).rows()] == ["a.wav", "b.wav"]


def test_store_refuses_foreign_file_and_incomplete_rows(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="not the expected columns"):
        results.ResultStore(p)
    s = results.ResultStore(tmp_path / "ok.csv")
    bad = row()
    del bad["snr_db"]
    with pytest.raises(ValueError, match="snr_db"):
        s.append([bad])


def test_infinite_snr_round_trips(tmp_path):
    s = results.ResultStore(tmp_path / "r.csv")
    s.append([row(snr_db=float("inf"))])
    assert math.isinf(results.ResultStore(tmp_path / "r.csv").rows()[0]["snr_db"])
    out = results.write_json(tmp_path / "r.json", [row(snr_db=float("inf"))])
    assert '"inf"' in out.read_text()


def test_table2_and_3_means_over_the_stated_examples():
    rows = [
        row(success=1, new_conf=0.6, gt_conf_adv=0.1, snr_db=40.0, gt_conf=0.9),
        row(fname="b", success=1, new_conf=0.8, gt_conf_adv=0.3, snr_db=50.0, gt_conf=0.7),
        row(fname="c", success=0, new_conf=0.99, gt_conf_adv=0.99, snr_db=10.0, gt_conf=0.5),
        row(fname="d", attack="deepfool", success=1),
    ]
    t2 = tables.table2(rows, ["cw", "deepfool", "noise"])
    cw = t2.rows[0]
    assert cw[:2] == ("cw", 3)
    assert cw[2] == pytest.approx(200 / 3) and cw[3] == pytest.approx(0.7)
    assert cw[4] == pytest.approx(0.2) and cw[5] == pytest.approx(45.0)
    assert t2.rows[2][1] == 0 and math.isnan(t2.rows[2][2])  # an attack with no rows
    t3 = tables.table3(rows, "cw", ["vgg13", "crnn"])
    assert t3.rows[0][3] == pytest.approx(0.7)  # GT over all attacked examples
    md = t3.to_markdown()
    assert "| vgg13 | 3 | 66.67 | 0.7000 |" in md and "| crnn | 0 | – |" in md


def test_table4_pair_matrix_and_table5(tmp_path):
    rows = [
        row(label="Cello", target="Oboe", success=1, snr_db=30.0),
        row(fname="b", label="Cello", target="Oboe", success=1, snr_db=40.0),
        row(fname="c", label="Cello", target="Oboe", success=0, snr_db=5.0),
        row(fname="d", label="Oboe", target="Cello", success=0, snr_db=5.0),
    ]
    t4 = tables.table4(rows, "cw", ["Cello", "Oboe"])
    assert t4.rows[0][1] == "NA" and t4.rows[0][2] == pytest.approx(35.0)
    assert math.isnan(t4.rows[1][1])  # no successful Oboe -> Cello
    sm = tables.success_matrix(rows, "cw", ["Cello", "Oboe"])
    assert sm.rows[0][2] == pytest.approx(200 / 3) and sm.rows[1][1] == 0.0
    md, cp = t4.write(tmp_path, "table4_cw")
    assert md.read_text().count("\n|") >= 3 and cp.read_text().splitlines()[0].startswith("Source")
    tr = [
        {"source_model": "a", "eval_model": "b", "fooled": 1},
        {"source_model": "a", "eval_model": "b", "fooled": 0},
        {"source_model": "b", "eval_model": "a", "fooled": 0},
    ]
    t5 = tables.table5(tr, ["a", "b"])
    assert t5.rows[1] == ("b", 50.0, "NA") and t5.rows[0] == ("a", "NA", 0.0)


def test_figures_are_written(tmp_path):
    rows = [row(adversarial="Telephone"), row(fname="b", adversarial="Oboe", attack="deepfool")]
    p1 = figures.label_distribution(rows, ["deepfool", "cw"], tmp_path / "fig1.png")
    m = np.array([[np.nan, 50.0], [100.0, np.nan]])
    p2 = figures.success_matrix(m, ["Cello", "Oboe"], "cw", tmp_path / "fig2.png")
    t = np.arange(16000) / 32000
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    p3 = figures.spectrograms([("clean", x), ("adv (40.0 dB)", x + 1e-3)], tmp_path / "fig3.png")
    for p in (p1, p2, p3):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_array_store_round_trip_and_resume(tmp_path):
    """Parts appended atomically, keyed by job; a reopened store has them, a later part wins, a
    part torn by a kill is removed, and a read-only store creates and removes nothing."""
    folder = tmp_path / "run" / arrays.FOLDER
    assert len(arrays.ArrayStore(folder, writable=False)) == 0 and not folder.exists()
    s = arrays.ArrayStore(folder)
    a = np.linspace(-1, 1, 1000, dtype=np.float32)
    k1, k2 = ("vgg13", "cw", "a.wav", ""), ("vgg13", "cw", "a.wav", "Oboe")
    s.append({k1: a, k2: a[:10]})
    s.append({("crnn", "deepfool", "b.wav", ""): a[:5] * 2})
    (folder / "part-000002.npz.tmp").write_bytes(b"PK torn")  # killed while writing a part
    ro = arrays.ArrayStore(folder, writable=False)
    assert (folder / "part-000002.npz.tmp").exists() and len(ro) == 3
    r = arrays.ArrayStore(folder)  # reopened to resume
    assert not (folder / "part-000002.npz.tmp").exists()
    assert len(r) == 3 and k2 in r and ("vgg13", "cw", "b.wav", "") not in r
    np.testing.assert_array_equal(r[k1], a)
    assert r[k1].dtype == np.float32 and r[k2].shape == (10,)
    r.append({k1: a + 1})  # a job redone after a kill between its part and its row
    assert len(arrays.ArrayStore(folder)) == 3
    np.testing.assert_array_equal(arrays.ArrayStore(folder)[k1], a + 1)
    assert r.get(("x", "y", "z", "")) is None
    with pytest.raises(ValueError, match="read-only"):
        ro.append({k1: a})
    with pytest.raises(ValueError, match="without"):
        s.append({("vgg13", "cw", "a|b.wav", ""): a})
    # a row's waveform: from the store, else from its WAV file (a run of an older jaxadv)
    from jaxadv import audio

    audio.write_audio(tmp_path / "run" / "x.wav", a, subtype="FLOAT")
    old = row(model="gcnn", adv_file="x.wav")
    np.testing.assert_array_equal(arrays.adversarial(r, old, tmp_path / "run"), a)
    np.testing.assert_array_equal(arrays.adversarial(r, row(target=""), tmp_path / "run"), a + 1)
    assert arrays.adversarial(r, row(model="none"), tmp_path / "run") is None
