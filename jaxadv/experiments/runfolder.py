"""Run folders: what may be written where, ``config.json``, and the fingerprint of a resume.

A *run folder* is one whose ``config.json`` has ``"format": "jaxadv-run"`` (:data:`RUN_FORMAT`);
a command writes into a run folder of its own experiment, a new folder or an empty one, and
refuses any other (:func:`check_out`). The ``fingerprint`` in ``config.json`` holds everything the
rows depend on (the settings, a digest of each checkpoint, a digest of each clip file); a resume
whose fingerprint differs is refused with one line naming what differs (:func:`fingerprint_diff`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shlex
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from jaxadv.cli import UserError
from jaxadv.datasets import Failure
from jaxadv.experiments.models import LoadedModel

RUN_FORMAT = "jaxadv-run"  # the "format" of a run folder's config.json


RUN_FORMAT_VERSION = 1


def _jsonable(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {
            "type": type(v).__name__,
            **{k: _jsonable(x) for k, x in dataclasses.asdict(v).items()},
        }
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, Path):
        return str(v)
    return v


def command_line(args: argparse.Namespace, experiment: str) -> str:
    """The command as typed: ``python -m jaxadv.experiments.EXPERIMENT FLAGS``.

    The flags are ``args.argv`` (set by :func:`jaxadv.cli.main`); for :func:`run` called from
    Python without them, the command line of this process if it is this command, else none.
    """
    argv = getattr(args, "argv", None)
    if argv is None and Path(sys.argv[0]).name == f"{experiment}.py":
        argv = sys.argv[1:]
    cmd = f"python -m jaxadv.experiments.{experiment}"
    if argv is None:
        return cmd + "  # called from Python: see args"
    return " ".join([cmd, shlex.join(argv)]) if argv else cmd


def write_config(out: Path, args: argparse.Namespace, extra: dict[str, Any]) -> Path:
    """Write the resolved configuration of a run as ``config.json`` (atomically).

    Its ``"format": "jaxadv-run"`` marks the folder as a run folder (:func:`read_run_config`).
    """
    import jax

    import jaxadv

    experiment = extra.get("experiment", "")
    doc = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "command": command_line(args, experiment),
        "args": _jsonable(vars(args)),
        "jaxadv": jaxadv.__version__,
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.local_devices()],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        **_jsonable(extra),
    }
    path = out / "config.json"
    tmp = out / "config.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    return path


def read_run_config(folder: Path) -> dict[str, Any] | None:
    """The ``config.json`` of a run folder, or None if ``folder`` is not one (no such file, not
    JSON, or no ``"format": "jaxadv-run"``)."""
    path = Path(folder) / "config.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != RUN_FORMAT:
        return None
    return doc


def check_out(out: Path, experiment: str) -> dict[str, Any] | None:
    """Check that ``--out`` may be written: a new folder, an empty one, or a run folder of this
    experiment (returns its config, to resume). Anything else is refused before anything is
    written, so a folder of the user's own files is never touched."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; choose a new or empty folder")
    if not any(out.iterdir()):
        return None
    doc = read_run_config(out)
    if doc is None and _older_run(out):
        raise UserError(
            f"--out {out} holds a run of an older jaxadv (its config.json has no run-folder "
            "marker or content fingerprint), which cannot be resumed safely; move it away or "
            "choose another --out"
        )
    if doc is None:
        raise UserError(
            f"--out {out} is not a jaxadv run folder (it is not empty and has no config.json "
            "written by a jaxadv experiment); nothing was written there: choose a new or empty "
            "folder"
        )
    if doc.get("experiment") != experiment:
        raise UserError(
            f"--out {out} holds a {doc.get('experiment')!r} run, not a {experiment!r} one; "
            "choose another --out"
        )
    return doc


def _older_run(out: Path) -> bool:
    try:
        doc = json.loads((out / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and "fingerprint" in doc and "format" not in doc


def make_out(out: Path) -> None:
    """Create the run folder (a folder that cannot be created is a one-line error)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create the run folder {out}: {e.strerror or e}; pass --out with a folder "
            "you can write to"
        ) from e


def setup_run(args: argparse.Namespace, experiment: str) -> Path:
    """The run folder (not created yet: :func:`start_run` creates it once every check passed)
    and logging (bad files are reported by name)."""
    out = Path(args.out or f"runs/{experiment}-{args.preset}")
    from jaxadv import logs

    logs.setup()
    return out


def report_failures(out: Path, failures: Iterable[Failure]) -> None:
    """Save the clips of this run that could not be used in ``skipped.txt`` (each was logged
    once when it failed) and print where they are; with none, an old ``skipped.txt`` goes."""
    failures = list(failures)
    path = out / "skipped.txt"
    if not failures:
        path.unlink(missing_ok=True)
        return
    lines = [f"{f.clip.fname}\t{f.message}" for f in failures]
    path.write_text("\n".join(lines) + "\n")
    print(f"skipped {len(failures)} clip(s) (unreadable audio or unknown label), listed in {path}")


def summary_lines(out: Path, files: Iterable[Path]) -> str:
    return "\n".join(f"  {p.relative_to(out) if p.is_relative_to(out) else p}" for p in files)


# Settings a row depends on, with the flag that sets each (for the message of a refused resume).
FINGERPRINT_FLAGS = {
    "experiment": "the experiment",
    "preset": "--preset",
    "data": "--data",
    "split": "--split",
    "per_class": "--per-class",
    "seed": "--seed",
    "batch_size": "--batch-size",
    "audio": "--no-audio",
    "from_untargeted": "--from-untargeted",
    "from_targeted": "--from-targeted",
    "codecs": "--codecs",
}


def writes_audio(args: argparse.Namespace, experiment: str) -> bool:
    """Whether the run writes adversarial WAV files (the waveforms themselves are always stored
    in the run's array store, :mod:`jaxadv.experiments.arrays`)."""
    return not args.no_audio


def fingerprint(
    args: argparse.Namespace,
    experiment: str,
    models: Sequence[LoadedModel],
    clips: dict[str, str],
    configs: dict[str, dict[str, tuple[str, Any]]],
) -> dict[str, Any]:
    """What the rows of a run depend on: the settings of :data:`FINGERPRINT_FLAGS`, per model
    its checkpoint's digest (arrays and sidecar) and resolved attack configs, per loaded clip
    its label and file digest (:func:`clip_digest`)."""
    fp: dict[str, Any] = {
        "experiment": experiment,
        "preset": args.preset,
        "data": str(Path(args.data).resolve()) if args.data else None,
        "split": args.split,
        "per_class": args.per_class,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "audio": writes_audio(args, experiment),
    }
    if experiment in ("transfer", "compression", "robustness"):
        src = getattr(args, "from_untargeted", None)
        fp["from_untargeted"] = str(Path(src).resolve()) if src else None
    if experiment == "compression":
        src = getattr(args, "from_targeted", None)
        fp["from_targeted"] = str(Path(src).resolve()) if src else None
        fp["codecs"] = getattr(args, "codecs", None)
    fp["models"] = {
        m.name: {
            "checkpoint": str(m.checkpoint),
            "digest": m.digest,
            "attacks": _jsonable({k: cfg for k, (_, cfg) in configs[m.name].items()}),
        }
        for m in models
    }
    fp["clips"] = dict(clips)
    return fp


def _was(flag: str, old: Any, new: Any) -> str:
    if flag == "--no-audio":
        return (
            f"--no-audio (the run {'wrote' if old else 'did not write'} audio, this command "
            + ("would" if new else "would not")
            + ")"
        )
    return f"{flag} (the run's {old!r}, this command's {new!r})"


def fingerprint_diff(
    old: dict[str, Any],
    new: dict[str, Any],
    keys: Sequence[str] | None = None,
    attacks: bool = True,
) -> list[str]:
    """What differs between two fingerprints, one phrase each (empty: the same run).

    ``keys``: the settings compared (default all of :data:`FINGERPRINT_FLAGS` that ``new``
    has). Models and clips are compared where both have them, so a resume may add models or
    attack a clip that failed to load before.
    """
    out = []
    for k in keys if keys is not None else [k for k in FINGERPRINT_FLAGS if k in new]:
        if old.get(k) != new.get(k):
            out.append(_was(FINGERPRINT_FLAGS[k], old.get(k), new.get(k)))
    om, nm = old.get("models") or {}, new.get("models") or {}
    for name in [m for m in nm if m in om]:
        a, b = om[name], nm[name]
        if a.get("digest") != b.get("digest"):
            out.append(
                f"the {name} checkpoint {b.get('checkpoint')} (its arrays or sidecar differ from "
                f"those of the run's {a.get('checkpoint')})"
            )
        if attacks and a.get("attacks") != b.get("attacks"):
            for att in sorted(set(a.get("attacks", {})) | set(b.get("attacks", {}))):
                ca, cb = a.get("attacks", {}).get(att, {}), b.get("attacks", {}).get(att, {})
                for f in sorted(set(ca) | set(cb)):
                    if ca.get(f) != cb.get(f):
                        out.append(
                            f"{name} {att}.{f} (the run's {ca.get(f)!r}, this command's "
                            f"{cb.get(f)!r}; see --set)"
                        )
    oc, nc = old.get("clips") or {}, new.get("clips") or {}
    changed = [f for f in nc if f in oc and oc[f] != nc[f]]
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        out.append(
            f"clip file(s) {', '.join(changed[:3])}{more} (content or label changed since the "
            "run started)"
        )
    return out


def merge_fingerprints(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint to record after a resume: ``new`` plus the models and clips only ``old``
    has (so a clip that fails to load now keeps its record for the next resume)."""
    if not old:
        return new
    out = dict(new)
    out["models"] = {**(old.get("models") or {}), **new["models"]}
    out["clips"] = {**(old.get("clips") or {}), **new["clips"]}
    return out
