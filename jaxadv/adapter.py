"""Attack your own model: :func:`wrap` turns any JAX function into a jaxadv classifier.

Every attack, metric and experiment of jaxadv takes a *classifier function*
``clf(params, x [B, N], lengths [B]) -> ModelOutput`` (:mod:`jaxadv.classifier`). A user's model is
usually something else: a Flax ``module.apply``, a function of features rather than samples, a
model trained at 16 kHz, a list of its own class names. :func:`wrap` adapts it::

    clf, params = jaxadv.wrap(
        module.apply, variables, sample_rate=16_000, labels=("dog", "siren", "speech")
    )
    result = jaxadv.attacks.ATTACKS["deepfool"](clf, params, x, lengths, labels)

What the adapter does, in this order, inside one jit-able pure function of ``(params, x,
lengths)``:

1. zeroes the samples of ``x`` beyond each clip's length (a padded batch equals the clips alone
   for any model that ignores trailing silence);
2. ``chunking=(window, hop)``: cuts every clip into windows of ``window`` samples every ``hop``
   samples (the last one zero-padded; a clip shorter than a window is one window), and applies the
   model to each window, so one model trained on fixed-length inputs classifies clips of any
   length; the valid windows form ``ModelOutput.mask``;
3. ``frontend``: a hashable callable ``[B, n] -> features`` applied before the model (for
   example a log-mel of :mod:`jaxadv.frontend`), so attacks still perturb the waveform;
4. ``apply_fn(params, inputs)`` (or ``apply_fn(params, inputs, lengths)`` with
   ``takes_lengths=True``) returns ``[B, C]`` scores: ``outputs="logits"`` (pre-softmax),
   ``"probs"`` (probabilities that sum to one) or ``"log_probs"``;
5. the clip's probabilities are the windows' softmaxes merged over valid windows (``merge``:
   ``"mean"`` or ``"gmean"``, as :func:`jaxadv.frontend.merge_chunks`).

The result carries ``sample_rate`` and ``labels``: the experiments load clips at the model's rate
(resampled with soxr HQ at load, :func:`jaxadv.audio.load_audio`) and name classes by its labels
in every table, figure and CSV.

Hashability: attacks take the classifier as a static jit argument, so ``apply_fn`` and
``frontend`` must be hashable and *the same object* from call to call (a module-level function
or a Flax module's bound ``apply``); a fresh ``lambda`` per call compiles every attack again.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.classifier import ModelOutput, check_batch
from jaxadv.cli import UserError
from jaxadv.frontend import merge_chunks

Array = jax.Array

OUTPUTS = ("logits", "probs", "log_probs")
MERGES = ("mean", "gmean")
# log(p) of a "probs" model is clipped here: an exact zero would give -inf logits and NaN
# gradients, and 1e-30 is far below any probability float32 can tell from 1.
_LOG_FLOOR = 1e-30


class WrapError(UserError, ValueError):
    """A :func:`wrap` argument that cannot work (named with the fix)."""


@dataclasses.dataclass(frozen=True)
class Wrapped:
    """A user's model as a jaxadv classifier function (hashable; see the module docstring).

    ``clf(params, x [B, N], lengths [B]) -> ModelOutput(logits [B, Q, C], mask [B, Q],
    probs [B, C])`` with ``x`` in [-1, 1] at ``sample_rate`` Hz and ``Q`` the windows of
    ``chunking`` (1 without).
    """

    apply_fn: Callable[..., Array]
    sample_rate: int
    labels: tuple[str, ...]
    outputs: str = "logits"
    chunking: tuple[int, int] | None = None  # (window, hop) in samples
    frontend: Callable[[Array], Array] | None = None
    takes_lengths: bool = False
    merge: str = "mean"
    name: str = "custom"

    # --- the attributes the experiments read -------------------------------------------------

    @property
    def model(self) -> str:
        return self.name

    @property
    def family(self) -> str:
        """Custom models take waveforms: the experiments give them the waveform models' attack
        settings (those of dense_mel and dense_wav)."""
        return "custom"

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def windows(self, n: int) -> int:
        """Windows ``Q`` of a batch of ``n`` samples."""
        if self.chunking is None:
            return 1
        window, hop = self.chunking
        return 1 if n <= window else 1 + -(-(n - window) // hop)

    def __call__(self, params: Any, x: Array, lengths: Array) -> ModelOutput:
        x, lengths = check_batch(x, lengths)
        b, n = x.shape
        x = jnp.where(jnp.arange(n)[None, :] < lengths[:, None], x, 0.0)
        if self.chunking is None:
            scores = self._apply(params, x, lengths)[:, None, :]
            mask = jnp.ones((b, 1), bool)
        else:
            window, hop = self.chunking
            q = self.windows(n)
            x = jnp.pad(x, ((0, 0), (0, (q - 1) * hop + window - n)))
            # a gather of static indices: the windows overlap when hop < window
            idx = np.arange(q)[:, None] * hop + np.arange(window)[None, :]
            chunks = x[:, idx].reshape(b * q, window)
            starts = jnp.arange(q) * hop
            chunk_len = jnp.clip(lengths[:, None] - starts[None, :], 0, window).reshape(b * q)
            scores = self._apply(params, chunks, chunk_len).reshape(b, q, -1)
            mask = (starts[None, :] < lengths[:, None]) | (jnp.arange(q) == 0)[None, :]
        if self.outputs == "logits":
            logits = scores
            probs = jax.nn.softmax(scores, axis=-1)
        elif self.outputs == "log_probs":
            logits, probs = scores, jnp.exp(scores)
        else:
            logits, probs = jnp.log(jnp.maximum(scores, _LOG_FLOOR)), scores
        return ModelOutput(logits, mask, merge_chunks(probs, mask, self.merge))

    def _apply(self, params: Any, x: Array, lengths: Array) -> Array:
        inputs = x if self.frontend is None else self.frontend(x)
        out = (
            self.apply_fn(params, inputs, lengths)
            if self.takes_lengths
            else self.apply_fn(params, inputs)
        )
        return jnp.asarray(out, jnp.float32)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description that is the same from run to run (no memory addresses): what
        a run's fingerprint records of the model besides its params."""
        return {
            "adapter": "jaxadv.wrap",
            "apply_fn": _name_of(self.apply_fn),
            "frontend": _name_of(self.frontend),
            "sample_rate": self.sample_rate,
            "outputs": self.outputs,
            "chunking": None if self.chunking is None else list(self.chunking),
            "takes_lengths": self.takes_lengths,
            "merge": self.merge,
            "name": self.name,
        }

    def predict(self, params: Any, x: Array, lengths: Array) -> Array:
        """Clip probabilities ``[B, C]`` through one compiled program per shape."""
        return _jit_call(self, params, x, lengths).probs

    def load(self, path: Any) -> np.ndarray:
        """A clip as mono float32 ``[n]`` at this model's rate (resampled, soxr HQ)."""
        from jaxadv import audio

        return audio.load_audio(path, self.sample_rate)


def _name_of(fn: Any) -> str | None:
    if fn is None:
        return None
    owner = getattr(fn, "__self__", None)
    qual = getattr(fn, "__qualname__", None)
    if qual is None:  # a callable object (e.g. a frozen dataclass front-end): its repr
        return repr(fn)
    name = f"{getattr(fn, '__module__', '?')}.{qual}"
    return name if owner is None else f"{name} of {owner!r}"


class WrappedModel(NamedTuple):
    """:func:`wrap`'s result: unpack it as ``clf, params = jaxadv.wrap(...)``."""

    classifier: Wrapped
    params: Any


def wrap(
    apply_fn: Callable[..., Array],
    params: Any,
    *,
    sample_rate: int,
    labels: Sequence[str],
    outputs: str = "logits",
    chunking: tuple[int, int] | None = None,
    frontend: Callable[[Array], Array] | None = None,
    takes_lengths: bool = False,
    merge: str = "mean",
    name: str = "custom",
    check: bool = True,
) -> WrappedModel:
    """A user's JAX function as a classifier every attack, metric and experiment accepts.

    Args:
      apply_fn: ``apply_fn(params, inputs [B, ...]) -> [B, C]`` (plus ``lengths [B]`` with
        ``takes_lengths``), hashable and the same object each time (e.g. ``module.apply``).
      params: its parameters, any pytree of arrays (converted to float32 ``jax.Array`` leaves).
      sample_rate: the rate the model was trained at, in Hz; clips are resampled to it at load.
      labels: one name per output class, in output order.
      outputs: what ``apply_fn`` returns: ``"logits"``, ``"probs"`` or ``"log_probs"``.
      chunking: ``(window, hop)`` in samples: classify windows and merge them (see the module
        docstring); ``None``: the model takes the whole (zero-padded) clip.
      frontend: hashable ``[B, n] -> features`` applied before ``apply_fn`` (None: samples).
      takes_lengths: pass each (window's) valid length to ``apply_fn`` as a third argument.
      merge: how window probabilities become the clip's: ``"mean"`` or ``"gmean"``.
      name: the model's name in tables and file names.
      check: run the model once (abstractly, nothing computed) on one second of audio and check
        that it returns ``[B, len(labels)]``.

    Raises:
      WrapError: a bad argument or an output shape that does not match ``labels``, one line
        naming it.
    """
    labels = tuple(str(lab) for lab in labels)
    if not labels or len(set(labels)) != len(labels):
        raise WrapError(f"labels must be unique class names, one per output; got {list(labels)}")
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise WrapError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    if outputs not in OUTPUTS:
        raise WrapError(f"outputs must be one of {OUTPUTS}, got {outputs!r}")
    if merge not in MERGES:
        raise WrapError(f"merge must be one of {MERGES}, got {merge!r}")
    if chunking is not None:
        if len(chunking) != 2 or min(int(chunking[0]), int(chunking[1])) < 1:
            raise WrapError(f"chunking must be (window, hop) in samples, both >= 1; got {chunking}")
        chunking = (int(chunking[0]), int(chunking[1]))
    for what, fn in (("apply_fn", apply_fn), ("frontend", frontend)):
        if fn is None and what == "frontend":
            continue
        try:
            hash(fn)
        except TypeError:
            raise WrapError(
                f"{what} must be hashable (attacks take the classifier as a static jit "
                f"argument): use a module-level function or a Flax module's apply, not {fn!r}"
            ) from None
    clf = Wrapped(
        apply_fn, int(sample_rate), labels, outputs, chunking, frontend, takes_lengths, merge,
        name,
    )  # fmt: skip
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    if check:
        n = chunking[0] if chunking else int(sample_rate)
        x = jax.ShapeDtypeStruct((2, n), jnp.float32)
        lens = jax.ShapeDtypeStruct((2,), jnp.int32)
        try:
            out = jax.eval_shape(clf, params, x, lens)
        except Exception as e:  # the user's function failed on a plain batch
            raise WrapError(
                f"{name}: the model fails on a batch x [2, {n}] at {sample_rate} Hz: "
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            ) from e
        if out.probs.shape != (2, len(labels)):
            raise WrapError(
                f"{name}: the model returns {out.logits.shape[-1]} scores per clip but "
                f"{len(labels)} labels were given; give one label per output"
            )
    return WrappedModel(clf, params)


@functools.partial(jax.jit, static_argnums=0)
def _jit_call(clf: Wrapped, params: Any, x: Array, lengths: Array) -> ModelOutput:
    return clf(params, x, lengths)
