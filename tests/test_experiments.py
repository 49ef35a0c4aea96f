"""The experiment commands end to end on the committed demo models (tiny settings): files and
table columns, transfer rows, resume after a kill (and refusal of a resume whose checkpoint,
flags or clips differ), a corrupt clip and an unknown label reported and skipped, and sharding
across 4 host devices giving the same results as one device."""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from jaxadv import audio, demo
from jaxadv import config as C
from jaxadv import datasets as D
from jaxadv.cli import UserError
from jaxadv.experiments import arrays, results, targeted, transfer, untargeted
from jaxadv.experiments import flags as F
from jaxadv.experiments import models as M
from jaxadv.experiments import runfolder as RF
from jaxadv.experiments import runner as R
from jaxadv.experiments import sweep as S

FAST = [
    "--set", "cw.max_iterations=6", "--set", "cw.binary_search_steps=2",
    "--set", "deepfool.steps=4", "--set", "lbfgs.max_iterations=4",
    "--set", "lbfgs.binary_search_steps=1", "--set", "fmn.steps=4", "--set", "ddn.steps=4",
]  # fmt: skip


def run_cmd(module, out: Path, *extra: str) -> R.Run:
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


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def killed(module, argv, monkeypatch) -> None:
    """Run a command through its ``main`` until its first attack sweep, where it is killed."""

    def die(*a, **k):
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as m:
        m.setattr(S, "run_sweep", die)
        m.setattr(S, "run_batch", die)
        with pytest.raises(KeyboardInterrupt):
            module.main([str(a) for a in argv])


def refused(module, argv, capfd) -> str:
    """A command that must stop with a user error: exit status 2, no traceback; its last line."""
    capfd.readouterr()
    with pytest.raises(SystemExit) as e:
        module.main([str(a) for a in argv])
    assert e.value.code == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def check_transfer_rows(out: Path, base: Path, models: list[str]) -> None:
    """transfer.csv in ``out`` has one row per successful DeepFool/C&W example of the run in
    ``base`` and other model that is right on the clean clip, and each row's prediction is that
    model's on the example's waveform (from the array store of ``base``; equal to its WAV file,
    if the run wrote one)."""
    import jax

    trows = read_csv(out / "transfer.csv")
    correct = {(r["model"], r["fname"]) for r in read_csv(out / "clean.csv") if r["correct"] == "1"}
    rows = results.read_rows(base / "results.csv")
    ok = [r for r in rows if r["success"] and r["attack"] in ("deepfool", "cw")]
    want = {
        (r["model"], r["attack"], r["fname"], m)
        for r in ok
        for m in models
        if m != r["model"] and (m, r["fname"]) in correct
    }
    got = {(t["source_model"], t["attack"], t["fname"], t["eval_model"]) for t in trows}
    assert want and got == want and len(trows) == len(want)
    src = {(r["model"], r["attack"], r["fname"]): r for r in ok}
    store = arrays.ArrayStore(base / arrays.FOLDER, writable=False)
    for m in M.load_models(models, {k: demo.models_dir() / k for k in models}, "demo"):
        mine = [t for t in trows if t["eval_model"] == m.name]
        if not mine:
            continue
        waves = []
        for t in mine:
            r = src[(t["source_model"], t["attack"], t["fname"])]
            waves.append(store[results.row_key(r)])
            if r["adv_file"]:
                np.testing.assert_array_equal(waves[-1], audio.load_audio(base / r["adv_file"]))
        labels = [SimpleNamespace(label_index=C.LABEL_INDEX[t["label"]]) for t in mine]
        b = D.pad_batch(waves, labels)
        pred = np.asarray(jax.jit(m.classifier)(m.params, b.x, b.lengths).probs).argmax(-1)
        for t, p in zip(mine, pred, strict=True):
            assert t["eval_prediction"] == C.LABELS[int(p)]
            assert t["fooled"] == str(int(t["eval_prediction"] != t["label"]))
            assert t["label"] == src[(t["source_model"], t["attack"], t["fname"])]["label"]


def test_untargeted_smoke_writes_every_output(tmp_path, untargeted_run):
    out, data, run = untargeted_run.out, untargeted_run.data, untargeted_run.run
    rows = run.store.rows()
    assert {r["attack"] for r in rows} == {"noise", "fgsm", "deepfool", "cw", "fmn", "ddn"}
    assert {r["model"] for r in rows} == {"vgg13", "dense_wav"}
    assert header(out / "results.csv") == list(results.COLUMNS)
    stems = ("table2", "table3a_deepfool", "table3b_cw", "clean_accuracy", "gap_to_best_known")
    for stem in (*stems, "best_known"):
        assert (out / f"{stem}.md").is_file() and (out / f"{stem}.csv").is_file()
    assert header(out / "table2.csv") == ["Attack", "N", "Success %", "New", "GT New", "SNR (dB)"]
    gaps = (out / "gap_to_best_known.csv").read_text().splitlines()
    assert gaps[0] == "Attack,Successful,Gap median,Gap 90th pct" and len(gaps) == 7
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
    assert (out / "report.html").is_file()  # tests/test_report.py looks inside
    # the noise and FGSM rows hit their SNR; every adversarial file is listenable 32 kHz audio
    for r in rows:
        if r["attack"] in ("noise", "fgsm"):
            assert r["snr_db"] == pytest.approx(20.0, abs=1e-3)
    import soundfile as sf

    info = sf.info(out / rows[0]["adv_file"])
    assert info.samplerate == C.SAMPLE_RATE and info.channels == 1
    # Experiment 3 from this run: real rows, and the untargeted run folder is never written
    before = snapshot(out)
    x = tmp_path / "x"
    run_cmd(transfer, x, "--data", data, "--models", "vgg13,dense_wav", "--from-untargeted",
            str(out))  # fmt: skip
    assert snapshot(out) == before
    assert not (x / "audio").exists() and results.read_rows(x / "results.csv") == []
    assert "table5" in (x / "report.html").read_text()  # its examples are those of the source
    check_transfer_rows(x, out, ["vgg13", "dense_wav"])


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
        assert f'data-stem="table4_{a}"' in (out / "report.html").read_text()
    out = tmp_path / "x"
    run_cmd(transfer, out, "--data", data, "--models", "vgg13,crnn")
    assert header(out / "transfer.csv") == list(transfer.TRANSFER_COLUMNS)
    assert header(out / "table5.csv") == ["Applied to \\ Examples from", "vgg13", "crnn"]
    check_transfer_rows(out, out, ["vgg13", "crnn"])


def test_resume_after_a_kill_gives_the_same_rows(tmp_path, monkeypatch):
    data = small_data(tmp_path / "data", ("Cello", "Bark", "Gong", "Oboe"))
    flags = ["--data", data, "--models", "vgg13", "--batch-size", "2", "--no-audio"]
    run_cmd(untargeted, tmp_path / "straight", *flags)
    calls = {"n": 0}
    orig = S.run_sweep

    def dying(model, key, cfg, left, waves, seed, slots, on_rows):
        def store_then_die(*a):  # killed after the 4th group of finished jobs was stored
            on_rows(*a)
            calls["n"] += 1
            if calls["n"] == 4:
                raise KeyboardInterrupt("killed")

        return orig(model, key, cfg, left, waves, seed, slots, store_then_die)

    monkeypatch.setattr(S, "run_sweep", dying)
    with pytest.raises(KeyboardInterrupt):
        run_cmd(untargeted, tmp_path / "killed", *flags)
    monkeypatch.setattr(S, "run_sweep", orig)
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
    # the adversarial waveforms too, bit for bit, one per row (--no-audio: no WAV files)
    sa, sb = (arrays.ArrayStore(tmp_path / d / arrays.FOLDER) for d in ("straight", "killed"))
    assert sorted(sa.keys()) == sorted(sb.keys()) and len(sa) == len(a)
    for k in sa.keys():
        np.testing.assert_array_equal(sa[k], sb[k])
    assert not (tmp_path / "straight" / "audio").exists()


def test_programs_compiled_ahead_in_threads_give_the_same_rows(tmp_path, monkeypatch):
    """With the Compiler's worker threads on (the default on accelerators), every sweep program
    is built ahead, each sweep compiles none itself, and the rows equal a run without them."""
    data = small_data(tmp_path / "data", ("Cello", "Oboe"))
    flags = ["--data", data, "--models", "vgg13", "--no-audio"]
    run_cmd(targeted, tmp_path / "plain", *flags)
    built, waited = [], []
    orig_compile, orig_wait = S._compile_part, S.Compiler.wait

    def compile_part(model, part, waves, seed):
        built.append((model.name, part.name))
        return orig_compile(model, part, waves, seed)

    def wait(self, model, part):
        waited.append((model.name, part.name))
        return orig_wait(self, model, part)

    monkeypatch.setattr(S, "_compile_part", compile_part)
    monkeypatch.setattr(S.Compiler, "wait", wait)
    monkeypatch.setattr(S.Compiler.__init__, "__defaults__", (2,))  # 2 workers, even on CPU
    run_cmd(targeted, tmp_path / "ahead", *flags)
    assert sorted(built) == sorted(waited) == [("vgg13", "cw"), ("vgg13", "lbfgs")]

    def table(p):
        rows = results.ResultStore(p / "results.csv").rows()
        return sorted(tuple((k, r[k]) for k in results.COLUMNS if k != "seconds") for r in rows)

    assert table(tmp_path / "plain") == table(tmp_path / "ahead")


def test_corrupt_clip_and_unknown_label_are_reported_by_name_and_skipped(tmp_path, capsys):
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
    # a row whose label is not one of the 41: skipped by name, the sweep goes on
    banjo = keep[1].split(",")
    banjo[0], banjo[1] = "banjo01.flac", "Banjo"
    shutil.copy(data / C.TEST_AUDIO_DIR / keep[1].split(",")[0],
                data / C.TEST_AUDIO_DIR / "banjo01.flac")  # fmt: skip
    (data / C.TEST_CSV).write_text("\n".join([lines[0], *keep, ",".join(banjo)]) + "\n")
    run = run_cmd(untargeted, tmp_path / "u", "--data", str(data), "--models", "vgg13",
                  "--per-class", "4", "--no-audio")  # fmt: skip
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    skipped = (tmp_path / "u" / "skipped.txt").read_text()
    for name in (bad, "banjo01.flac"):
        assert sum(name in ln for ln in printed.splitlines()) == 1, printed  # once, by name
        assert name in skipped
    assert "line 6 (banjo01.flac): unknown label 'Banjo'" in skipped
    cfg = json.loads((tmp_path / "u" / "config.json").read_text())
    assert sorted(cfg["skipped"]) == sorted([bad, "banjo01.flac"])
    assert set(run.waves) == {ln.split(",")[0] for ln in keep[1:]}
    names = {r["fname"] for r in run.store.rows()}
    assert bad not in names and "banjo01.flac" not in names
    assert names == set(run.waves)


def test_a_no_audio_run_has_figure3_and_transfers(tmp_path):
    """--no-audio writes no WAV files, but the waveforms are in the array store: Figure 3 is
    drawn and transfer --from-untargeted works from the run."""
    out = tmp_path / "u"
    data = small_data(tmp_path / "data", ("Cello", "Oboe"))
    models = ["vgg13", "crnn"]
    run = run_cmd(untargeted, out, "--data", data, "--models", ",".join(models), "--no-audio")
    rows = run.store.rows()
    assert rows and all(r["adv_file"] == "" for r in rows) and not (out / "audio").exists()
    assert {results.row_key(r) for r in rows} == set(run.arrays.keys())
    for m in models:
        assert (out / f"figure3_{m}.png").stat().st_size > 5000
    x = tmp_path / "x"
    run_cmd(transfer, x, "--data", data, "--models", ",".join(models), "--from-untargeted",
            str(out), "--no-audio")  # fmt: skip
    check_transfer_rows(x, out, models)


def test_a_changed_command_does_not_mix_into_an_old_run(tmp_path, monkeypatch, capfd):
    """A resume must match the run's fingerprint: settings, checkpoint content, clip content.

    A kill right after the clean pass leaves a run folder; every refused resume writes nothing.
    """
    from jaxadv.checkpoint import load_checkpoint, save_checkpoint

    data = Path(small_data(tmp_path / "data", ("Cello", "Oboe")))
    ck = tmp_path / "ck"
    shutil.copytree(demo.models_dir() / "vgg13", ck)
    out = tmp_path / "u"
    argv = ["--out", out, "--data", data, "--models", "vgg13", "--checkpoint", f"vgg13={ck}",
            *FAST]  # fmt: skip
    killed(untargeted, argv, monkeypatch)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format"] == RF.RUN_FORMAT and cfg["experiment"] == "untargeted"
    assert cfg["command"] == "python -m jaxadv.experiments.untargeted " + shlex.join(map(str, argv))
    before = snapshot(out)

    line = refused(untargeted, [*argv, "--per-class", "2"], capfd)
    assert "other settings: --per-class (the run's 1, this command's 2)" in line
    line = refused(untargeted, [*argv, "--no-audio"], capfd)
    assert "--no-audio (the run wrote audio, this command would not)" in line
    line = refused(untargeted, [*argv, "--set", "cw.max_iterations=7"], capfd)
    assert "vgg13 cw.max_iterations (the run's 6, this command's 7; see --set)" in line
    # another checkpoint at the same path (same architecture, other arrays)
    clf, params, meta = load_checkpoint(ck)
    params["norm"]["mean"] = params["norm"]["mean"] + 1.0
    shutil.rmtree(ck)
    save_checkpoint(ck, clf, params, source=meta["source"])
    line = refused(untargeted, argv, capfd)
    assert f"the vgg13 checkpoint {ck} (its arrays or sidecar differ" in line
    shutil.rmtree(ck)
    shutil.copytree(demo.models_dir() / "vgg13", ck)
    # a clip file replaced by another recording under the same name
    clip = next((data / C.TEST_AUDIO_DIR).iterdir())
    other = next(p for p in (demo.data_dir() / C.TEST_AUDIO_DIR).iterdir() if p.name != clip.name)
    original = clip.read_bytes()
    shutil.copy(other, clip)
    line = refused(untargeted, argv, capfd)
    assert f"clip file(s) {clip.name} (content or label changed" in line
    clip.write_bytes(original)
    assert snapshot(out) == before
    # the same command and files resume (killed again at once)
    killed(untargeted, argv, monkeypatch)


def test_transfer_refuses_an_untargeted_run_of_other_settings(tmp_path, monkeypatch, capfd):
    """--from-untargeted DIR must be made with the same data, clip flags and checkpoints (and
    with audio); a refusal writes nothing, in DIR or in --out."""
    data = Path(small_data(tmp_path / "data", ("Cello", "Oboe")))
    src = tmp_path / "u"
    killed(untargeted, ["--out", src, "--data", data, "--models", "vgg13"], monkeypatch)
    before = snapshot(src)
    x = tmp_path / "x"
    argv = ["--out", x, "--data", data, "--models", "vgg13", "--from-untargeted", src]
    line = refused(transfer, [*argv, "--seed", "1"], capfd)
    assert f"--from-untargeted {src} was made with other settings than this command: --seed" in line
    ck = tmp_path / "ck"
    from jaxadv.checkpoint import load_checkpoint, save_checkpoint

    clf, params, meta = load_checkpoint(demo.models_dir() / "vgg13")
    params["norm"]["std"] = params["norm"]["std"] * 2
    save_checkpoint(ck, clf, params, source=meta["source"])
    line = refused(transfer, [*argv, "--checkpoint", f"vgg13={ck}"], capfd)
    assert f"the vgg13 checkpoint {ck} (its arrays or sidecar differ" in line
    quiet = tmp_path / "q"
    killed(untargeted, ["--out", quiet, "--data", data, "--models", "vgg13", "--no-audio"],
           monkeypatch)  # fmt: skip
    shutil.rmtree(quiet / arrays.FOLDER)  # as a --no-audio run of a jaxadv without the store
    line = refused(transfer, [*argv[:-1], quiet], capfd)
    assert "that run was made with --no-audio by an older jaxadv" in line
    assert snapshot(src) == before and not x.exists()


def test_skipped_txt_follows_the_clips_and_a_short_class_is_recorded(tmp_path, monkeypatch,
                                                                     capfd):  # fmt: skip
    """A clip fixed before a resume leaves skipped.txt and config.json alike; a class with
    fewer clips than --per-class is logged and recorded."""
    data = Path(small_data(tmp_path / "data", ("Cello", "Oboe")))
    clip = sorted((data / C.TEST_AUDIO_DIR).iterdir())[0]
    good = clip.read_bytes()
    clip.write_bytes(b"RIFF not a wav")
    out = tmp_path / "u"
    argv = ["--out", out, "--data", data, "--models", "vgg13", "--per-class", "2", "--no-audio"]
    killed(untargeted, argv, monkeypatch)
    cap = capfd.readouterr()
    assert sum(clip.name in ln for ln in (cap.out + cap.err).splitlines()) == 1
    assert "--per-class 2: 2 class(es) have fewer clips, all of theirs are used: " in cap.err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["per_class_shortfall"] == {"Cello": 1, "Oboe": 1}
    assert cfg["skipped"] == [clip.name] and clip.name not in cfg["clips"]
    assert (out / "skipped.txt").read_text().startswith(clip.name + "\t")
    clip.write_bytes(good)  # fixed: the resume attacks it, and nothing says it was skipped
    killed(untargeted, argv, monkeypatch)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["skipped"] == [] and clip.name in cfg["clips"]
    assert not (out / "skipped.txt").exists()


def test_resume_progress_counts_each_example_once(tmp_path, monkeypatch):
    """A job that lost its row to a torn write is redone alone (job-level resume), counted once."""
    import tqdm

    clips = demo.eval_clips()[:5]
    waves = {c.fname: np.zeros(1000, np.float32) for c in clips}
    jobs = [S.Job(c) for c in clips]
    ran = []

    def fake(model, key, cfg, left, waves, seed, slots, on_rows):
        ran.append([j.clip.fname for j in left])
        for j in left:  # one job finishes at a time, as the engine's sweep reports them
            z = np.zeros(1)
            met = SimpleNamespace(
                original=z.astype(int), new_label=z.astype(int), success=z, gt_confidence=z,
                new_confidence=z, gt_confidence_adv=z, target_confidence=z, snr_db=z, l2=z,
                linf=z, steps=z.astype(int),
            )  # fmt: skip
            on_rows([j], met, np.zeros((1, 1000), np.float32), 0.0)

    bars = []

    class Recorded(tqdm.tqdm):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            bars.append(self)

    monkeypatch.setattr(S, "run_sweep", fake)
    monkeypatch.setattr(tqdm, "tqdm", Recorded)
    model = M.LoadedModel("vgg13", None, None, {}, Path("ck"))
    attacks = {"deepfool": ("deepfool", None)}
    path = tmp_path / "results.csv"

    def sweep():
        bars.clear()
        S.sweep(tmp_path, results.ResultStore(path), model, attacks, jobs, waves, batch_size=2,
                seed=0, write_audio=False, progress=True)  # fmt: skip
        (bar,) = bars
        return bar

    bar = sweep()
    assert bar.n == bar.total == 5 and ran == [[c.fname for c in clips]]
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))  # the last job now lacks its row
    bar = sweep()
    assert bar.total == 5 and bar.initial == 4 and bar.n == 5
    assert ran[-1] == [clips[-1].fname]  # only the unfinished job ran again
    assert len(results.ResultStore(path)) == 5


def test_overrides_are_typed_and_checked():
    cfgs = F.attack_configs("untargeted", "demo", "vgg13")
    new = F.apply_overrides(cfgs, ["cw.max_iterations=7", "cw.abort_early=false",
                                   "deepfool.candidates=none"])  # fmt: skip
    assert new["cw"][1].max_iterations == 7 and new["cw"][1].abort_early is False
    assert new["deepfool"][1].candidates is None
    for bad in ("cw.nope=1", "zz.steps=1", "cw.max_iterations"):
        with pytest.raises(UserError):
            F.apply_overrides(cfgs, [bad])


def test_paper_preset_uses_the_authors_settings():
    from jaxadv import attacks as A

    u = F.attack_configs("untargeted", "paper", "vgg13")
    assert u["cw"][1] == A.CWConfig.authors() and u["deepfool"][1] == A.DeepFoolConfig.authors()
    assert u["noise"][1].snr_db == 20.0 and u["fgsm"][1].snr_db == 20.0
    t = F.attack_configs("targeted", "paper", "dense_mel")
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
    jobs = [S.Job(c) for c in clips]
    lengths = {c.fname: 40000 if i % 3 else 100000 for i, c in enumerate(clips)}  # two buckets
    batches = S.job_batches(jobs, lengths, batch)
    for bucket in (65536, 131072):
        sizes = [len(b) for b in batches if (lengths[b[0].clip.fname] > 65536) == (bucket > 65536)]
        assert max(sizes) <= batch and max(sizes) - min(sizes) <= 1
        assert len(sizes) == -(-sum(sizes) // batch)
    flat = [j for b in batches for j in b]
    assert sorted(j.clip.fname for j in flat) == sorted(c.fname for c in clips)
    for b in batches:  # one bucket per batch, job order kept
        assert len({lengths[j.clip.fname] > 65536 for j in b}) == 1
        assert [clips.index(j.clip) for j in b] == sorted(clips.index(j.clip) for j in b)


def test_run_sweep_stores_every_job_when_more_jobs_than_slots_finish_at_once(monkeypatch):
    """A chunk can finish up to 2 x slots jobs (the slots' running jobs and the next ones): every
    job still gets its metrics and waveform, equal to attacking it alone. The engine's sweep is
    made to report all its jobs in one call, more than the slots."""
    from _attack_helpers import chunked_problem

    from jaxadv import attacks as A
    from jaxadv.datasets import Clip

    fn, params, x, lengths, labels = chunked_problem()
    clips = [
        Clip(f"c{i}.wav", C.LABELS[int(labels[i % 6])], int(labels[i % 6]), Path("."), "train")
        for i in range(9)
    ]
    waves = {c.fname: np.asarray(x[i % 6, : int(lengths[i % 6])]) for i, c in enumerate(clips)}
    jobs = [S.Job(c) for c in clips]
    model = M.LoadedModel("toy", fn, params, {}, Path("ck"))
    cfg = A.DeepFoolConfig(steps=20)
    real_sweep = A.sweep

    def all_at_once(*a, on_results, **k):
        items = []
        out = real_sweep(*a, on_results=items.extend, **k)
        on_results(items)
        return out

    monkeypatch.setattr(A, "sweep", all_at_once)
    calls = []

    def on_rows(b, met, adv, secs):
        assert len(b) == len(met.snr_db) == adv.shape[0]
        calls.append((b, met, adv))

    S.run_sweep(model, "deepfool", cfg, jobs, waves, 0, 2, on_rows)
    ((b, met, adv),) = calls
    assert sorted(j.clip.fname for j in b) == sorted(c.fname for c in clips)
    for i, j in enumerate(b):
        k = int(j.clip.fname[1:-4]) % 6
        one = (x[k : k + 1], lengths[k : k + 1], labels[k : k + 1])
        alone = A.deepfool(fn, params, *one, config=cfg)
        n = int(lengths[k])
        np.testing.assert_allclose(adv[i, :n], np.asarray(alone.adversarial)[0, :n], atol=1e-6)
        ref = A.evaluate(fn, params, *one, alone)
        np.testing.assert_allclose(met.snr_db[i], np.asarray(ref.snr_db)[0], rtol=1e-4)
        assert int(met.success[i]) == int(np.asarray(ref.success)[0])


def test_sweep_slots_follow_the_backend(monkeypatch):
    """About 8 jobs per slot on a CPU, 4 elsewhere, at most --batch-size, a multiple of the
    local devices."""
    import jax

    assert S.sweep_slots(30, 16) == 4 and S.sweep_slots(200, 16) == 16 and S.sweep_slots(3, 16) == 1
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert S.sweep_slots(30, 16) == 8
    monkeypatch.setattr(jax, "local_device_count", lambda: 4)
    assert S.sweep_slots(30, 16) == 8 and S.sweep_slots(10, 16) == 4
