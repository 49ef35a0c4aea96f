"""Shared pieces of the attacks: scores, distances, masks, compaction, input and config validation.

Scores
------
Every gradient attack differentiates *scores* chosen by a ``scores`` option (a static config field):

* ``"log_probs"`` (default): ``s = log(probs)`` of the clip, ``[B, C]``, treated as one chunk. For a
  single-chunk logit model, log-softmax differences equal logit differences, so margins and DeepFool
  steps are exactly Carlini's / DeepFool's on the logits; for a multi-chunk clip it linearises the
  actual clip decision (``argmax probs``); for the Cochlear models (whose ``logits`` are already
  probabilities) it avoids attacking probabilities.
* ``"logits"`` (the paper authors' choice): the per-chunk ``ModelOutput.logits [B, Q, C]``; losses
  are summed over the valid chunks (the authors repeat the label per chunk and sum, ORIGINALS.md
  §5.1). For the Cochlear models these "logits" are the head-averaged probabilities, as the authors
  used them.

Losses are therefore written once, per chunk, over ``[B, Q, C]`` scores with a ``[B, Q]`` mask
(:func:`chunk_scores`); clip-level scores for margin tests come from :func:`clip_scores`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import config as C
from jaxadv.classifier import ModelOutput

Array = jax.Array
Scores = Literal["log_probs", "logits"]

BOX = (C.BOX_MIN, C.BOX_MAX)  # waveform box of every attack
# Input waveforms are rejected when a valid sample's |x| exceeds (1 + BOX_TOLERANCE) times the box
# bound. Not 1e-3 (float rounding only): jaxadv.audio.load_audio resamples without clipping, and
# resampling a recording clipped at full scale overshoots the box (44.1 -> 32 kHz, soxr HQ: a
# full-scale square wave peaks at 1.22, clipped Gaussian noise at 1.80); the attacks that need
# the box clip to it first, as the authors do. A scale error is orders of magnitude beyond:
# int16 samples as floats peak at up to 32767, and any int16 clip louder than 2 LSB is caught.
BOX_TOLERANCE = 1.0
BOX_LIMIT = max(abs(C.BOX_MIN), abs(C.BOX_MAX)) * (1.0 + BOX_TOLERANCE)
TANH_SHRINK = 0.999999  # Carlini's factor keeping atanh finite at the box edges


def safe_log(p: Array) -> Array:
    """``log(p)`` with ``p`` floored at the smallest normal float (finite value and gradient at 0)."""
    return jnp.log(jnp.maximum(p, jnp.finfo(p.dtype).tiny))


def _log_prob_scores(out: ModelOutput) -> tuple[Array, Array]:
    s = safe_log(out.probs)[:, None, :]
    return s, jnp.ones(s.shape[:2], bool)


def _logit_scores(out: ModelOutput) -> tuple[Array, Array]:
    return out.logits, out.mask


SCORES = {"log_probs": _log_prob_scores, "logits": _logit_scores}


def check_scores(scores: str) -> None:
    """Raise a clear error for an unknown ``scores`` option."""
    if scores not in SCORES:
        raise ValueError(f"unknown scores {scores!r}; choose one of {sorted(SCORES)}")


def chunk_scores(out: ModelOutput, scores: str) -> tuple[Array, Array]:
    """Per-chunk scores ``[B, Q, C]`` and the chunk mask ``[B, Q]`` (bool) losses are summed over."""
    return SCORES[scores](out)


def clip_scores(out: ModelOutput, scores: str) -> Array:
    """Clip-level scores ``[B, C]``: the per-chunk scores averaged over the valid chunks.

    Equal to ``log(probs)`` for ``"log_probs"`` and to the logits for a single-chunk model.
    """
    s, m = chunk_scores(out, scores)
    w = m.astype(s.dtype)[:, :, None]
    return jnp.sum(s * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


def chunk_sum(values: Array, mask: Array) -> Array:
    """Sum of per-chunk values ``[B, Q]`` over the valid chunks -> ``[B]``."""
    return jnp.sum(jnp.where(mask, values, 0.0), axis=1)


def cross_entropy(out: ModelOutput, classes: Array, scores: str) -> Array:
    """Softmax cross-entropy of the scores against ``classes [B]``, summed over valid chunks -> ``[B]``.

    With ``"log_probs"`` this is ``-log probs[classes]`` (the log-softmax of log-probabilities is
    themselves); with ``"logits"`` it is the authors' per-chunk ``sparse_softmax_cross_entropy``.
    """
    s, m = chunk_scores(out, scores)
    logp = jax.nn.log_softmax(s, axis=-1)
    ce = -jnp.take_along_axis(logp, classes[:, None, None], axis=-1)[..., 0]
    return chunk_sum(ce, m)


def other_max(s: Array, classes: Array) -> Array:
    """``max_{j != classes} s[..., j]`` for scores ``[B, Q, C]`` and ``classes [B]`` -> ``[B, Q]``."""
    onehot = jax.nn.one_hot(classes, s.shape[-1], dtype=bool)[:, None, :]
    return jnp.max(jnp.where(onehot, -jnp.inf, s), axis=-1)


def class_score(s: Array, classes: Array) -> Array:
    """``s[b, q, classes[b]]`` -> ``[B, Q]``."""
    return jnp.take_along_axis(s, classes[:, None, None], axis=-1)[..., 0]


# --- Carlini's binary search over the constant --------------------------------------------------

CONST_UPPER_INIT = 1e10  # Carlini's initial upper bound on the constant
CONST_SEARCHING = 1e9  # "no success yet" while the upper bound is at least this


def carlini_const_update(xp: Any, c: Any, lo: Any, up: Any, ok: Any) -> tuple[Any, Any, Any]:
    """Carlini's per-example update after a step at constant ``c`` (NumPy or JAX arrays via ``xp``).

    Success: ``up = min(up, c)``, ``c = (lo + up) / 2`` if ``up < 1e9``. Failure:
    ``lo = max(lo, c)``, ``c = (lo + up) / 2`` if ``up < 1e9`` else ``c * 10``. Returns
    ``(c, lo, up)``. Also the authors' L-BFGS rule.
    """
    up = xp.where(ok, xp.minimum(up, c), up)
    lo = xp.where(ok, lo, xp.maximum(lo, c))
    c = xp.where(up < CONST_SEARCHING, (lo + up) / 2, xp.where(ok, c, c * 10))
    return c, lo, up


# --- masks and distances ---------------------------------------------------------------------


def valid_mask(n: int, lengths: Array) -> Array:
    """``[B, n]`` bool, True where ``index < lengths[b]`` (the clip's valid samples)."""
    return jnp.arange(n)[None, :] < lengths[:, None]


def sum_squares(d: Array, valid: Array) -> Array:
    """``sum(d**2)`` over the valid samples -> ``[B]``."""
    return jnp.sum(jnp.where(valid, d * d, 0.0), axis=-1)


def to_tanh_space(x: Array) -> Array:
    """Carlini's ``w0 = atanh(x' * 0.999999)`` with ``x'`` the waveform mapped from the box to [-1, 1]."""
    lo, hi = BOX
    z = (jnp.clip(x, lo, hi) - (hi + lo) / 2) / ((hi - lo) / 2)
    return jnp.arctanh(z * TANH_SHRINK)


def from_tanh_space(w: Array) -> Array:
    """Inverse of :func:`to_tanh_space` (without the shrink): ``tanh(w)`` mapped onto the box."""
    lo, hi = BOX
    return jnp.tanh(w) * ((hi - lo) / 2) + (hi + lo) / 2


def where_b(mask: Array, a: Array, b: Array) -> Array:
    """``where`` with a per-example ``mask [B]`` broadcast over the trailing axes of ``a``/``b``."""
    return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim)), a, b)


def tree_where_b(mask: Array, a: Any, b: Any) -> Any:
    """:func:`where_b` over matching pytrees (e.g. optimiser states with a leading batch axis)."""
    return jax.tree.map(lambda u, v: where_b(mask, u, v), a, b)


# --- compaction: evaluate only the rows still running -------------------------------------------

COMPACT_LEVELS = 3  # default halvings of the evaluated batch (sizes B, B/2, B/4, B/8)


def check_compact(attack: str, levels: Any) -> None:
    """Raise a clear error unless ``compact_levels`` is a non-negative integer."""
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 0:
        raise ValueError(f"{attack}: compact_levels must be an integer >= 0, got {levels!r}")


def compaction_sizes(batch: int, levels: int) -> tuple[int, ...]:
    """Batch sizes an attack's evaluation may shrink to: ``batch`` then up to ``levels`` halvings.

    Halvings round up and stop at 1; ``levels=0`` gives ``(batch,)`` (no compaction).
    """
    if levels < 0:
        raise ValueError(f"compact_levels must be >= 0, got {levels}")
    sizes = [batch]
    for _ in range(levels):
        s = -(-sizes[-1] // 2)
        if s >= sizes[-1]:
            break
        sizes.append(s)
    return tuple(sizes)


def compact_map(f: Any, active: Array, rows: Any, sizes: tuple[int, ...]) -> Any:
    """``f(rows)`` computed on the ``active`` rows only, inside a compiled loop body.

    ``rows`` is a pytree of arrays with a leading batch axis ``B = sizes[0]``; ``f`` must treat
    rows independently (a classifier in inference mode does) and return a pytree of arrays with a
    leading batch axis. When at most ``sizes[i]`` rows are active (the smallest such size), the
    active rows are gathered (stable order) into a batch of ``sizes[i]``, ``f`` runs on that batch
    and its outputs are scattered back; rows not evaluated hold zeros, so the caller must only use
    the active rows' outputs. The choice is a ``lax.switch`` on the device (one branch per size,
    each compiled once; only the taken branch runs): no host sync and no recompilation. With all
    rows active, or ``len(sizes) == 1``, it is exactly ``f(rows)``.

    Why: an attack's loop runs until its slowest example is done; without this, every iteration
    pays a forward+backward for the whole batch even when one example is left.
    """
    if len(sizes) == 1:
        return f(rows)
    b = sizes[0]
    n_active = jnp.sum(active.astype(jnp.int32))
    order = jnp.argsort(jnp.where(active, 0, 1), stable=True)  # active rows first, in order

    def part(s: int):
        def run(rows: Any) -> Any:
            idx = order[:s]
            out = f(jax.tree.map(lambda a: a[idx], rows))
            return jax.tree.map(
                lambda o: jnp.zeros((b,) + o.shape[1:], o.dtype).at[idx].set(o), out
            )

        return run

    # sizes descend: the branch index is the number of smaller sizes that still hold n_active
    branch = sum((n_active <= s).astype(jnp.int32) for s in sizes[1:])
    return jax.lax.switch(branch, [f] + [part(s) for s in sizes[1:]], rows)


# --- random keys -----------------------------------------------------------------------------


def example_keys(key: Any, batch: int) -> Array:
    """Per-example typed keys ``[B]`` from one key (``fold_in(key, b)``) or from ``B`` keys.

    Accepts typed keys (``jax.random.key``) or raw ``uint32`` keys (``jax.random.PRNGKey``); with
    one key, example ``b`` gets ``fold_in(key, b)``, so its noise does not depend on the other
    examples of the batch; pass ``B`` keys (e.g. derived from file ids) to make it independent of
    the position too.
    """
    if key is None:
        raise ValueError("this attack needs a random key: pass key=jax.random.key(seed)")
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.dtype != jnp.uint32 or key.shape[-1:] != (2,):
            raise ValueError(
                f"key must be a typed key or a raw uint32 key of shape [..., 2], got "
                f"{key.dtype} {key.shape}"
            )
        key = jax.random.wrap_key_data(key)
    if key.shape == ():
        return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(batch))
    if key.shape == (batch,):
        return key
    raise ValueError(
        f"key must be one key or {batch} keys (one per example), got shape {key.shape}"
    )


# --- input validation (outside jit) -----------------------------------------------------------


def _leaf_sig(params: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(params)
    return treedef, tuple((tuple(np.shape(v)), str(jnp.result_type(v))) for v in leaves)


@functools.lru_cache(maxsize=256)
def _num_classes(fn: Any, sig: tuple, shape: tuple[int, int]) -> int:
    treedef, leaves = sig
    fake = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaves])
    out = jax.eval_shape(
        fn,
        fake,
        jax.ShapeDtypeStruct(shape, jnp.float32),
        jax.ShapeDtypeStruct(shape[:1], jnp.int32),
    )
    return int(out.probs.shape[-1])


def num_classes(fn: Any, params: Any, shape: tuple[int, int]) -> int:
    """Number of classes ``C`` of classifier ``fn`` (abstract evaluation, cached per shapes)."""
    return _num_classes(fn, _leaf_sig(params), tuple(shape))


def _int_vector(name: str, attack: str, v: Any, batch: int) -> np.ndarray:
    a = np.asarray(v)
    if a.shape != (batch,):
        raise ValueError(f"{attack}: {name} must have shape ({batch},), got {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{attack}: {name} must be integers, got dtype {a.dtype}")
    return a


def _row_stats_np(x: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: all samples finite ``[B]``, and the peak ``|x|`` of the finite valid samples ``[B]``."""
    finite = np.isfinite(x)
    valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
    peak = np.max(np.where(valid & finite, np.abs(x), 0.0), axis=1)
    return finite.all(axis=1), peak


@jax.jit
def _row_stats(x: Array, lengths: Array) -> tuple[Array, Array]:
    """:func:`_row_stats_np` on the device (one fused reduction; only ``[B]`` vectors come back)."""
    finite = jnp.isfinite(x)
    peak = jnp.max(jnp.where(valid_mask(x.shape[1], lengths) & finite, jnp.abs(x), 0.0), axis=1)
    return jnp.all(finite, axis=1), peak


def validate(
    attack: str,
    fn: Any,
    params: Any,
    x: Any,
    lengths: Any,
    labels: Any,
    targets: Any = None,
    *,
    targeted: Literal["never", "optional", "required"] = "optional",
) -> tuple[Array, Array, Array, Array | None]:
    """Check an attack's inputs on the host and return them as device arrays.

    Checks: ``x`` is ``[B, N]`` and finite; ``lengths`` is ``[B]`` integers in ``[1, N]``; the valid
    samples of ``x`` (``index < lengths[b]``) lie in the [-1, 1] box up to :data:`BOX_TOLERANCE`
    (catches int16-scale waveforms); labels and targets are ``[B]`` integers in ``[0, C)``;
    ``targets != labels``; targets are given iff the attack requires them. Raises ``ValueError``
    naming the array and the problem.
    """
    # a device array stays on the device: only per-row finiteness flags and peaks come back
    xa = x if isinstance(x, jax.Array) else np.asarray(x)
    if xa.ndim != 2:
        raise ValueError(f"{attack}: x must be a [B, N] waveform batch, got shape {xa.shape}")
    if not jnp.issubdtype(xa.dtype, jnp.floating):
        raise ValueError(f"{attack}: x must be floating point, got dtype {xa.dtype}")
    b, n = xa.shape
    if b == 0 or n == 0:
        raise ValueError(f"{attack}: x must be non-empty, got shape {xa.shape}")
    la = _int_vector("lengths", attack, lengths, b)
    if la.min() < 1 or la.max() > n:
        i = int(np.argmax((la < 1) | (la > n)))
        raise ValueError(f"{attack}: lengths[{i}] = {la[i]} is outside [1, {n}] (N = x.shape[1])")
    if isinstance(xa, jax.Array):
        finite, peak = jax.device_get(_row_stats(xa, jnp.asarray(la, jnp.int32)))
    else:
        finite, peak = _row_stats_np(xa, la)
    if not finite.all():
        rows = np.nonzero(~finite)[0][:5].tolist()
        raise ValueError(f"{attack}: x contains NaN or Inf (examples {rows})")
    over = np.nonzero(peak > BOX_LIMIT)[0]
    if over.size:
        rows = over[:5].tolist()
        peaks = ", ".join(f"{float(peak[i]):.6g}" for i in rows)
        raise ValueError(
            f"{attack}: x is outside the [{C.BOX_MIN:g}, {C.BOX_MAX:g}] waveform box (examples "
            f"{rows}, peak |x| {peaks}; limit {BOX_LIMIT:g}): pass float waveforms in [-1, 1], e.g. "
            "divide int16 samples by 32768 (jaxadv.audio.load_audio returns [-1, 1])"
        )
    c = num_classes(fn, params, (b, n))
    ya = _int_vector("labels", attack, labels, b)
    if ya.min() < 0 or ya.max() >= c:
        i = int(np.argmax((ya < 0) | (ya >= c)))
        raise ValueError(f"{attack}: labels[{i}] = {ya[i]} is outside [0, {c})")
    ta = None
    if targets is None:
        if targeted == "required":
            raise ValueError(f"{attack} is a targeted attack: pass targets=[B] class indices")
    else:
        if targeted == "never":
            raise ValueError(f"{attack} is untargeted only: do not pass targets")
        ta = _int_vector("targets", attack, targets, b)
        if ta.min() < 0 or ta.max() >= c:
            i = int(np.argmax((ta < 0) | (ta >= c)))
            raise ValueError(f"{attack}: targets[{i}] = {ta[i]} is outside [0, {c})")
        same = np.nonzero(ta == ya)[0]
        if same.size:
            i = int(same[0])
            raise ValueError(
                f"{attack}: targets[{i}] == labels[{i}] == {ta[i]}; a targeted attack needs a "
                "target different from the label"
            )
        ta = jnp.asarray(ta, jnp.int32)
    return (
        jnp.asarray(xa, jnp.float32),
        jnp.asarray(la, jnp.int32),
        jnp.asarray(ya, jnp.int32),
        ta,
    )


def check_choice(attack: str, field: str, value: Any, choices: Any) -> None:
    """Raise a clear error if a config field is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{attack}: {field}={value!r} is not one of {sorted(map(str, choices))}")


# --- config validation (each attack config's __post_init__) ----------------------------------


class Rule(NamedTuple):
    """A config field's valid values: ``ok(value)`` and the rule as words (``"an integer >= 1"``)."""

    text: str
    ok: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v: Any) -> bool:
    return _is_int(v) or isinstance(v, (float, np.floating))


def integer(lo: int, *, none: bool = False) -> Rule:
    """An integer ``>= lo`` (``none``: or None)."""
    text = f"an integer >= {lo}"
    return Rule(
        f"None or {text}" if none else text,
        lambda v: (none and v is None) or (_is_int(v) and v >= lo),
    )


def number(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    finite: bool = True,
) -> Rule:
    """A real number (never NaN; ``finite``: no inf) ``>= lo`` (``> lo`` if ``lo_open``), ``<= hi``."""

    def ok(v: Any) -> bool:
        if not _is_real(v) or math.isnan(v) or (finite and math.isinf(v)):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return hi is None or v <= hi

    kind = "a finite number" if finite else "a number (not NaN; inf allowed)"
    if lo is not None and hi is not None:
        text = f"{kind} in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
    elif lo is not None:
        text = f"{kind} {'>' if lo_open else '>='} {lo:g}"
    elif hi is not None:
        text = f"{kind} <= {hi:g}"
    else:
        text = kind
    return Rule(text, ok)


def choice(options: Any) -> Rule:
    """One of ``options`` (strings; a dict's keys)."""
    names = sorted(map(str, options))
    return Rule(f"one of {names}", lambda v: isinstance(v, str) and v in names)


def int_tuple(lo: int) -> Rule:
    """A tuple (hashable: configs are static jit arguments) of integers ``>= lo``."""
    return Rule(
        f"a tuple of integers >= {lo}",
        lambda v: isinstance(v, tuple) and all(_is_int(u) and u >= lo for u in v),
    )


BOOLEAN = Rule("True or False", lambda v: isinstance(v, (bool, np.bool_)))
SCORES_RULE = choice(SCORES)
COMPACT_RULE = integer(0)  # compact_levels


def check_fields(config: Any, rules: Mapping[str, Rule]) -> None:
    """Check every field of the dataclass ``config`` against its rule (call in ``__post_init__``).

    Raises ``ValueError("CWConfig: max_iterations must be an integer >= 1, got -3")``: the class,
    the field, the rule and the value. ``rules`` must name exactly the config's fields (a
    ``TypeError`` otherwise: a new field needs a rule), so ``dataclasses.replace`` (``--set``) is
    checked the same way.
    """
    cls = type(config).__name__
    names = [f.name for f in dataclasses.fields(config)]
    if set(names) != set(rules):
        raise TypeError(
            f"{cls}: rules for fields {sorted(set(names) - set(rules))} missing, "
            f"{sorted(set(rules) - set(names))} unknown"
        )
    for name in names:
        value = getattr(config, name)
        try:
            ok = rules[name].ok(value)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{cls}: {name} must be {rules[name].text}, got {value!r}")


def check_config(attack: str, config: Any, cls: type) -> None:
    """Raise a clear error unless ``config`` is a ``cls`` (e.g. a CWConfig passed to deepfool)."""
    if not isinstance(config, cls):
        raise TypeError(f"{attack}: config must be a {cls.__name__}, got {type(config).__name__}")
