"""The flags every experiment command takes, and the attacks they select.

:func:`parser` builds the shared command line; :func:`parse_models` and
:func:`parse_checkpoints` read ``--models`` and ``--checkpoint``; :func:`resolve_attacks` gives
each model's attacks — its experiment's config module (:mod:`jaxadv.experiments.configs`) with
the ``--set ATTACK.FIELD=VALUE`` overrides (:func:`apply_overrides`), each a one-line
:class:`~jaxadv.cli.UserError` when wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxadv.cli import UserError, add_debug_flag
from jaxadv.experiments.configs import ALL_MODELS, PRESETS, get_config

log = logging.getLogger("jaxadv.experiments")


def attack_configs(experiment: str, preset: str, model: str) -> dict[str, tuple[str, Any]]:
    """Attacks of an experiment as ``{row name: (ATTACKS key, config)}`` for one model: the
    experiment's config module (:mod:`jaxadv.experiments.configs`) with ``preset``."""
    return get_config(experiment, preset).attacks(model)


def _coerce(text: str, current: Any, hint: Any) -> Any:
    if isinstance(current, bool) or hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if text.lower() == "none":
        return None
    if isinstance(current, int) and not isinstance(current, bool):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, tuple):
        return tuple(int(t) for t in text.split(",") if t)
    if current is None and hint is not None:
        for t in typing.get_args(hint) or (hint,):
            if t in (int, float):
                return t(text)
    return text


def apply_overrides(
    configs: dict[str, tuple[str, Any]], overrides: Sequence[str], warn: bool = True
) -> dict[str, tuple[str, Any]]:
    """Apply ``--set ATTACK.FIELD=VALUE`` overrides (e.g. ``cw.max_iterations=500``).

    An attack this experiment does not run (``lbfgs`` in the untargeted one) is skipped with a
    warning, so one set of flags serves all three commands; an unknown attack is an error.
    """
    from jaxadv.attacks import ATTACKS

    out = dict(configs)
    for item in overrides:
        try:
            lhs, value = item.split("=", 1)
            name, field = lhs.split(".", 1)
        except ValueError:
            raise UserError(f"--set {item!r}: expected ATTACK.FIELD=VALUE") from None
        if name not in out and name in ATTACKS:
            if warn:
                log.warning("--set %s: this experiment does not run %s; ignored", item, name)
            continue
        if name not in out:
            raise UserError(f"--set {item!r}: no attack {name!r} here; choose from {sorted(out)}")
        key, cfg = out[name]
        fields = {f.name: f for f in dataclasses.fields(cfg)}
        if field not in fields:
            raise UserError(
                f"--set {item!r}: {type(cfg).__name__} has no field {field!r}; choose from "
                f"{sorted(fields)}"
            )
        hints = typing.get_type_hints(type(cfg))
        try:
            new = _coerce(value, getattr(cfg, field), hints.get(field))
            out[name] = (key, dataclasses.replace(cfg, **{field: new}))
        except (ValueError, TypeError) as e:  # a bad value, or a range check in __post_init__
            raise UserError(f"--set {item!r}: {e}") from e
    return out


def resolve_attacks(
    args: argparse.Namespace, experiment: str, models: Sequence[str]
) -> dict[str, dict[str, tuple[str, Any]]]:
    """``{model: attacks}`` with the ``--set`` overrides (a bad one is a one-line error; one for
    an attack this experiment does not run is warned about once)."""
    return {
        m: apply_overrides(_base_attacks(args, experiment, m), args.set, warn=i == 0)
        for i, m in enumerate(models)
    }


def _base_attacks(
    args: argparse.Namespace, experiment: str, model: str
) -> dict[str, tuple[str, Any]]:
    """The preset's attacks, at the ``--budgets`` of a command that has them (robustness)."""
    attacks = attack_configs(experiment, args.preset, model)
    budgets = getattr(args, "budgets", None)
    if budgets:
        from jaxadv.experiments.configs.robustness import with_budgets

        attacks = with_budgets(attacks, budgets)
    return attacks


def parser(
    experiment: str, description: str, default_models: Sequence[str] | None = None
) -> argparse.ArgumentParser:
    """The flags every experiment command takes (``default_models``: the command's own default
    for ``--models``, named in its help; the command applies it)."""
    p = argparse.ArgumentParser(
        prog=f"python -m jaxadv.experiments.{experiment}",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--out",
        default=None,
        help="run folder (default: runs/<experiment>-<preset>); rerunning the same command "
        "resumes it",
    )
    p.add_argument(
        "--preset",
        choices=PRESETS,
        default="demo",
        help="'demo': fast settings for the embedded demo; 'paper': the authors' settings",
    )
    p.add_argument(
        "--models",
        default=None,
        help="comma-separated models to attack: registry names and --model-fn names (default: "
        f"{','.join(default_models or ALL_MODELS)}, or the --model-fn models when there are "
        "some)",
    )
    p.add_argument(
        "--model-fn",
        action="append",
        default=[],
        metavar="NAME=MODULE:ATTR",
        help="attack your own model: MODULE:ATTR is a (classifier, params) pair from jaxadv.wrap, "
        "or a function of no arguments returning one; its labels and sample rate come with it. "
        "Repeat per model",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="MODEL=DIR",
        help="checkpoint folder of a model (jaxadv-convert / python -m jaxadv.train output); "
        "default: the committed demo model. Repeat per model",
    )
    p.add_argument(
        "--data",
        default=None,
        help="an FSDKaggle2018 folder (train.csv + audio_train/, or the test CSV + audio_test/); "
        "default: the embedded demo clips",
    )
    p.add_argument(
        "--split",
        choices=("auto", "train", "test"),
        default="auto",
        help="which CSV of --data to use; 'auto': train.csv with the authors' attack list "
        "(first 10 verified clips per class) if present, else the test CSV",
    )
    p.add_argument(
        "--per-class",
        type=int,
        default=None,
        help="clips per class (default: 6 as the paper with --preset paper, 1 for the demo)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="rows per compiled attack batch")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ATTACK.FIELD=VALUE",
        help="override one attack setting, e.g. --set cw.max_iterations=500 (repeatable)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for clip choice and noise")
    p.add_argument(
        "--no-audio",
        action="store_true",
        help="do not write adversarial WAV files (the waveforms are stored in adversarial/ "
        "either way, for Figure 3 and transfer)",
    )
    from jaxadv.experiments import cluster

    cluster.add_flags(p)
    add_debug_flag(p)
    return p


def parse_checkpoints(
    items: Sequence[str], models: Sequence[str], model_fns: dict[str, str] | None = None
) -> dict[str, Path]:
    """``MODEL=DIR`` flags → ``{model: Path}``; every other registry model gets its demo
    checkpoint (a ``--model-fn`` model has none)."""
    fns = model_fns or {}
    out: dict[str, Path] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--checkpoint {item!r}: expected MODEL=DIR")
        name, d = item.split("=", 1)
        if name not in models:
            raise UserError(f"--checkpoint {item!r}: {name!r} is not among --models {list(models)}")
        if name in fns:
            raise UserError(f"--checkpoint {item!r}: {name!r} is a --model-fn model")
        out[name] = Path(d)
    for m in models:
        if m not in out and m not in fns:
            from jaxadv import demo

            out[m] = demo.models_dir() / m
    return out


def parse_model_fns(items: Sequence[str]) -> dict[str, str]:
    """``NAME=MODULE:ATTR`` flags → ``{name: "MODULE:ATTR"}`` (loaded by
    :func:`jaxadv.experiments.models.load_model_fn`)."""
    out: dict[str, str] = {}
    for item in items:
        name, eq, spec = item.partition("=")
        if not eq or not name.strip() or ":" not in spec:
            raise UserError(
                f"--model-fn {item!r}: expected NAME=MODULE:ATTR, e.g. mine=mypackage.models:build"
            )
        name = name.strip()
        from jaxadv.experiments.configs import demo_variants

        if name in ALL_MODELS or name in demo_variants() or name in out:
            raise UserError(f"--model-fn {item!r}: the name {name!r} is taken; choose another")
        if not all(ch.isalnum() or ch in "_-" for ch in name):
            raise UserError(f"--model-fn {item!r}: NAME may hold letters, digits, '_' and '-'")
        out[name] = spec.strip()
    return out


def parse_models(
    text: str | None,
    model_fns: dict[str, str] | None = None,
    checkpoints: Sequence[str] = (),
) -> list[str]:
    """``--models`` → names; default: the five, or the ``--model-fn`` models if any. A name of
    neither kind must have a ``--checkpoint NAME=DIR`` (an ONNX checkpoint of the user's)."""
    fns = model_fns or {}
    if text is None:
        return list(fns) if fns else list(ALL_MODELS)
    from jaxadv.experiments.configs import demo_variants

    names = [m.strip() for m in text.split(",") if m.strip()]
    given = [c.split("=", 1)[0] for c in checkpoints if "=" in c]
    builtin = [*ALL_MODELS, *demo_variants()]
    known = [*builtin, *fns, *(g for g in given if g not in builtin and g not in fns)]
    bad = [m for m in names if m not in known]
    if bad or not names:
        raise UserError(f"--models: unknown {bad}; choose from {known}")
    return names
