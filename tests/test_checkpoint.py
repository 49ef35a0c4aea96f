"""Checkpoints: orbax round trip, sidecar, and clear errors for mismatches and damage."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest
from model_helpers import calibrated_params, make_audio

from jaxadv import config as C
from jaxadv import models
from jaxadv.checkpoint import (
    CheckpointError,
    check_labels,
    digest,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from jaxadv.classifier import Classifier
from jaxadv.frontend import IqbalAttackFrontend


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A compact VGG13 (authors' front-end, gmean) and a compact dense-mel, saved once."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for name, clf in (
        (
            "vgg13",
            Classifier(models.get_config("vgg13", width=0.125), IqbalAttackFrontend(), "gmean"),
        ),
        ("dense_mel", Classifier.build("dense_mel", width=0.125, cochlear_logits="log_probs")),
    ):
        params = calibrated_params(clf, seed=2)
        meta = save_checkpoint(root / name, clf, params, source={"file": "x.h5", "sha256": "ab"})
        out[name] = (root / name, clf, params, meta)
    return out


def test_round_trip_gives_identical_outputs(saved):
    x = np.stack([make_audio(70000, 1), make_audio(70000, 2)])
    lengths = np.array([70000, 41000])
    for directory, clf, params, meta in saved.values():
        clf2, params2, meta2 = load_checkpoint(directory, expect=clf)
        assert clf2 == clf and hash(clf2) == hash(clf)  # same static jit argument
        jax.tree_util.tree_map(np.testing.assert_array_equal, params, params2)
        a, b = jax.jit(clf)(params, x, lengths), jax.jit(clf2)(params2, x, lengths)
        np.testing.assert_array_equal(a.probs, b.probs)
        np.testing.assert_array_equal(a.logits, b.logits)
        assert meta2 == meta and meta2["labels"] == list(C.LABELS)
        assert meta2["param_count"] == models.param_count(params["model"])
    vmeta = saved["vgg13"][3]
    assert vmeta["frontend"]["name"] == "iqbal_attack" and vmeta["merge"] == "gmean"
    assert vmeta["standardisation"] == {"mean": -30.0, "std": 15.0}
    assert saved["dense_mel"][3]["standardisation"] is None


def test_mismatched_expectation_names_both_sides(saved):
    directory = saved["vgg13"][0]
    with pytest.raises(CheckpointError, match="holds a 'vgg13' model, expected 'gcnn'"):
        load_checkpoint(directory, expect="gcnn")
    with pytest.raises(CheckpointError, match="width: checkpoint 0.125 vs expected 0.25"):
        load_checkpoint(directory, expect=models.get_config("vgg13", width=0.25))
    with pytest.raises(CheckpointError, match="num_classes: checkpoint 41 vs expected 10"):
        load_checkpoint(directory, expect=models.get_config("vgg13", width=0.125, num_classes=10))


def _copy(src, dst, edit):
    shutil.copytree(src, dst)
    meta = json.loads((dst / "jaxadv.json").read_text())
    edit(meta)
    (dst / "jaxadv.json").write_text(json.dumps(meta))
    return dst


def test_arrays_of_another_model_fail_before_restoring(saved, tmp_path):
    """A sidecar that lies about the arrays: shapes are compared before orbax reads anything."""
    d = _copy(saved["vgg13"][0], tmp_path / "w", lambda m: m["model_config"].update(width=0.25))
    with pytest.raises(
        CheckpointError,
        match=r"do not match.*\n  model/batch_stats/block_0/bn_0/mean: stored arrays \(8,\) float32 vs "
        r"vgg13 per jaxadv.json \(16,\)",
    ):
        load_checkpoint(d)
    d = _copy(
        saved["vgg13"][0],
        tmp_path / "a",
        lambda m: m.update(model="gcnn", model_config={**m["model_config"], "name": "gcnn"}),
    )
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(d)
    d = _copy(saved["vgg13"][0], tmp_path / "c", lambda m: m["model_config"].update(num_classes=40))
    with pytest.raises(
        CheckpointError,
        match=r"inconsistent class counts \{'labels': 41, 'num_classes': 41, 'model_config.num_classes': 40\}",
    ):
        load_checkpoint(d)


def test_missing_or_corrupt_sidecar(saved, tmp_path):
    with pytest.raises(CheckpointError, match="jaxadv.json not found.*not a jaxadv checkpoint"):
        load_checkpoint(tmp_path)
    d = tmp_path / "bad"
    shutil.copytree(saved["dense_mel"][0], d)
    (d / "jaxadv.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="jaxadv.json is not valid JSON"):
        read_meta(d)
    (d / "jaxadv.json").write_text(json.dumps({"format": "jaxadv-checkpoint", "format_version": 1}))
    with pytest.raises(CheckpointError, match=r"lacks the fields \['model', 'model_config'"):
        load_checkpoint(d)
    d2 = _copy(saved["dense_mel"][0], tmp_path / "u", lambda m: m["model_config"].update(depth=3))
    with pytest.raises(
        CheckpointError, match=r"invalid model description.*unknown fields \['depth'\]"
    ):
        load_checkpoint(d2)
    d3 = _copy(saved["dense_mel"][0], tmp_path / "p", lambda m: None)
    shutil.rmtree(d3 / "params")
    with pytest.raises(CheckpointError, match="params not found"):
        load_checkpoint(d3)


def test_save_refuses_bad_input(saved, tmp_path):
    directory, clf, params, _ = saved["vgg13"]
    with pytest.raises(CheckpointError, match="not empty"):
        save_checkpoint(directory, clf, params)
    with pytest.raises(CheckpointError, match="3 labels for a model with 41 classes"):
        save_checkpoint(tmp_path / "l", clf, params, labels=["a", "b", "c"])
    wrong = Classifier.build("vgg13", width=0.25)
    with pytest.raises(CheckpointError, match="params do not fit vgg13"):
        save_checkpoint(tmp_path / "w", wrong, params)


def _array_file(d):
    files = [p for p in (d / "params").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_array_file_names_the_checkpoint(saved, tmp_path, capfd, damage):
    """Raw tensorstore errors (OUT_OF_RANGE, ZSTD) become a CheckpointError that says what to
    do, and orbax's "Event loop is closed" noise from other threads never starts."""
    d = tmp_path / "c"
    shutil.copytree(saved["vgg13"][0], d)
    f = _array_file(d)
    raw = bytearray(f.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        lo, hi = len(raw) // 4, 3 * len(raw) // 4
        raw[lo:hi] = bytes(b ^ 0x5A for b in raw[lo:hi])
    f.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(d)
    msg = str(e.value)
    assert msg.startswith(f"{d}: damaged checkpoint") and "re-train it" in msg
    assert "\n" not in msg
    import time

    time.sleep(0.5)  # time for a stray read of another thread to complain
    assert "Event loop is closed" not in capfd.readouterr().err


def test_labels_of_a_sidecar_are_checked(saved, tmp_path):
    meta = dict(saved["vgg13"][3])
    check_labels(meta, saved["vgg13"][0])
    meta["labels"] = list(C.LABELS)
    meta["labels"][0], meta["labels"][1] = meta["labels"][1], meta["labels"][0]
    with pytest.raises(CheckpointError, match=r"jaxadv.json: label 0 is 'Applause', but this run "
                       r"assumes 'Acoustic_guitar'"):  # fmt: skip
        check_labels(meta, tmp_path)
    with pytest.raises(CheckpointError, match="3 labels, but this run assumes the 41"):
        check_labels({"labels": list(C.LABELS[:3])}, tmp_path)


def test_digest_is_of_the_content_not_the_path(saved, tmp_path):
    directory = saved["vgg13"][0]
    _, p1, m1 = load_checkpoint(directory)
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    _, p2, m2 = load_checkpoint(copy)
    assert digest(m1, p1) == digest(m2, p2) == digest({**m1, "created": "later"}, p1)
    p3 = jax.tree_util.tree_map(np.asarray, p1)
    p3["norm"]["mean"] = p3["norm"]["mean"] + 1
    assert digest(m1, p3) != digest(m1, p1)
    assert digest({**m1, "merge": "max"}, p1) != digest(m1, p1)
