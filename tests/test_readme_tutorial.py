"""The README's "Attack your own model" tutorial, run as written: its mymodels.py, its attack
snippet and its command (on a small folder in the FSDKaggle2018 layout with the model's labels)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> tuple[str, str, str]:
    text = README.read_text()
    section = text.split("## Attack your own model", 1)[1].split("\n## ", 1)[0]
    py = re.findall(r"```python\n(.*?)```", section, re.S)
    sh = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(py) == 2 and len(sh) == 1, "the tutorial's code blocks changed: update this test"
    return py[0], py[1], sh[0].strip()


@pytest.fixture()
def tutorial(tmp_path, monkeypatch):
    module, snippet, command = _blocks()
    assert module.startswith("# mymodels.py\n")
    (tmp_path / "mymodels.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield module, snippet, command
    sys.modules.pop("mymodels", None)


def test_the_attack_snippet_runs_as_written(tutorial, capsys):
    _, snippet, _ = tutorial
    exec(compile(snippet, "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip()
    snr = np.array([float(v) for v in printed.strip("[]").split()])
    assert snr.shape == (2,) and np.isfinite(snr).all() and (snr > 0).all(), printed


def test_the_command_runs_as_written(tutorial, tmp_path):
    from jaxadv.experiments import untargeted
    from jaxadv.experiments.results import read_run_rows

    _, _, command = tutorial
    argv = command.split()
    assert argv[:3] == ["python", "-m", "jaxadv.experiments.untargeted"]
    # my_clips/: the model's own labels; the untrained net gets some right, and only those are
    # attacked, so the clips are labelled by its own clean predictions
    import mymodels

    clf, params = mymodels.build()
    audio = tmp_path / "my_clips" / "audio_test"
    audio.mkdir(parents=True)
    rows = ["fname,label,usage,freesound_id,license"]
    rng = np.random.default_rng(1)
    for i, colour in enumerate((0.0, 0.95, 0.5, -0.9)):
        w = rng.standard_normal(12000)
        w = np.convolve(w, [1.0, colour], "same")  # low- or high-tilted noise
        w = (0.3 * w / np.abs(w).max()).astype(np.float32)
        sf.write(audio / f"c{i}.wav", w, 16000)
        pred = int(np.asarray(clf(params, w[None], np.array([len(w)])).probs).argmax())
        rows.append(f"c{i}.wav,{mymodels.LABELS[pred]},Private,{i},CC0")
    (tmp_path / "my_clips" / "test_post_competition_scoring_clips.csv").write_text(
        "\n".join(rows) + "\n"
    )
    fast = ["--per-class", "4", "--set", "cw.max_iterations=10", "--set",
            "cw.binary_search_steps=1", "--set", "fmn.steps=10", "--set", "fmn.search_steps=10",
            "--set", "ddn.steps=10", "--set", "ddn.search_steps=10", "--set",
            "deepfool.steps=50"]  # fmt: skip
    untargeted.main(argv[3:] + fast)
    out = tmp_path / "runs" / "mine"
    got = read_run_rows(out)
    assert {r["model"] for r in got} == {"mine"} and len(got) == 4 * 6
    assert {r["label"] for r in got} <= set(mymodels.LABELS)
    assert all(r["success"] for r in got if r["attack"] == "deepfool")
