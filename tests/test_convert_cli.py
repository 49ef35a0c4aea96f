"""The converter as an installed command: ``jaxadv-convert`` / ``python -m jaxadv.convert``.

No TensorFlow here: the .h5 files are written with h5py directly (the layout of
``tests/keras_reference.py``'s files, cut down to what each error needs). Checked: the module and
the console script run from any folder, the wheel ships them, ``import jaxadv`` stays free of
h5py, and every expected error is one line on stderr naming the file and the fix, with exit
status 2 (``--debug`` re-raises).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import pytest

from jaxadv.convert.__main__ import main
from jaxadv.convert.keras_h5 import ConversionError

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "jaxadv-convert: error: "
NO_FILE = "no such file; give the path of a Keras model .h5 (saved with model.save)"


def _layer(cls: str, name: str, inbound: str | None = None, **config) -> dict:
    return {
        "class_name": cls,
        "name": name,
        "config": {"name": name, **config},
        "inbound_nodes": [[[inbound, 0, 0, {}]]] if inbound else [],
    }


def _functional(*layers: dict) -> dict:
    return {
        "class_name": "Functional",
        "config": {
            "name": "model",
            "layers": list(layers),
            "input_layers": [[layers[0]["name"], 0, 0]],
            "output_layers": [[layers[-1].get("name", "?"), 0, 0]],
        },
    }


INPUT = _layer("InputLayer", "input_1", batch_input_shape=[None, 128, 64, 1])
SAME_RELU = {"padding": "same", "activation": "relu", "use_bias": True}


def _h5(path: Path, model_config: dict | list | str, layer_names=("input_1",)) -> Path:
    """A Keras-2.2.4-style full-model file without arrays; ``model_config`` as given (a str is
    stored verbatim, so it can be broken JSON)."""
    text = model_config if isinstance(model_config, str) else json.dumps(model_config)
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.2.4"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = text.encode()
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = [n.encode() for n in layer_names]
        for n in layer_names:
            mw.create_group(n)
    return path


def _error(capsys, argv: list[str]) -> str:
    """Run the command, expect exit status 2 and exactly one ``PROG: error:`` line on stderr;
    returns the message after ``jaxadv-convert: error: ``."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(PREFIX) and "Traceback" not in captured.err
    assert captured.out == ""
    return lines[0].removeprefix(PREFIX)


# ---------------------------------------------------------------------------------------------
# Installed: module, console script, wheel, import hygiene
# ---------------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # only what is installed, never the repository root
    return env


def test_module_runs_from_any_folder(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "jaxadv.convert", "--help"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: python -m jaxadv.convert") and "--overwrite" in r.stdout


def test_import_jaxadv_does_not_import_the_converter(tmp_path):
    code = (
        "import sys, jaxadv, jaxadv.checkpoint, jaxadv.models\n"
        "assert 'h5py' not in sys.modules and 'jaxadv.convert' not in sys.modules\n"
        "import jaxadv.convert\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')]\n"
        "assert not bad, bad\n"
        "assert 'h5py' in sys.modules\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr


def test_malformed_config_in_a_real_process(tmp_path):
    """The whole command, as a user runs it: one stderr line, status 2, no traceback."""
    bad = _h5(tmp_path / "bad.h5", _functional(INPUT, {"class_name": "Conv2D"}))
    r = subprocess.run(
        [sys.executable, "-m", "jaxadv.convert", str(bad), str(tmp_path / "out"), "--mean", "0"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
    assert r.stderr.startswith(f"python -m jaxadv.convert: error: {bad}: malformed model_config")
    assert "model.save" in r.stderr
    assert not (tmp_path / "out").exists()


def test_repository_shim(tmp_path):
    """``python -m convert`` still works from the repository root (a thin shim)."""
    r = subprocess.run(
        [sys.executable, "-m", "convert", str(tmp_path / "none.h5"), str(tmp_path / "o")],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2
    assert r.stderr == f"python -m convert: error: {tmp_path / 'none.h5'}: {NO_FILE}\n"
    import convert.core  # the shim package and its alias of a submodule

    import jaxadv.convert.core

    assert convert.core is jaxadv.convert.core and convert.convert_file is convert.core.convert_file


@pytest.mark.slow
def test_wheel_ships_the_converter_and_its_command(tmp_path):
    """``pip wheel --no-deps .`` holds jaxadv/convert and the ``jaxadv-convert`` entry point;
    installed on its own (``pip install --target``) the command runs from another folder."""
    src = tmp_path / "src"  # a copy, so the build leaves no build/ or egg-info in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "jaxadv", src / "jaxadv", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    try:  # the environment's setuptools when there is one (offline); else pip's isolated build
        import setuptools  # noqa: F401

        isolation = ["--no-build-isolation"]
    except ImportError:
        isolation = []
    r = subprocess.run(
        [*pip, "wheel", "--no-deps", *isolation, "-w", str(wheels), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (wheel,) = wheels.glob("jaxadv-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
        metadata = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    for module in ("__init__", "__main__", "core", "keras_h5", "architectures", "mapping"):
        assert f"jaxadv/convert/{module}.py" in names
    assert "jaxadv/convert/standardisation.py" in names
    assert not any(n.startswith("convert/") for n in names)  # the shim stays in the repository
    assert "jaxadv-convert = jaxadv.convert.__main__:main" in entry_points
    assert "Requires-Dist: h5py" in metadata

    target = tmp_path / "site"
    r = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    env = {**_env(), "PYTHONPATH": str(target)}  # the installed copy comes first
    r = subprocess.run(
        [str(target / "bin" / "jaxadv-convert"), "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: jaxadv-convert")
    r = subprocess.run(
        [sys.executable, "-c", "import jaxadv.convert; print(jaxadv.convert.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and r.stdout.strip().startswith(str(target)), r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------
# Expected errors: one line naming the file and the fix, exit status 2
# ---------------------------------------------------------------------------------------------


def test_missing_and_non_hdf5_files(tmp_path, capsys):
    missing = tmp_path / "none.h5"
    line = _error(capsys, [str(missing), str(tmp_path / "o")])
    assert line == f"{missing}: {NO_FILE}"
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    line = _error(capsys, [str(text), str(tmp_path / "o")])
    assert line.startswith(f"{text}: not an HDF5 file (")
    assert line.endswith("give a Keras model .h5 (saved with model.save)")
    line = _error(capsys, [str(tmp_path), "--inspect"])
    assert line.startswith(f"{tmp_path}: is a directory; give the path of a Keras model")


def test_bad_json_names_the_file(tmp_path, capsys):
    bad = _h5(tmp_path / "bad.h5", '{"class_name": "Functional", "config": {')
    line = _error(capsys, [str(bad), str(tmp_path / "o")])
    assert line.startswith(f"{bad}: the 'model_config' attribute is not valid JSON (")
    assert "save the full model again with Keras' model.save" in line


@pytest.mark.parametrize(
    "model_config, detail",
    [
        ([1, 2], "is a JSON list, not an object"),
        (
            {"class_name": "Functional", "config": {"layers": [{"class_name": "Conv2D"}]}},
            "KeyError",
        ),
        ({"class_name": "Functional", "config": {"layers": "conv"}}, "TypeError"),
        (
            _functional(INPUT, _layer("Conv2D", "conv", "input_1", **SAME_RELU)),
            "KeyError: 'filters'",
        ),
        ({"class_name": "Sequential", "config": {"layers": []}}, "IndexError"),
        ({"class_name": "Lambda", "config": {}}, "unsupported model class 'Lambda'"),
    ],
    ids=["list", "no-layer-config", "layers-not-a-list", "no-filters", "empty", "class"],
)
def test_malformed_model_config(tmp_path, capsys, model_config, detail):
    bad = _h5(tmp_path / "bad.h5", model_config)
    for argv in (
        [str(bad), str(tmp_path / "o"), "--mean", "0", "--std", "1"],
        [str(bad), "--inspect"],
    ):
        line = _error(capsys, argv)
        assert line.startswith(f"{bad}: ") and detail in line, line
        assert "model.save" in line
    assert not (tmp_path / "o").exists()


def test_architecture_errors_name_the_file(tmp_path, capsys):
    conv = _layer(
        "Conv2D", "conv", "input_1", padding="valid", activation="relu", filters=8, kernel_size=3
    )
    bad = _h5(tmp_path / "valid.h5", _functional(INPUT, conv))
    line = _error(capsys, [str(bad), "--inspect"])
    assert line == f"{bad}: layer 'conv' (Conv2D): padding is 'valid', expected 'same'"


def test_unknown_layer(tmp_path, capsys):
    bad = _h5(tmp_path / "sep.h5", _functional(INPUT, _layer("SeparableConv2D", "sep", "input_1")))
    line = _error(capsys, [str(bad), str(tmp_path / "o"), "--mean", "0", "--std", "1"])
    assert line.startswith(
        f"{bad}: layer 'sep' (SeparableConv2D) has a type the converter does not support, "
        "so this is not one of the five attacked models (crnn, dense_mel, dense_wav, gcnn, vgg13):"
        " convert one of their .h5 files (supported layer types: "
    )


def test_existing_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "jaxadv.json").write_text("{}")
    any_h5 = _h5(tmp_path / "m.h5", _functional(INPUT))  # checked before the file is read
    line = _error(capsys, [str(any_h5), str(out), "--mean", "0", "--std", "1"])
    assert line == f"{out} is not empty: pass --overwrite to replace it, or choose another OUT"
    assert "overwrite=True" not in line
    assert (out / "jaxadv.json").read_text() == "{}"  # untouched
    (tmp_path / "file").write_text("x")
    line = _error(capsys, [str(any_h5), str(tmp_path / "file")])
    assert line == f"{tmp_path / 'file'} exists and is not a directory: choose another OUT"


def test_other_inputs_are_named(tmp_path, capsys):
    any_h5 = _h5(tmp_path / "m.h5", _functional(INPUT))
    labels = tmp_path / "labels.txt"
    line = _error(capsys, [str(any_h5), str(tmp_path / "o"), "--labels", str(labels)])
    assert line.startswith(f"{labels}: cannot read the --labels file (")
    audio = tmp_path / "audio"
    line = _error(capsys, [str(any_h5), str(tmp_path / "o"), "--fit-audio", str(audio)])
    assert line == f"{audio}: no such folder; give the folder of the training audio"
    line = _error(capsys, [str(any_h5)])
    assert "OUT (the checkpoint directory) is required unless --inspect" in line


def test_debug_reraises(tmp_path, capsys):
    bad = _h5(tmp_path / "bad.h5", '{"class_name": ')
    with pytest.raises(ConversionError, match="not valid JSON"):
        main([str(bad), str(tmp_path / "o"), "--debug"])
    bad = _h5(tmp_path / "bad2.h5", _functional(INPUT, {"class_name": "Conv2D"}))
    with pytest.raises(ConversionError, match="malformed model_config") as e:
        main([str(bad), "--inspect", "--debug"])
    assert isinstance(e.value.__cause__, KeyError)  # the original error stays attached
    assert capsys.readouterr().err == ""
