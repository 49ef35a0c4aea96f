"""Per-example attack metrics and the paper's table summaries.

:func:`evaluate` runs one fresh forward pass on the original and on the adversarial batch and
returns :class:`AttackMetrics` (one ``[B]`` array per field). :func:`summarize` turns them into the
columns of the paper's Table 2 (Success %, New, GT New, SNR) and Table 3 (Acc., GT, New, GT new,
SNR), stating over which examples each mean is taken.

SNR in dB is ``10 * log10(sum x^2 / sum delta^2)`` over the clip's valid samples only; a zero
perturbation gives ``+inf`` and a silent clip with a non-zero perturbation ``-inf`` (never NaN).
The authors computed ``10*log10(mean(x^2) / mean(delta^2))`` on the zero-padded waveform
(ORIGINALS.md §5.8): with zeros in the padding and no perturbation there (as here) the ratio of
means equals the ratio of sums, so the values agree. Their targeted C&W script squares the *mean*
error instead (``np.mean(adv - data)**2``); that formula is available as
``snr_db(..., formula="authors_targeted")`` only to reproduce their Table 4.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.attacks import common, criteria
from jaxadv.classifier import ClassifierFn

Array = jax.Array


def _snr_correct(x: Array, delta: Array, valid: Array) -> tuple[Array, Array]:
    return common.sum_squares(x, valid), common.sum_squares(delta, valid)


def _snr_authors_targeted(x: Array, delta: Array, valid: Array) -> tuple[Array, Array]:
    nv = jnp.maximum(jnp.sum(valid, -1), 1).astype(x.dtype)
    mean_err = jnp.sum(jnp.where(valid, delta, 0.0), -1) / nv
    return common.sum_squares(x, valid) / nv, mean_err**2


SNR_FORMULAS = {"correct": _snr_correct, "authors_targeted": _snr_authors_targeted}


def snr_db(x: Array, adversarial: Array, lengths: Array, formula: str = "correct") -> Array:
    """SNR of ``adversarial - x`` in dB per example ``[B]``, over the valid samples.

    ``formula="correct"``: ``10 log10(sum x^2 / sum delta^2)``; ``"authors_targeted"``: the
    authors' targeted-C&W bug ``10 log10(mean x^2 / mean(delta)^2)``. A zero denominator gives
    ``+inf``, a zero numerator with a non-zero denominator ``-inf``.
    """
    common.check_choice("snr_db", "formula", formula, SNR_FORMULAS)
    x = jnp.asarray(x, jnp.float32)
    valid = common.valid_mask(x.shape[1], jnp.asarray(lengths))
    num, den = SNR_FORMULAS[formula](x, jnp.asarray(adversarial, jnp.float32) - x, valid)
    safe = 10.0 * jnp.log10(jnp.where(num > 0, num, 1.0) / jnp.where(den > 0, den, 1.0))
    return jnp.where(den == 0, jnp.inf, jnp.where(num == 0, -jnp.inf, safe))


class AttackMetrics(NamedTuple):
    """Per-example metrics, each ``[B]``.

    Attributes:
      success: the attack's own success flag (its criterion, e.g. the authors' thresholds).
      fooled: fresh forward pass on the adversarial: untargeted ``argmax != labels``, targeted
        ``argmax == targets``.
      original: the model's prediction on the original clip.
      new_label: the model's prediction on the adversarial clip.
      new_confidence: ``probs_adv[new_label]``.
      gt_confidence: ``probs_orig[label]`` (ground-truth confidence on the original).
      gt_confidence_adv: ``probs_adv[label]`` (ground-truth confidence on the adversarial).
      target_confidence: ``probs_adv[target]`` for a targeted attack, NaN when untargeted.
      snr_db: SNR of the perturbation in dB over the valid samples (see :func:`snr_db`).
      l2: ``||delta||_2`` over the valid samples.
      linf: ``max |delta|`` over the valid samples.
      steps: the attack's steps (iterations / evaluations, see each result type).
    """

    success: Array
    fooled: Array
    original: Array
    new_label: Array
    new_confidence: Array
    gt_confidence: Array
    gt_confidence_adv: Array
    target_confidence: Array
    snr_db: Array
    l2: Array
    linf: Array
    steps: Array


def _evaluate_impl(fn, params, x, lengths, labels, targets, adversarial, success, steps):
    valid = common.valid_mask(x.shape[1], lengths)
    p0 = fn(params, x, lengths).probs
    out1 = fn(params, adversarial, lengths)
    p1 = out1.probs
    new = jnp.argmax(p1, -1)

    def pick(p, c):
        return jnp.take_along_axis(p, c[:, None], -1)[:, 0]

    delta = jnp.where(valid, adversarial - x, 0.0)
    return AttackMetrics(
        success=success,
        fooled=criteria.decision(labels, targets).is_adversarial(out1),
        original=jnp.argmax(p0, -1),
        new_label=new,
        new_confidence=pick(p1, new),
        gt_confidence=pick(p0, labels),
        gt_confidence_adv=pick(p1, labels),
        target_confidence=(
            jnp.full(labels.shape, jnp.nan, p1.dtype) if targets is None else pick(p1, targets)
        ),
        snr_db=snr_db(x, adversarial, lengths),
        l2=jnp.sqrt(common.sum_squares(delta, valid)),
        linf=jnp.max(jnp.abs(delta), -1),
        steps=steps,
    )


_evaluate_jit = jax.jit(_evaluate_impl, static_argnames=("fn",))


def evaluate(
    fn: ClassifierFn,
    params: Any,
    x: Array,
    lengths: Array,
    labels: Array,
    result: Any,
    *,
    targets: Array | None = None,
) -> AttackMetrics:
    """Metrics of an attack ``result`` (any result with ``adversarial``, ``success``, ``steps``).

    Args:
      fn, params: the attacked classifier.
      x: ``[B, N]`` original waveforms; lengths ``[B]``; labels ``[B]`` ground truth.
      result: the attack's result NamedTuple.
      targets: ``[B]`` targets of a targeted attack (for ``fooled``), else None.
    """
    x, lengths, labels, targets = common.validate(
        "evaluate", fn, params, x, lengths, labels, targets
    )
    adv = jnp.asarray(result.adversarial, jnp.float32)
    if adv.shape != x.shape:
        raise ValueError(f"evaluate: result.adversarial has shape {adv.shape}, x has {x.shape}")
    return _evaluate_jit(
        fn,
        params,
        x,
        lengths,
        labels,
        targets,
        adv,
        jnp.asarray(result.success, bool),
        jnp.asarray(result.steps, jnp.int32),
    )


def _mean(v: np.ndarray) -> float:
    return float(np.mean(v)) if v.size else math.nan


# column -> (field, over which examples) for the summaries
SUMMARY_COLUMNS = {
    "n": "number of attacked examples",
    "success_pct": "100 * mean(success) over all attacked examples (Table 2 'Success %', Table 3 'Acc.')",
    "fooled_pct": "100 * mean(fooled) over all attacked examples (decision check, fresh forward)",
    "gt": "mean gt_confidence over all attacked examples (Table 3 'GT')",
    "new": "mean new_confidence over the successful examples (Table 2/3 'New')",
    "gt_new": "mean gt_confidence_adv over the successful examples (Table 2 'GT New', Table 3 'GT new')",
    "gt_new_all": "mean gt_confidence_adv over all attacked examples",
    "snr": "mean snr_db over the successful examples with a finite SNR (Table 2/3 'SNR')",
    "snr_nonfinite": "successful examples left out of 'snr' because their SNR is +-inf",
    "steps": "mean steps over all attacked examples",
}


def summarize(metrics: AttackMetrics) -> dict[str, float]:
    """Table 2/3 columns from per-example metrics (see :data:`SUMMARY_COLUMNS` for each mean's set).

    Means over an empty set are NaN (e.g. ``new`` when nothing succeeded).
    """
    m = jax.tree.map(np.asarray, metrics)
    ok = m.success.astype(bool)
    snr_ok = m.snr_db[ok]
    finite = np.isfinite(snr_ok)
    return {
        "n": float(ok.size),
        "success_pct": 100.0 * _mean(ok.astype(float)),
        "fooled_pct": 100.0 * _mean(m.fooled.astype(float)),
        "gt": _mean(m.gt_confidence),
        "new": _mean(m.new_confidence[ok]),
        "gt_new": _mean(m.gt_confidence_adv[ok]),
        "gt_new_all": _mean(m.gt_confidence_adv),
        "snr": _mean(snr_ok[finite]),
        "snr_nonfinite": float(np.sum(~finite)),
        "steps": _mean(m.steps.astype(float)),
    }


TABLE2 = ("success_pct", "new", "gt_new", "snr")  # Success %, New, GT New, SNR
TABLE3 = ("success_pct", "gt", "new", "gt_new", "snr")  # Acc., GT, New, GT new, SNR


# --- best-known minimal perturbations -----------------------------------------------------------
#
# Minimal-norm attacks are compared by their gap to the best perturbation ANY attack found for the
# same example (Pintor et al. 2021, "Fast Minimum-norm Adversarial Attacks through Adaptive Norm
# Constraints"): the best-known is the largest SNR (smallest perturbation) among the successful
# attacks of an example, and an attack's gap is ``best_snr - its snr`` in dB (>= 0; 0 for the
# attack that found it). Examples are grouped by an integer id (model x clip x target).


def best_known_snr(groups: np.ndarray, snr_db: np.ndarray, success: np.ndarray) -> np.ndarray:
    """Per row: the best-known SNR (dB) of its group — the largest SNR of a successful row.

    Args:
      groups: ``[R]`` integer group id of each row (one group per model x clip x target).
      snr_db: ``[R]`` SNR of each row's adversarial (dB).
      success: ``[R]`` whether the row's attack succeeded.

    Returns:
      ``[R]`` float: the group's best SNR, NaN for a group with no successful finite row.
    """
    groups, snr, ok = np.asarray(groups), np.asarray(snr_db, float), np.asarray(success, bool)
    if not (groups.shape == snr.shape == ok.shape) or groups.ndim != 1:
        raise ValueError(
            f"best_known_snr: groups, snr_db and success must be [R], got {groups.shape}, "
            f"{snr.shape}, {ok.shape}"
        )
    use = ok & np.isfinite(snr)
    ids, inv = np.unique(groups, return_inverse=True)
    best = np.full(ids.shape, -np.inf)
    np.maximum.at(best, inv[use], snr[use])
    best = np.where(np.isfinite(best), best, np.nan)
    return best[inv]


def gap_db(snr_db: np.ndarray, success: np.ndarray, best_snr: np.ndarray) -> np.ndarray:
    """``best_snr - snr_db`` for successful rows (>= 0 dB), NaN for failed ones."""
    snr, ok = np.asarray(snr_db, float), np.asarray(success, bool)
    return np.where(ok & np.isfinite(snr), np.asarray(best_snr, float) - snr, np.nan)


def summarize_gap(gap: np.ndarray) -> dict[str, float]:
    """Median and 90th percentile (dB) of the finite gaps of one attack's rows (NaN if none)."""
    g = np.asarray(gap, float)
    g = g[np.isfinite(g)]
    if not g.size:
        return {"gap_median": math.nan, "gap_p90": math.nan}
    return {"gap_median": float(np.median(g)), "gap_p90": float(np.percentile(g, 90))}
