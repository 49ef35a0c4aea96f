"""Per-experiment configurations, one module each (big_vision ``configs/`` style).

``configs/untargeted.py``, ``configs/targeted.py`` and ``configs/transfer.py`` each define
``get_config(preset) -> ExperimentConfig``; the module docstring gives the command that runs it
and the numbers to expect. :func:`get_config` picks the module by experiment name. Presets:

* ``paper``: the paper authors' settings (ORIGINALS.md §5); faithful, never tuned.
* ``demo``: the library's reference algorithms with budgets cut to run in minutes on a CPU.

Nothing here runs an attack; the configs are the attacks' frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, NamedTuple

IQBAL_MODELS = ("vgg13", "crnn", "gcnn")
ALL_MODELS = ("vgg13", "crnn", "gcnn", "dense_mel", "dense_wav")
PRESETS = ("demo", "paper")
EXPERIMENTS = (
    "untargeted", "targeted", "transfer", "compression", "robustness", "representations",
)  # fmt: skip


def demo_variants() -> tuple[str, ...]:
    """The demo models beyond the five architectures (``vgg13_stft``, ``vgg13_cqt``,
    ``vgg13_pgd``: :data:`jaxadv.train.demo.DEMO_MODELS`), usable by name like the five."""
    from jaxadv.train.demo import DEMO_MODELS

    return tuple(n for n in DEMO_MODELS if n not in ALL_MODELS)


def architecture(model: str) -> str:
    """The registry architecture of a model name (a demo variant's, e.g. vgg13_stft → vgg13)."""
    from jaxadv.train.demo import DEMO_MODELS

    return DEMO_MODELS[model].model if model in DEMO_MODELS else model


def family(model: str) -> str:
    """``"iqbal"`` for vgg13/crnn/gcnn (and their demo variants), ``"cochlear"`` for
    dense_mel/dense_wav."""
    return "iqbal" if architecture(model) in IQBAL_MODELS else "cochlear"


class Attack(NamedTuple):
    """One attack of an experiment: its row name, its ``jaxadv.attacks.ATTACKS`` key, its config."""

    name: str
    key: str
    config: Any


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """What one experiment runs with one preset.

    Attributes:
      experiment, preset: the names.
      per_class: clips per class when ``--per-class`` is not given.
      iqbal: the attacks on the Iqbal models (vgg13, crnn, gcnn), in table order.
      cochlear: the attacks on the Cochlear models (dense_mel, dense_wav), in table order.
    """

    experiment: str
    preset: str
    per_class: int
    iqbal: tuple[Attack, ...]
    cochlear: tuple[Attack, ...]

    def attacks(self, model: str) -> dict[str, tuple[str, Any]]:
        """``{row name: (ATTACKS key, config)}`` for one model."""
        chosen = self.iqbal if family(model) == "iqbal" else self.cochlear
        return {a.name: (a.key, a.config) for a in chosen}


def check_preset(preset: str) -> None:
    """Raise ValueError for a preset that is not one of :data:`PRESETS`."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")


def get_config(experiment: str, preset: str) -> ExperimentConfig:
    """``configs/<experiment>.py``'s ``get_config(preset)``."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; choose one of {EXPERIMENTS}")
    module = importlib.import_module(f"jaxadv.experiments.configs.{experiment}")
    return module.get_config(preset)
