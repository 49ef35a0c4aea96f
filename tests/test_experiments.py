"""The experiment commands end to end on the committed demo models (tiny settings): files and
table columns, resume after a kill, a corrupt clip reported and skipped, and sharding across 4
host devices giving the same results as one device."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxadv import config as C
from jaxadv import demo
from jaxadv.experiments import _common as E
from jaxadv.experiments import results, targeted, transfer, untargeted

FAST = [
    "--set", "cw.max_iterations=6", "--set", "cw.binary_search_steps=2",
    "--set", "deepfool.steps=4", "--set", "lbfgs.max_iterations=4",
    "--set", "lbfgs.binary_search_steps=1",
]  # fmt: skip


def run_cmd(module, out: Path, *extra: str) -> E.Run:
    """Run a command as its ``main`` would, returning the run."""
    return module.run(module.build_parser().parse_args(["--out", str(out), *FAST, *extra]))


def small_data(root: Path, classes: tuple[str, ...], per_class: int = 1) -> str:
    """A copy of the demo set in FSDKaggle2018 layout with the shortest clips of ``classes``.

    Keeps the experiment tests to a few short clips (the committed set has 156 of 1.5-3 s).
    """
    import soundfile as sf

    (root / C.TEST_AUDIO_DIR).mkdir(parents=True)
    src = demo.data_dir()
    lines = (src / C.TEST_CSV).read_text().splitlines()
    keep = []
    for cls in classes:
        mine = [ln for ln in lines[1:] if ln.split(",")[1] == cls]
        mine.sort(key=lambda ln: sf.info(src / C.TEST_AUDIO_DIR / ln.split(",")[0]).frames)
        keep += mine[:per_class]
    for ln in keep:
        f = ln.split(",")[0]
        shutil.copy(src / C.TEST_AUDIO_DIR / f, root / C.TEST_AUDIO_DIR / f)
    (root / C.TEST_CSV).write_text("\n".join([lines[0], *keep]) + "\n")
    return str(root)


def header(path: Path) -> list[str]:
    with open(path) as f:
        return next(csv.reader(f))


def test_untargeted_smoke_writes_every_output(tmp_path):
    out = tmp_path / "u"
    data = small_data(tmp_path / "data", ("Cello", "Bark", "Gong"))
    run = run_cmd(untargeted, out, "--data", data, "--models", "vgg13,dense_wav")
    rows = run.store.rows()
    assert {r["attack"] for r in rows} == {"noise", "fgsm", "deepfool", "cw"}
    assert {r["model"] for r in rows} == {"vgg13", "dense_wav"}
    assert header(out / "results.csv") == list(results.COLUMNS)
    for stem in ("table2", "table3a_deepfool", "table3b_cw", "clean_accuracy"):
        assert (out / f"{stem}.md").is_file() and (out / f"{stem}.csv").is_file()
    assert header(out / "table2.csv") == ["Attack", "N", "Success %", "New", "GT New", "SNR (dB)"]
    assert header(out / "table3b_cw.csv")[2:] == [
        "Acc. (success %)",
        "GT",
        "New",
        "GT new",
        "SNR (dB)",
    ]
    assert (out / "figure1.png").stat().st_size > 5000
    assert list(out.glob("figure3_*.png"))
    assert (out / "config.json").is_file() and (out / "results.json").is_file()
    # the noise and FGSM rows hit their SNR; every adversarial file is listenable 32 kHz audio
    for r in rows:
        if r["attack"] in ("noise", "fgsm"):
            assert r["snr_db"] == pytest.approx(20.0, abs=1e-3)
    import soundfile as sf

    info = sf.info(out / rows[0]["adv_file"])
    assert info.samplerate == C.SAMPLE_RATE and info.channels == 1


def test_targeted_and_transfer_smoke(tmp_path):
    out = tmp_path / "t"
    data = small_data(tmp_path / "data", ("Cello", "Oboe"))
    run = run_cmd(targeted, out, "--data", data, "--models", "vgg13")
    rows = run.store.rows()
    assert rows and {r["attack"] for r in rows} == {"cw", "lbfgs"}
    assert all(r["target"] in C.MUSIC_CLASSES and r["target"] != r["label"] for r in rows)
    for a in ("cw", "lbfgs"):
        assert header(out / f"table4_{a}.csv") == ["Source \\ Target", *C.MUSIC_CLASSES]
        assert (out / f"figure2_{a}.png").stat().st_size > 5000
    out = tmp_path / "x"
    run_cmd(transfer, out, "--data", data, "--models", "vgg13,crnn")
    assert header(out / "transfer.csv") == list(transfer.TRANSFER_COLUMNS)
    assert header(out / "table5.csv") == ["Applied to \\ Examples from", "vgg13", "crnn"]


def test_resume_after_a_kill_gives_the_same_rows(tmp_path, monkeypatch):
    data = small_data(tmp_path / "data", ("Cello", "Bark", "Gong", "Oboe"))
    flags = ["--data", data, "--models", "vgg13", "--batch-size", "2", "--no-audio"]
    run_cmd(untargeted, tmp_path / "straight", *flags)
    calls = {"n": 0}
    orig = E.run_batch

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("killed")
        return orig(*a, **k)

    monkeypatch.setattr(E, "run_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        run_cmd(untargeted, tmp_path / "killed", *flags)
    monkeypatch.setattr(E, "run_batch", orig)
    with open(tmp_path / "killed" / "results.csv", "a") as f:
        f.write("vgg13,cw,torn")  # a write torn by the kill
    n_before = len(results.ResultStore(tmp_path / "killed" / "results.csv"))
    assert 0 < n_before
    run_cmd(untargeted, tmp_path / "killed", *flags)

    def table(p):
        rows = results.ResultStore(p / "results.csv").rows()
        return sorted(tuple((k, r[k]) for k in results.COLUMNS if k != "seconds") for r in rows)

    a, b = table(tmp_path / "straight"), table(tmp_path / "killed")
    assert len(a) == len(b) > n_before and a == b


def test_corrupt_clip_is_reported_by_name_and_skipped(tmp_path, capsys):
    data = tmp_path / "data"
    (data / C.TEST_AUDIO_DIR).mkdir(parents=True)
    src = demo.data_dir()
    lines = (src / C.TEST_CSV).read_text().splitlines()
    keep = [ln for ln in lines[1:] if ln.split(",")[1] in ("Cello", "Oboe")][:4]
    for ln in keep:
        f = ln.split(",")[0]
        shutil.copy(src / C.TEST_AUDIO_DIR / f, data / C.TEST_AUDIO_DIR / f)
    bad = keep[0].split(",")[0]
    (data / C.TEST_AUDIO_DIR / bad).write_bytes(b"fLaC\x00\x00 not really a flac")
    (data / C.TEST_CSV).write_text("\n".join([lines[0], *keep]) + "\n")
    run = run_cmd(untargeted, tmp_path / "u", "--data", str(data), "--models", "vgg13",
                  "--per-class", "4", "--no-audio")  # fmt: skip
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert bad in printed and bad in (tmp_path / "u" / "skipped.txt").read_text()
    assert set(run.waves) == {ln.split(",")[0] for ln in keep[1:]}
    assert bad not in {r["fname"] for r in run.store.rows()}


def test_a_changed_command_does_not_mix_into_an_old_run(tmp_path):
    data = small_data(tmp_path / "data", ("Cello", "Oboe"))
    run_cmd(untargeted, tmp_path / "u", "--data", data, "--models", "vgg13", "--no-audio")
    with pytest.raises(SystemExit, match="other settings"):
        run_cmd(untargeted, tmp_path / "u", "--data", data, "--models", "vgg13", "--per-class", "2")


def test_overrides_are_typed_and_checked():
    cfgs = E.attack_configs("untargeted", "demo", "vgg13")
    new = E.apply_overrides(cfgs, ["cw.max_iterations=7", "cw.abort_early=false",
                                   "deepfool.candidates=none"])  # fmt: skip
    assert new["cw"][1].max_iterations == 7 and new["cw"][1].abort_early is False
    assert new["deepfool"][1].candidates is None
    for bad in ("cw.nope=1", "zz.steps=1", "cw.max_iterations"):
        with pytest.raises(SystemExit):
            E.apply_overrides(cfgs, [bad])


def test_paper_preset_uses_the_authors_settings():
    from jaxadv import attacks as A

    u = E.attack_configs("untargeted", "paper", "vgg13")
    assert u["cw"][1] == A.CWConfig.authors() and u["deepfool"][1] == A.DeepFoolConfig.authors()
    assert u["noise"][1].snr_db == 20.0 and u["fgsm"][1].snr_db == 20.0
    t = E.attack_configs("targeted", "paper", "dense_mel")
    assert t["cw"][1] == A.CWConfig.authors_cochlear_targeted()
    assert t["lbfgs"][1] == A.LBFGSConfig.authors_cochlear()


def test_sharding_over_four_devices_equals_one_device(tmp_path):
    """One sweep batch through the sharded path with 1 and 4 XLA host devices: equal results."""
    probe = Path(__file__).with_name("_sharding_probe.py")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    outs = {}
    for n in (1, 4):
        e = dict(env, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        outs[n] = tmp_path / f"d{n}.npz"
        subprocess.run([sys.executable, str(probe), str(outs[n])], env=e, check=True)
    a, b = np.load(outs[1]), np.load(outs[4])
    assert int(a["devices"]) == 1 and int(b["devices"]) == 4
    for k in a.files:
        if k != "devices":
            np.testing.assert_allclose(a[k].astype(float), b[k].astype(float), rtol=0, atol=1e-6)


@pytest.mark.parametrize("n,batch", [(26, 16), (25, 16), (16, 16), (5, 16), (33, 8)])
def test_batches_are_balanced_per_bucket(n, batch):
    """Near-equal batches per bucket (one compiled shape after padding), all jobs once, in order."""
    clips = demo.eval_clips()[:n]
    jobs = [E.Job(c) for c in clips]
    lengths = {c.fname: 40000 if i % 3 else 100000 for i, c in enumerate(clips)}  # two buckets
    batches = E.plan_batches(jobs, lengths, batch)
    for bucket in (65536, 131072):
        sizes = [len(b) for b in batches if (lengths[b[0].clip.fname] > 65536) == (bucket > 65536)]
        assert max(sizes) <= batch and max(sizes) - min(sizes) <= 1
        assert len(sizes) == -(-sum(sizes) // batch)
    flat = [j for b in batches for j in b]
    assert sorted(j.clip.fname for j in flat) == sorted(c.fname for c in clips)
    for b in batches:  # one bucket per batch, job order kept
        assert len({lengths[j.clip.fname] > 65536 for j in b}) == 1
        assert [clips.index(j.clip) for j in b] == sorted(clips.index(j.clip) for j in b)
