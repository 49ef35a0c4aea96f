"""Adversarial attacks as compiled, batched JAX programs (see ``README.md`` in this folder).

Every attack is ``attack(fn, params, x, lengths, labels, *, targets=None, config=..., key=None)``
with a classifier function ``fn`` (:mod:`jaxadv.classifier`), waveforms ``x [B, N]`` in [-1, 1] at
32 kHz, valid lengths ``[B]`` and ground-truth ``labels [B]``; it returns a NamedTuple pytree with
at least ``adversarial [B, N]``, ``success [B]`` and ``steps [B]``. Each call is one compiled
program over the batch (jitted with ``fn`` and the frozen ``config`` static, so a second call with
the same shapes compiles nothing); L-BFGS's ``mode="scipy"`` fidelity mode is the host-side
exception.

``ATTACKS`` maps a short name to an :class:`AttackSpec` (callable like the attack, plus its config
class, presets, compiled core, its engine algorithm and whether it takes targets). Every attack
runs on one engine (:mod:`jaxadv.attacks.engine`); :func:`sweep` streams any number of jobs
through a fixed number of slots of one compiled program (continuous batching).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from jaxadv.attacks import common as _common
from jaxadv.attacks import criteria, engine, search
from jaxadv.attacks import cw as _cw
from jaxadv.attacks import ddn as _ddn
from jaxadv.attacks import deepfool as _deepfool
from jaxadv.attacks import fgsm as _fgsm
from jaxadv.attacks import fmn as _fmn
from jaxadv.attacks import lbfgs as _lbfgs
from jaxadv.attacks import noise as _noise
from jaxadv.attacks import pgd as _pgd
from jaxadv.attacks.cw import CWConfig, CWResult, carlini_wagner
from jaxadv.attacks.ddn import DDNConfig, DDNResult, ddn
from jaxadv.attacks.deepfool import DeepFoolConfig, DeepFoolResult, deepfool
from jaxadv.attacks.fgsm import FGSMConfig, FGSMResult, fgsm
from jaxadv.attacks.fmn import FMNConfig, FMNResult, fmn
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
from jaxadv.attacks.pgd import PGDConfig, PGDResult, pgd


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
      algorithm: ``config -> engine Algorithm`` (what :func:`sweep` runs).
      keyed: the attack needs a random key (white noise).
    """

    name: str
    run: Callable[..., Any]
    config: type
    presets: dict[str, Callable[[], Any]]
    core: Any
    targeted: str
    algorithm: Callable[[Any], Any]
    keyed: bool = False

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
        _noise.WhiteNoise,
        keyed=True,
    ),
    "fgsm": AttackSpec(
        "fgsm",
        fgsm,
        FGSMConfig,
        {"default": FGSMConfig, "authors": FGSMConfig.authors, "foolbox1": FGSMConfig.foolbox1},
        _fgsm._fgsm_jit,
        "optional",
        lambda config: _fgsm.ALGORITHMS[config.mode](config),
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
        _deepfool.DeepFool,
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
            "audio": CWConfig.audio,
        },
        _cw._cw_jit,
        "optional",
        _cw.CarliniWagnerL2,
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
        lambda config: _lbfgs.algorithm(config),
    ),
    "fmn": AttackSpec(
        "fmn",
        fmn,
        FMNConfig,
        {
            "default": FMNConfig,
            "linf": lambda: FMNConfig(norm="linf"),
            "foolbox3": FMNConfig.foolbox3,
            "foolbox3_linf": lambda: FMNConfig.foolbox3("linf"),
        },
        _fmn._fmn_jit,
        "optional",
        _fmn.FMN,
    ),
    "ddn": AttackSpec(
        "ddn",
        ddn,
        DDNConfig,
        {"default": DDNConfig, "foolbox3": DDNConfig.foolbox3},
        _ddn._ddn_jit,
        "optional",
        _ddn.DDN,
    ),
    "pgd": AttackSpec(
        "pgd",
        pgd,
        PGDConfig,
        {
            "default": PGDConfig,
            "linf": lambda: PGDConfig(norm="linf"),
            "foolbox3": PGDConfig.foolbox3,
            "foolbox3_linf": lambda: PGDConfig.foolbox3("linf"),
        },
        _pgd._pgd_jit,
        "optional",
        _pgd.PGD,
        keyed=True,
    ),
}


def _sweep_problem(
    name: str, fn: Any, params: Any, x: Any, lengths: Any, labels: Any, targets: Any,
    config: Any, key: Any,
) -> tuple[Any, engine.Problem]:  # fmt: skip
    """The engine algorithm of ``name`` with ``config`` and the checked jobs as a Problem."""
    spec = ATTACKS[name]
    config = spec.config() if config is None else config
    _common.check_config(name, config, spec.config)
    x, lengths, labels, targets = _common.validate(
        name, fn, params, x, lengths, labels, targets, targeted=spec.targeted
    )
    keys = _common.example_keys(key, x.shape[0]) if spec.keyed else None
    problem = engine.Problem(x, lengths, labels, targets, keys)
    return spec.algorithm(config), problem


def sweep(
    name: str,
    fn: Any,
    params: Any,
    x: Any,
    lengths: Any,
    labels: Any,
    *,
    targets: Any = None,
    config: Any = None,
    key: Any = None,
    slots: int = 16,
    chunk: int = 16,
    on_results: Callable[[list[tuple[int, Any]]], None] | None = None,
) -> tuple[list[Any], engine.SweepStats]:
    """Attack ``J`` jobs (one length bucket ``[J, N]``) through ``slots`` slots of one program.

    The same inputs and config as ``ATTACKS[name](...)``, but the batch axis is a queue: finished
    jobs leave their slot to the next ones (:func:`jaxadv.attacks.engine.sweep`), so every slot
    does useful work until the queue is empty. Job ``j``'s result equals attacking it alone.

    Returns:
      ``(results, stats)``: per-job results (the attack's result NamedTuple of NumPy arrays
      without the batch axis; :func:`jaxadv.attacks.engine.stack` stacks them) and
      :class:`~jaxadv.attacks.engine.SweepStats`.
    """
    algo, problem = _sweep_problem(name, fn, params, x, lengths, labels, targets, config, key)
    return engine.sweep(algo, fn, params, problem, slots=slots, chunk=chunk, on_results=on_results)


def compile_sweep(
    name: str,
    fn: Any,
    params: Any,
    x: Any,
    lengths: Any,
    labels: Any,
    *,
    targets: Any = None,
    config: Any = None,
    key: Any = None,
    slots: int = 16,
    chunk: int = 16,
) -> None:
    """Compile the program :func:`sweep` runs for the same arguments, without running it
    (:func:`jaxadv.attacks.engine.compile_sweep`; call it from a worker thread to build programs
    while others run)."""
    algo, problem = _sweep_problem(name, fn, params, x, lengths, labels, targets, config, key)
    engine.compile_sweep(algo, fn, params, problem, slots=slots, chunk=chunk)


__all__ = [
    "ATTACKS",
    "compile_sweep",
    "criteria",
    "engine",
    "search",
    "sweep",
    "AttackMetrics",
    "AttackSpec",
    "CWConfig",
    "CWResult",
    "DDNConfig",
    "DDNResult",
    "DeepFoolConfig",
    "DeepFoolResult",
    "FGSMConfig",
    "FGSMResult",
    "FMNConfig",
    "FMNResult",
    "LBFGSConfig",
    "LBFGSResult",
    "NoiseConfig",
    "NoiseResult",
    "PGDConfig",
    "PGDResult",
    "SUMMARY_COLUMNS",
    "TABLE2",
    "TABLE3",
    "carlini_wagner",
    "ddn",
    "deepfool",
    "evaluate",
    "fgsm",
    "fmn",
    "lbfgs",
    "pgd",
    "snr_db",
    "summarize",
    "white_noise",
]
