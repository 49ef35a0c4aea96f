"""Adversarial attacks as compiled, batched JAX programs (see ``README.md`` in this folder).

Every attack is ``attack(fn, params, x, lengths, labels, *, targets=None, config=..., key=None)``
with a classifier function ``fn`` (:mod:`jaxadv.classifier`), waveforms ``x [B, N]`` in [-1, 1] at
32 kHz, valid lengths ``[B]`` and ground-truth ``labels [B]``; it returns a NamedTuple pytree with
at least ``adversarial [B, N]``, ``success [B]`` and ``steps [B]``. Each call is one compiled
program over the batch (jitted with ``fn`` and the frozen ``config`` static, so a second call with
the same shapes compiles nothing); L-BFGS's ``mode="scipy"`` fidelity mode is the host-side
exception.

``ATTACKS`` maps a short name to an :class:`AttackSpec` (callable like the attack, plus its config
class, presets, compiled core and whether it takes targets).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from jaxadv.attacks import cw as _cw
from jaxadv.attacks import deepfool as _deepfool
from jaxadv.attacks import fgsm as _fgsm
from jaxadv.attacks import lbfgs as _lbfgs
from jaxadv.attacks import noise as _noise
from jaxadv.attacks.cw import CWConfig, CWResult, carlini_wagner
from jaxadv.attacks.deepfool import DeepFoolConfig, DeepFoolResult, deepfool
from jaxadv.attacks.fgsm import FGSMConfig, FGSMResult, fgsm
from jaxadv.attacks.lbfgs import LBFGSConfig, LBFGSResult, lbfgs
from jaxadv.attacks.metrics import (
    SUMMARY_COLUMNS,
    TABLE2,
    TABLE3,
    AttackMetrics,
    evaluate,
    snr_db,
    summarize,
)
from jaxadv.attacks.noise import NoiseConfig, NoiseResult, white_noise


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """One registered attack.

    Attributes:
      name: registry key.
      run: the attack function.
      config: its frozen config class (``config()`` = the default).
      presets: name -> zero-argument config factory.
      core: the module-level jitted core (``core._cache_size()`` counts compiled programs).
      targeted: ``"never"``, ``"optional"`` or ``"required"``.
    """

    name: str
    run: Callable[..., Any]
    config: type
    presets: dict[str, Callable[[], Any]]
    core: Any
    targeted: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(*args, **kwargs)


ATTACKS: dict[str, AttackSpec] = {
    "noise": AttackSpec(
        "noise",
        white_noise,
        NoiseConfig,
        {"default": NoiseConfig, "authors": NoiseConfig.authors},
        _noise._noise_jit,
        "never",
    ),
    "fgsm": AttackSpec(
        "fgsm",
        fgsm,
        FGSMConfig,
        {"default": FGSMConfig, "authors": FGSMConfig.authors, "foolbox1": FGSMConfig.foolbox1},
        _fgsm._fgsm_jit,
        "optional",
    ),
    "deepfool": AttackSpec(
        "deepfool",
        deepfool,
        DeepFoolConfig,
        {
            "default": DeepFoolConfig,
            "foolbox3": DeepFoolConfig.foolbox3,
            "foolbox1": DeepFoolConfig.foolbox1,
            "authors": DeepFoolConfig.authors,
        },
        _deepfool._deepfool_jit,
        "never",
    ),
    "cw": AttackSpec(
        "cw",
        carlini_wagner,
        CWConfig,
        {
            "default": CWConfig,
            "carlini": CWConfig.carlini,
            "foolbox1": CWConfig.foolbox1,
            "authors": CWConfig.authors,
            "authors_cochlear_targeted": CWConfig.authors_cochlear_targeted,
        },
        _cw._cw_jit,
        "optional",
    ),
    "lbfgs": AttackSpec(
        "lbfgs",
        lbfgs,
        LBFGSConfig,
        {
            "default": LBFGSConfig,
            "authors": LBFGSConfig.authors,
            "authors_cochlear": LBFGSConfig.authors_cochlear,
            "foolbox1": LBFGSConfig.foolbox1,
        },
        _lbfgs._lbfgs_jit,
        "required",
    ),
}

__all__ = [
    "ATTACKS",
    "AttackMetrics",
    "AttackSpec",
    "CWConfig",
    "CWResult",
    "DeepFoolConfig",
    "DeepFoolResult",
    "FGSMConfig",
    "FGSMResult",
    "LBFGSConfig",
    "LBFGSResult",
    "NoiseConfig",
    "NoiseResult",
    "SUMMARY_COLUMNS",
    "TABLE2",
    "TABLE3",
    "carlini_wagner",
    "deepfool",
    "evaluate",
    "fgsm",
    "lbfgs",
    "snr_db",
    "summarize",
    "white_noise",
]
