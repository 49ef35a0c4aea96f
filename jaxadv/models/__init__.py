"""The five attacked models as Flax (linen) modules, and a registry that builds them by name.

========== ====================== ======================================= ===================
name       module                 input                                   output
========== ====================== ======================================= ===================
vgg13      :mod:`.vgg13`          standardised chunks ``[N, 128, 64, 1]`` logits ``[N, C]``
crnn       :mod:`.crnn`           standardised chunks ``[N, 128, 64, 1]`` logits ``[N, C]``
gcnn       :mod:`.gcnn`           standardised chunks ``[N, 128, 64, 1]`` logits ``[N, C]``
dense_mel  :mod:`.dense_mel`      waveform ``[B, N]``, lengths ``[B]``    heads ``[B, 8, C]``
dense_wav  :mod:`.dense_wav`      waveform ``[B, N]``, lengths ``[B]``    heads ``[B, 8, C]``
========== ====================== ======================================= ===================

Each model has a frozen (hashable) config dataclass with a ``width`` multiplier (1.0 = the paper's
model; the same code path at every width) and ``num_classes``. Variables are
``{"params": ..., "batch_stats": ...}``; every module takes ``train`` (default False: batch norm in
inference mode with the moving statistics). :class:`jaxadv.classifier.Classifier` wraps a model
with its front-end into the attack contract.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import config as C
from jaxadv.models.crnn import CRNN, CRNNConfig
from jaxadv.models.dense_mel import DenseMel, DenseMelConfig
from jaxadv.models.dense_wav import DenseWav, DenseWavConfig
from jaxadv.models.gcnn import GCNN, GCNNConfig
from jaxadv.models.vgg13 import VGG13, VGG13Config

__all__ = [
    "CRNN",
    "GCNN",
    "MODELS",
    "VGG13",
    "CRNNConfig",
    "DenseMel",
    "DenseMelConfig",
    "DenseWav",
    "DenseWavConfig",
    "GCNNConfig",
    "ModelConfig",
    "VGG13Config",
    "build",
    "config_from_dict",
    "config_to_dict",
    "example_inputs",
    "get_config",
    "init_variables",
    "param_count",
]

Array = jax.Array
ModelConfig = VGG13Config | CRNNConfig | GCNNConfig | DenseMelConfig | DenseWavConfig

MODELS: dict[str, type] = {
    cls.name: cls for cls in (VGG13Config, CRNNConfig, GCNNConfig, DenseMelConfig, DenseWavConfig)
}

# Samples fed to the waveform models at initialisation (they accept any length).
_INIT_SAMPLES = 8192


def get_config(
    name: str, *, width: float = 1.0, num_classes: int = C.NUM_CLASSES, **overrides: Any
) -> ModelConfig:
    """The config of model ``name`` (see :data:`MODELS`) with a width and a class count."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return cls(width=width, num_classes=num_classes, **overrides)


def build(
    name: str | ModelConfig,
    *,
    width: float = 1.0,
    num_classes: int = C.NUM_CLASSES,
    **overrides: Any,
) -> nn.Module:
    """The Flax module of a model given by name (plus width/classes/overrides) or by config."""
    if isinstance(name, str):
        return get_config(name, width=width, num_classes=num_classes, **overrides).module()
    return name.module()


def example_inputs(cfg: ModelConfig, batch: int = 1) -> tuple[Array, ...]:
    """Zero inputs of the right shape for ``module.init`` / ``jax.eval_shape``."""
    if cfg.family == "iqbal":
        return (jnp.zeros((batch, C.CHUNK_FRAMES, C.N_MELS, 1), jnp.float32),)
    return (
        jnp.zeros((batch, _INIT_SAMPLES), jnp.float32),
        jnp.full((batch,), _INIT_SAMPLES, jnp.int32),
    )


def init_variables(cfg: ModelConfig, key: Array) -> dict[str, Any]:
    """Fresh ``{"params", "batch_stats"}`` with Keras' initialisers (Glorot kernels, zero biases,
    orthogonal recurrent kernels, BN scale 1 / bias 0 / mean 0 / var 1).

    Compiled once per config. Tip: an ``impl="rbg"`` key compiles about twice as fast on CPU.
    """
    return dict(_init(cfg, key))


@functools.partial(jax.jit, static_argnums=0)
def _init(cfg: ModelConfig, key: Array) -> Any:
    return cfg.module().init(key, *example_inputs(cfg))


def config_to_dict(cfg: ModelConfig) -> dict[str, Any]:
    """JSON-ready dict of a config, with its model ``name``."""
    d = {"name": cfg.name}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        d[f.name] = list(v) if isinstance(v, tuple) else v
    return d


def config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """Inverse of :func:`config_to_dict`; unknown fields are an error naming them."""
    d = dict(d)
    name = d.pop("name", None)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} in config; choose one of {sorted(MODELS)}")
    cls = MODELS[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"config of {name!r} has unknown fields {unknown}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def param_count(tree: Any) -> int:
    """Number of scalars in a pytree of arrays (e.g. ``{"params", "batch_stats"}``)."""
    return int(sum(np.prod(np.shape(leaf)) for leaf in jax.tree_util.tree_leaves(tree)))
