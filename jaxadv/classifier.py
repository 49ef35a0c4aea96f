"""The contract between classifiers and attacks.

A *classifier function* is any hashable callable ``fn(params, x, lengths) -> ModelOutput`` where
``params`` is a pytree of arrays (passed in, never closed over), ``x`` is a waveform batch
``[B, N]`` (float32 samples at 32 kHz in [-1, 1]) and ``lengths`` ``[B]`` (int32) the valid samples
of each clip. Being hashable (a frozen dataclass) lets attacks take it as a static jit argument: the
same classifier and shapes never compile twice.

``ModelOutput`` carries what every attack needs:

* ``logits [B, Q, C]``: the per-chunk scores the attacks differentiate. For the Iqbal models these
  are the pre-softmax logits of each 128-frame chunk (the authors' ``dense_1/BiasAdd:0``); for the
  single-output Cochlear models ``Q = 1``.
* ``mask [B, Q]``: which chunk slots belong to the clip (the others are padding).
* ``probs [B, C]``: the clip-level probabilities that decide the predicted label.

:class:`Classifier` is that function for the five attacked models (front-end, chunking, Flax model,
merge); :class:`LinearClassifier` is the smallest example, for closed-form goldens.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from jaxadv import config as C
from jaxadv import models
from jaxadv.frontend import (
    CHUNKED_FRONTENDS,
    IqbalFrontend,
    feature_bins,
    get_frontend,
    merge_chunks,
    standardise,
)

Array = jax.Array


class ModelOutput(NamedTuple):
    """Outputs of a classifier function (see the module docstring for the shapes)."""

    logits: Array
    mask: Array
    probs: Array


class ClassifierFn(Protocol):
    """``fn(params, x [B, N], lengths [B]) -> ModelOutput``; must be hashable."""

    def __call__(self, params: Any, x: Array, lengths: Array) -> ModelOutput: ...


@dataclasses.dataclass(frozen=True)
class LinearClassifier:
    """A linear classifier on the raw waveform: ``logits = x @ w + b`` (one chunk per clip).

    Used for closed-form goldens (the minimal L2 perturbation of a linear model is known) and as
    the smallest example of the classifier contract. ``params = {"w": [N, C], "b": [C]}``;
    samples beyond a clip's length are ignored.
    """

    def __call__(self, params: Any, x: Array, lengths: Array) -> ModelOutput:
        n = x.shape[1]
        valid = jnp.arange(n)[None, :] < jnp.asarray(lengths)[:, None]
        logits = jnp.where(valid, x, 0.0) @ params["w"] + params["b"]
        return ModelOutput(
            logits[:, None, :],
            jnp.ones((x.shape[0], 1), bool),
            jax.nn.softmax(logits, axis=-1),
        )


# ---------------------------------------------------------------------------------------------
# The classifier of the five attacked models
# ---------------------------------------------------------------------------------------------

MERGE_MODES = ("mean", "gmean")
COCHLEAR_LOGITS = ("probs", "log_probs")


@dataclasses.dataclass(frozen=True)
class Classifier:
    """One of the five models with its front-end, as a classifier function (hashable).

    ``clf(params, x [B, N], lengths [B]) -> ModelOutput``, a pure function of the params pytree::

        {"model": {"params": ..., "batch_stats": ...},   # the Flax variables
         "norm": {"mean": f32[], "std": f32[]}}          # Iqbal models only

    (the standardisation scalars are arrays, so a new checkpoint never recompiles). Batch norm
    runs in inference mode.

    * Iqbal models (vgg13, crnn, gcnn): ``frontend(x, lengths)`` → chunks ``[B, Q, 128, F]``
      (``F = 64`` mel bands for "iqbal"/"iqbal_attack"; 513 for "stft", 96 for "cqt") →
      ``(chunk - mean) / (std + 1e-6)`` → model on ``[B*Q, 128, F, 1]`` → ``logits [B, Q, C]``
      (the true pre-softmax chunk logits, ``dense_1/BiasAdd:0``); ``probs`` = the chunk softmaxes
      merged over valid chunks (``merge="mean"``: the authors' attack scripts; ``"gmean"``: Iqbal's
      inference).
    * Cochlear models (dense_mel, dense_wav): the model takes the waveform itself
      (``frontend=None``); ``probs`` = the average of the 8 heads' softmaxes (``average_1``);
      ``logits [B, 1, C]`` = those averaged probabilities (``cochlear_logits="probs"``: what the
      authors' attacks differentiate, ORIGINALS.md §5.1) or their log (``"log_probs"``);
      :meth:`heads` gives each head's pre-softmax output.

    Build one with :meth:`build` (or :func:`jaxadv.checkpoint.load_checkpoint`).
    """

    model_config: Any  # a frozen config of jaxadv.models (its ``name`` picks the model)
    frontend: Any = None  # a CHUNKED_FRONTENDS config for Iqbal models, None otherwise
    merge: str = "mean"  # Iqbal clip merge of chunk probabilities: "mean" | "gmean"
    cochlear_logits: str = "probs"  # Cochlear ModelOutput.logits: "probs" | "log_probs"

    def __post_init__(self) -> None:
        fam = self.model_config.family
        if fam == "iqbal":
            if self.frontend is None:
                object.__setattr__(self, "frontend", IqbalFrontend())
            if not isinstance(self.frontend, CHUNKED_FRONTENDS):
                names = ", ".join(repr(c.name) for c in CHUNKED_FRONTENDS)
                raise ValueError(
                    f"model {self.model!r} needs a chunking front-end ({names}), "
                    f"got {self.frontend!r}"
                )
            # The models are convolutional with global pooling, so their params fit any number
            # of frequency rows; but each 2x2 'valid' max-pool halves the rows, and fewer than
            # 2**n_pools rows would leave nothing to pool (NaN logits).
            need = 2 ** len(getattr(self.model_config, "filters", ()))
            if feature_bins(self.frontend) < need:
                raise ValueError(
                    f"model {self.model!r} needs at least {need} frequency rows, the front-end "
                    f"{self.frontend!r} gives {feature_bins(self.frontend)}"
                )
        elif self.frontend is not None:
            raise ValueError(
                f"model {self.model!r} computes its own features from the waveform; "
                f"frontend must be None, got {self.frontend!r}"
            )
        if self.merge not in MERGE_MODES:
            raise ValueError(f"merge must be one of {MERGE_MODES}, got {self.merge!r}")
        if self.cochlear_logits not in COCHLEAR_LOGITS:
            raise ValueError(
                f"cochlear_logits must be one of {COCHLEAR_LOGITS}, got {self.cochlear_logits!r}"
            )

    @classmethod
    def build(
        cls,
        model: str,
        *,
        width: float = 1.0,
        num_classes: int | None = None,
        frontend: str | None = None,
        merge: str = "mean",
        cochlear_logits: str = "probs",
        **overrides: Any,
    ) -> Classifier:
        """A classifier for model ``model`` (``jaxadv.models.MODELS``).

        Args:
          model: "vgg13", "crnn", "gcnn", "dense_mel" or "dense_wav".
          width: width multiplier (1.0 = the paper's model).
          num_classes: classes (default 41).
          frontend: Iqbal models: "iqbal" (default, as trained), "iqbal_attack" (the paper
            authors' graph front-end), or "stft" / "cqt" (linear-frequency / constant-Q dB
            spectrograms, 513 / 96 rows, for models trained on them: the params do not depend on
            the number of rows). Must be None for the Cochlear models.
          merge, cochlear_logits: see the class docstring.
          overrides: further model-config fields.
        """
        cfg = models.get_config(
            model,
            width=width,
            num_classes=C.NUM_CLASSES if num_classes is None else num_classes,
            **overrides,
        )
        fe = None
        if cfg.family == "iqbal":
            fe = get_frontend(frontend or "iqbal")
        elif frontend is not None:
            raise ValueError(f"model {model!r} takes no front-end, got frontend={frontend!r}")
        return cls(cfg, fe, merge, cochlear_logits)

    # --- description ---------------------------------------------------------------------------

    @property
    def model(self) -> str:
        """The model's registry name."""
        return self.model_config.name

    @property
    def family(self) -> str:
        """``"iqbal"`` (chunked log-mel input) or ``"cochlear"`` (waveform input)."""
        return self.model_config.family

    @property
    def num_classes(self) -> int:
        return self.model_config.num_classes

    def module(self) -> Any:
        """The Flax module."""
        return self.model_config.module()

    # --- parameters ----------------------------------------------------------------------------

    def init_params(self, key: Array, *, mean: float = 0.0, std: float = 1.0) -> dict[str, Any]:
        """Fresh params (Keras initialisers); ``mean``/``std``: Iqbal standardisation scalars."""
        params: dict[str, Any] = {"model": models.init_variables(self.model_config, key)}
        if self.family == "iqbal":
            params["norm"] = {
                "mean": jnp.asarray(mean, jnp.float32),
                "std": jnp.asarray(std, jnp.float32),
            }
        return params

    def abstract_params(self) -> dict[str, Any]:
        """The params pytree as ``jax.ShapeDtypeStruct`` leaves (nothing is computed)."""
        return jax.eval_shape(lambda k: self.init_params(k), jax.random.key(0))

    # --- forward -------------------------------------------------------------------------------

    def chunk_logits(self, params: Any, chunks: Array) -> Array:
        """Iqbal models: un-standardised dB chunks ``[..., 128, F]`` → logits ``[..., C]``."""
        if self.family != "iqbal":
            raise ValueError(f"chunk_logits is for the Iqbal models, not {self.model!r}")
        lead = chunks.shape[:-2]
        z = standardise(chunks, params["norm"]["mean"], params["norm"]["std"])
        z = z.reshape(-1, *chunks.shape[-2:], 1)
        logits = self.module().apply(params["model"], z)
        return logits.reshape(*lead, logits.shape[-1])

    def heads(self, params: Any, x: Array, lengths: Array) -> Array:
        """Cochlear models: each head's pre-softmax output ``[B, n_heads, C]``."""
        if self.family != "cochlear":
            raise ValueError(f"heads is for the Cochlear models, not {self.model!r}")
        x, lengths = check_batch(x, lengths)
        return self.module().apply(params["model"], x, lengths)

    def __call__(self, params: Any, x: Array, lengths: Array) -> ModelOutput:
        """Waveform batch ``[B, N]`` (32 kHz) and valid lengths ``[B]`` → :class:`ModelOutput`."""
        x, lengths = check_batch(x, lengths)
        if self.family == "iqbal":
            chunks, mask = self.frontend(x, lengths)
            logits = self.chunk_logits(params, chunks)
            probs = merge_chunks(jax.nn.softmax(logits, axis=-1), mask, self.merge)
            return ModelOutput(logits, mask, probs)
        heads = self.heads(params, x, lengths)
        log_p = jax.nn.log_softmax(heads, axis=-1)
        # log of the mean of the heads' softmaxes, computed stably
        log_avg = jax.nn.logsumexp(log_p, axis=1) - jnp.log(float(heads.shape[1]))
        probs = jnp.mean(jnp.exp(log_p), axis=1)
        logits = probs if self.cochlear_logits == "probs" else log_avg
        return ModelOutput(logits[:, None, :], jnp.ones((x.shape[0], 1), bool), probs)

    def predict(self, params: Any, x: Array, lengths: Array) -> Array:
        """Clip probabilities ``[B, C]``, through one jit-compiled program per shape."""
        return _jit_call(self, params, x, lengths).probs


def check_batch(x: Array, lengths: Array) -> tuple[Array, Array]:
    """``(x float32 [B, N], lengths int32 [B])``, or a ValueError naming both shapes: the input
    check of every classifier function (this module's, :mod:`jaxadv.adapter`'s, :mod:`jaxadv.vad`'s)."""
    x = jnp.asarray(x, jnp.float32)
    lengths = jnp.asarray(lengths, jnp.int32)
    if x.ndim != 2 or lengths.shape != (x.shape[0],):
        raise ValueError(
            f"expected a waveform batch x [B, N] and lengths [B], got x {x.shape} and "
            f"lengths {lengths.shape}"
        )
    return x, lengths


@functools.partial(jax.jit, static_argnums=0)
def _jit_call(clf: Classifier, params: Any, x: Array, lengths: Array) -> ModelOutput:
    return clf(params, x, lengths)
