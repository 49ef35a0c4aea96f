"""python -m jaxadv.experiments.vad on two short clips: rows, WAVs at 16 kHz, the figure, the
resume, and the one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from jaxadv.experiments import vad as E
from jaxadv.experiments.results import read_rows
from tests.test_vad_model import params  # noqa: F401  (skips without the wheel; fails under CI)


def _argv(out, *extra):
    speech = E.speech_dir() / "speech_c.flac"
    return ["--out", str(out), "--speech", str(speech), "--nonspeech", "1",
            "--attacks", "deepfool,fmn", "--set", "fmn.steps=20", "--set", "fmn.search_steps=20",
            "--decisions", "any", "--no-progress", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def vad_run(tmp_path_factory, params):  # noqa: F811
    out = tmp_path_factory.mktemp("vad") / "run"
    E.main(_argv(out))
    return out


def test_both_directions_are_attacked_and_stored(vad_run):
    rows = read_rows(vad_run / E.FILE, E._schema())
    assert {(r["attack"], r["direction"]) for r in rows} == {
        (a, d) for a in ("deepfool", "fmn") for d in E.DIRECTIONS.values()
    }
    for r in rows:
        assert r["success"] == 1 and np.isfinite(r["snr_db"]) and r["snr_db"] > 0
        wav = vad_run / r["adv_file"]
        info = sf.info(str(wav))
        assert info.samplerate == 16000 and info.subtype == "FLOAT"
        if r["direction"] == "speech → no speech":  # decision "any": every window silenced
            assert r["clean_speech_windows"] > 0.5 and r["adv_speech_windows"] == 0.0
            assert r["adv_speech_prob"] < 0.5
        else:  # one window is enough
            assert r["clean_speech_windows"] == 0.0 and r["adv_speech_windows"] > 0.0
            assert r["adv_speech_prob"] >= 0.5
    # the stored waveform is the WAV's
    r = rows[0]
    npy = np.load(vad_run / "adversarial" / "any" / r["attack"] / f"{r['clip']}.npy")
    np.testing.assert_array_equal(npy, sf.read(str(vad_run / r["adv_file"]), dtype="float32")[0])
    assert (vad_run / "figure_vad_any.png").stat().st_size > 10_000
    table = (vad_run / "vad_table.md").read_text()
    assert "speech → no speech" in table and "no speech → speech" in table
    cfg = json.loads((vad_run / "config.json").read_text())
    assert cfg["experiment"] == "vad" and cfg["weights"].endswith("silero_vad.onnx")


def test_a_rerun_resumes_and_other_settings_are_refused(vad_run, capfd):
    before = (vad_run / E.FILE).read_bytes()
    E.main(_argv(vad_run))
    assert (vad_run / E.FILE).read_bytes() == before  # nothing ran again
    capfd.readouterr()
    with pytest.raises(SystemExit) as e:
        E.main(_argv(vad_run, "--seed", "3"))
    assert e.value.code == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a VAD run with other settings" in err[0], err
    assert (vad_run / E.FILE).read_bytes() == before


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--attacks", "pgd"], "--attacks: unknown ['pgd']"),
        (["--decisions", "max"], "--decisions: unknown ['max']"),
        (["--speech", "nope.wav"], "--speech nope.wav: no such file"),
        (["--set", "fmn.nope=1"], "FMNConfig has no field 'nope'"),
    ],
)
def test_bad_flags_are_one_line(tmp_path, capfd, params, flags, message):  # noqa: F811
    with pytest.raises(SystemExit) as e:
        E.main(["--out", str(tmp_path / "run"), "--no-progress", *flags])
    assert e.value.code == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run" / E.FILE).exists()


def test_a_folder_of_other_files_is_never_touched(tmp_path, capfd, params):  # noqa: F811
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        E.main(_argv(out))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
