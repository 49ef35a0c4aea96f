"""User errors of the commands: one line on stderr, exit status 2, no traceback (``--debug``
re-raises), and nothing written where nothing should be (a folder of the user's own files, a
mistyped --from-untargeted). The commands run in-process through their ``main``; every case here
fails before an attack runs, most before a model is loaded."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxadv import cli, demo
from jaxadv import config as C
from jaxadv.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from jaxadv.experiments import flags as F
from jaxadv.experiments import models as M
from jaxadv.experiments import runfolder as RF
from jaxadv.experiments import targeted, transfer, untargeted


def tiny_data(root: Path, classes=("Cello", "Oboe"), bad: int = 0) -> Path:
    """A test-CSV dataset of the first demo clip of each class; the first ``bad`` are damaged."""
    src = demo.data_dir()
    lines = (src / C.TEST_CSV).read_text().splitlines()
    keep = [next(ln for ln in lines[1:] if ln.split(",")[1] == c) for c in classes]
    (root / C.TEST_AUDIO_DIR).mkdir(parents=True)
    for i, ln in enumerate(keep):
        f = ln.split(",")[0]
        dst = root / C.TEST_AUDIO_DIR / f
        if i < bad:
            dst.write_bytes(b"fLaC\x00\x00 not really a flac")
        else:
            shutil.copy(src / C.TEST_AUDIO_DIR / f, dst)
    (root / C.TEST_CSV).write_text("\n".join([lines[0], *keep]) + "\n")
    return root


def fail(main, argv, capfd) -> str:
    """Run a command that must fail as a user error; returns its one stderr line."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert e.value.code == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Event loop is closed" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_data(tmp_path_factory.mktemp("data"))


# --- --out -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "files",
    [
        {"config.json": b'{"mine": 1}\n', "clean.csv": b"a,b\n1,2\n", "table2.md": b"# notes\n",
         "figure1.png": b"\x89PNG my figure"},
        {"results.csv": b"x,y\n1,2\n"},
        {"config.json": b"{ not json"},
        {"config.json": b'{"format": "jaxadv-checkpoint", "experiment": "untargeted"}'},
    ],
)  # fmt: skip
def test_a_folder_that_is_not_a_run_folder_is_refused_and_untouched(tmp_path, capfd, files):
    out = tmp_path / "mine"
    out.mkdir()
    for name, content in files.items():
        (out / name).write_bytes(content)
    before = snapshot(out)
    line = fail(untargeted.main, ["--out", out, "--models", "vgg13"], capfd)
    assert line.startswith("python -m jaxadv.experiments.untargeted: error: --out ")
    assert "not a jaxadv run folder" in line and "new or empty folder" in line
    assert snapshot(out) == before


def test_a_run_folder_of_an_older_jaxadv_is_refused(tmp_path, capfd):
    out = tmp_path / "old"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"experiment": "untargeted", "fingerprint": {}}))
    (out / "results.csv").write_text("model,attack\n")
    before = snapshot(out)
    line = fail(untargeted.main, ["--out", out], capfd)
    assert "holds a run of an older jaxadv" in line and "choose another --out" in line
    assert snapshot(out) == before


def test_a_run_folder_of_another_experiment_is_refused(tmp_path, capfd):
    out = tmp_path / "t"
    out.mkdir()
    (out / "config.json").write_text(
        json.dumps({"format": RF.RUN_FORMAT, "experiment": "targeted"})
    )
    before = snapshot(out)
    line = fail(untargeted.main, ["--out", out], capfd)
    assert "holds a 'targeted' run, not a 'untargeted' one" in line
    assert snapshot(out) == before


def test_a_folder_that_cannot_be_created_is_one_line(tmp_path, capfd, monkeypatch, data):
    """The default runs/ in a read-only working folder (root ignores modes: mkdir is refused
    by a stand-in then)."""
    work = tmp_path / "ro"
    work.mkdir()
    monkeypatch.chdir(work)
    work.chmod(0o555)
    if os.geteuid() == 0:
        real = Path.mkdir

        def refuse(self, *a, **k):
            if str(self).startswith("runs"):
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *a, **k)

        monkeypatch.setattr(Path, "mkdir", refuse)
    try:
        line = fail(untargeted.main, ["--data", data, "--models", "vgg13", "--no-audio"], capfd)
    finally:
        work.chmod(0o755)
    assert "cannot create the run folder runs/untargeted-demo" in line
    assert "Permission denied" in line and "--out" in line
    assert not (work / "runs").exists()


# --- flags -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags,expect",
    [
        (["--per-class", "-1"], "--per-class must be at least 1, got -1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--models", "vgg13,resnet"], "--models: unknown ['resnet']"),
        (["--checkpoint", "vgg13"], "--checkpoint 'vgg13': expected MODEL=DIR"),
        (["--checkpoint", "crnn=x", "--models", "vgg13"], "is not among --models"),
        (["--set", "cw.max_iterations=-5"], "CWConfig: max_iterations must be an integer >= 1"),
        (["--set", "cw.max_iterations=many"], "--set 'cw.max_iterations=many': invalid literal"),
        (["--set", "cw.nope=1"], "CWConfig has no field 'nope'"),
        (["--set", "cw"], "expected ATTACK.FIELD=VALUE"),
    ],
)
def test_bad_flags_are_one_line(tmp_path, capfd, flags, expect):
    out = tmp_path / "u"
    line = fail(untargeted.main, ["--out", out, *flags], capfd)
    assert expect in line
    assert not out.exists()


def test_a_range_check_of_a_config_becomes_a_set_error():
    """Whatever an attack config's __post_init__ refuses is a one-line --set error."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        steps: int = 3

        def __post_init__(self):
            if self.steps < 1:
                raise ValueError(f"Cfg: steps must be >= 1, got {self.steps}")

    with pytest.raises(cli.UserError, match=r"--set 'x.steps=0': Cfg: steps must be >= 1, got 0"):
        F.apply_overrides({"x": ("deepfool", Cfg())}, ["x.steps=0"])


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(cli.UserError, match="--per-class must be at least 1"):
        untargeted.main(["--out", str(tmp_path / "u"), "--per-class", "0", "--debug"])


# --- data --------------------------------------------------------------------------------------


def test_missing_data_csv_or_audio_folder_is_one_line(tmp_path, capfd):
    line = fail(untargeted.main, ["--data", tmp_path / "nope", "--out", tmp_path / "u"], capfd)
    assert "--data" in line and "nope: no such folder" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    line = fail(targeted.main, ["--data", empty, "--out", tmp_path / "u"], capfd)
    assert f"neither {C.TRAIN_CSV} nor {C.TEST_CSV}" in line
    line = fail(untargeted.main, ["--data", empty, "--split", "train", "--out", tmp_path / "u"],
                capfd)  # fmt: skip
    assert f"'{empty / C.TRAIN_CSV}' does not exist" in line
    (empty / C.TEST_CSV).write_text("fname,label,usage,freesound_id,license\n")
    line = fail(untargeted.main, ["--data", empty, "--out", tmp_path / "u"], capfd)
    assert f"audio folder '{empty / C.TEST_AUDIO_DIR}'" in line and "does not exist" in line
    assert not (tmp_path / "u").exists()


def test_every_clip_failing_is_an_error(tmp_path, capfd):
    bad = tiny_data(tmp_path / "bad", bad=2)
    out = tmp_path / "u"
    with pytest.raises(SystemExit) as e:
        untargeted.main(["--data", str(bad), "--out", str(out), "--models", "vgg13"])
    assert e.value.code == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "none of the 2 selected clip(s) could be loaded" in last and "--data" in last
    assert not out.exists()


# --- checkpoints -------------------------------------------------------------------------------


def copy_model(tmp_path: Path, name: str = "vgg13") -> Path:
    d = tmp_path / f"ckpt_{name}"
    shutil.copytree(demo.models_dir() / name, d)
    return d


def test_missing_or_invalid_checkpoint_is_one_line(tmp_path, capfd, data):
    argv = ["--data", data, "--models", "vgg13", "--out", tmp_path / "u"]
    line = fail(untargeted.main, [*argv, "--checkpoint", f"vgg13={tmp_path / 'nope'}"], capfd)
    assert "checkpoint folder(s) not found: vgg13:" in line
    d = copy_model(tmp_path)
    (d / "jaxadv.json").write_text("{ no")
    line = fail(untargeted.main, [*argv, "--checkpoint", f"vgg13={d}"], capfd)
    assert "jaxadv.json is not valid JSON" in line
    assert not (tmp_path / "u").exists()


def _largest_array_file(d: Path) -> Path:
    files = [p for p in (d / "params").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_orbax_file_is_a_checkpoint_error(tmp_path, capfd, data, damage):
    d = copy_model(tmp_path)
    f = _largest_array_file(d)
    raw = bytearray(f.read_bytes())
    if damage == "truncate":
        f.write_bytes(raw[: len(raw) // 2])
    else:
        raw[len(raw) // 5 : len(raw) // 5 + 4000] = bytes(
            b ^ 0x5A for b in raw[len(raw) // 5 :][:4000]
        )
        f.write_bytes(raw)
    with pytest.raises(
        CheckpointError, match=rf"^{re.escape(str(d))}: damaged checkpoint.*re-conv"
    ):
        load_checkpoint(d)
    capfd.readouterr()
    line = fail(untargeted.main, ["--data", data, "--models", "vgg13", "--out", tmp_path / "u",
                                  "--checkpoint", f"vgg13={d}"], capfd)  # fmt: skip
    assert f"{d}: damaged checkpoint" in line and "re-train it" in line


def test_models_with_different_label_lists_are_refused(tmp_path, capfd, data):
    # each model's class names come from its sidecar; one run needs one class order
    d = copy_model(tmp_path)
    meta = json.loads((d / "jaxadv.json").read_text())
    meta["labels"][3], meta["labels"][6] = meta["labels"][6], meta["labels"][3]
    (d / "jaxadv.json").write_text(json.dumps(meta))
    line = fail(untargeted.main, ["--data", data, "--models", "vgg13,crnn", "--out",
                                  tmp_path / "u", "--checkpoint", f"vgg13={d}"], capfd)  # fmt: skip
    assert "error: models vgg13 and crnn have different label lists" in line, line
    assert f"label 3 is {C.LABELS[6]!r} vs {C.LABELS[3]!r}" in line
    assert "separate runs" in line
    assert not (tmp_path / "u").exists()


def test_a_checkpoint_with_nan_outputs_is_refused(tmp_path, capfd, data):
    import jax

    clf, params, meta = load_checkpoint(demo.models_dir() / "vgg13")
    params = jax.tree_util.tree_map(np.asarray, params)
    params["model"]["params"]["dense"]["bias"] = np.full_like(
        params["model"]["params"]["dense"]["bias"], np.nan
    )
    d = tmp_path / "nan"
    save_checkpoint(d, clf, params, source="trained")
    line = fail(untargeted.main, ["--data", data, "--models", "vgg13", "--out", tmp_path / "u",
                                  "--checkpoint", f"vgg13={d}"], capfd)  # fmt: skip
    assert f"{d}: model vgg13 gives non-finite outputs (NaN or Inf) on the clean clip" in line
    assert not (tmp_path / "u").exists()


def test_the_paper_preset_logs_the_front_end_it_replaces(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="jaxadv"):
        (m,) = M.load_models(["vgg13"], {"vgg13": demo.models_dir() / "vgg13"}, "paper")
    assert m.classifier.frontend.name == "iqbal_attack"
    assert "--preset paper: vgg13 runs with the authors' front-end (iqbal_attack" in caplog.text
    assert "instead of its checkpoint's (iqbal" in caplog.text


# --- transfer --from-untargeted ----------------------------------------------------------------


def test_from_untargeted_must_be_an_untargeted_run_and_is_never_written(tmp_path, capfd, data):
    out = tmp_path / "x"
    typo = tmp_path / "runs" / "untargetd-demo"
    line = fail(transfer.main, ["--data", data, "--out", out, "--from-untargeted", typo], capfd)
    assert f"--from-untargeted {typo}: no such folder" in line
    assert not typo.exists() and not out.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("my,own\n1,2\n")
    (mine / "config.json").write_text(json.dumps({"format": RF.RUN_FORMAT,
                                                  "experiment": "targeted"}))  # fmt: skip
    before = snapshot(mine)
    line = fail(transfer.main, ["--data", data, "--out", out, "--from-untargeted", mine], capfd)
    assert "not an untargeted run folder" in line
    assert snapshot(mine) == before and not out.exists()


# --- training commands -------------------------------------------------------------------------


def test_train_commands_give_one_line_errors(tmp_path, capfd, monkeypatch):
    from jaxadv.train import __main__ as train_main
    from jaxadv.train import demo as train_demo

    line = fail(train_main.main, ["--model", "vgg13", "--data", tmp_path / "nope",
                                  "--out", tmp_path / "o"], capfd)  # fmt: skip
    assert line.startswith("python -m jaxadv.train: error: --data") and "no such folder" in line
    (tmp_path / "d").mkdir()
    line = fail(train_main.main, ["--model", "vgg13", "--data", tmp_path / "d",
                                  "--out", tmp_path / "o"], capfd)  # fmt: skip
    assert f"'{tmp_path / 'd' / C.TRAIN_CSV}' does not exist" in line
    line = fail(train_demo.main, ["--models", "vgg13,resnet", "--work", tmp_path / "w"], capfd)
    assert "--models: unknown ['resnet']" in line
    with pytest.raises(cli.UserError):
        train_demo.main(["--models", "resnet", "--debug"])
    # measuring models that are not there: refused before anything is rendered
    line = fail(train_demo.main, ["--heldout-only", "--models", "vgg13", "--out", tmp_path / "m",
                                  "--work", tmp_path / "w2"], capfd)  # fmt: skip
    assert "--heldout-only: no trained model 'vgg13'" in line and not (tmp_path / "w2").exists()
    # --base-from a model that is not the first run of the one asked for: refused before rendering
    # (the FluidR3-only vgg13: the same architecture, trained with other settings). The committed
    # recipe has no warm start, so this one is given one here.
    import dataclasses
    import shutil

    from jaxadv import demo

    for name in ("vgg13", "crnn"):
        dm = dataclasses.replace(train_demo.DEMO_MODELS[name], more_epochs=8)
        monkeypatch.setitem(train_demo.DEMO_MODELS, name, dm)

    shutil.copytree(demo.models_dir() / "vgg13_fluidr3", tmp_path / "base" / "vgg13")
    line = fail(train_demo.main, ["--models", "vgg13", "--base-from", tmp_path / "base", "--work",
                                  tmp_path / "w3", "--out", tmp_path / "m3"], capfd)  # fmt: skip
    assert "was not trained as the first 12 epochs of vgg13" in line, line
    line = fail(train_demo.main, ["--models", "crnn", "--base-from", tmp_path, "--work",
                                  tmp_path / "w3", "--out", tmp_path / "m3"], capfd)  # fmt: skip
    assert "--base-from: no checkpoint of crnn" in line and not (tmp_path / "w3").exists()


def test_the_real_command_line_prints_one_line_and_exits_2(tmp_path):
    """The command as a user runs it, in a fresh interpreter (no pytest capture)."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    res = subprocess.run(
        [sys.executable, "-m", "jaxadv.experiments.untargeted", "--data", str(tmp_path / "nope")],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"python -m jaxadv.experiments.untargeted: error: --data {tmp_path / 'nope'}: no such "
        "folder; give an FSDKaggle2018 folder"
    ]
    assert not (tmp_path / "runs").exists()
