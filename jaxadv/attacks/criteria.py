"""Success criteria: when is a model output adversarial? One place per meaning.

Each criterion is a small pytree (its per-example arrays are leaves, its settings static) with
``is_adversarial(out) -> [B]`` over a classifier's :class:`~jaxadv.classifier.ModelOutput`, in the
shape of Foolbox 3's ``criteria.py`` (``Misclassification(labels)``,
``TargetedMisclassification(targets)``). The attacks, :func:`jaxadv.attacks.evaluate`, the
experiments and the transfer command all use these, so a meaning is written once:

* :class:`Misclassification` — the clip decision moved away from a class: ``argmax probs != y``.
* :class:`TargetedMisclassification` — the clip decision is the target: ``argmax probs == t``.
* :class:`Margin` — Carlini's ``compare()`` with confidence ``kappa`` on clip-level scores, AND
  the decision changed (C&W's success test).
* :class:`ProbabilityThreshold` — the paper authors' probability thresholds (ORIGINALS.md §5.5;
  untargeted ``probs[y] < 0.0244 and argmax != y``, targeted ``probs[t] >= 0.975``), AND the
  decision changed.

:func:`decision` builds the plain criterion of an (optionally targeted) attack.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxadv import config as C
from jaxadv.attacks import common
from jaxadv.classifier import ModelOutput

Array = jax.Array


def _pytree(cls: type) -> type:
    """Register a frozen dataclass as a pytree: array fields are leaves, the rest static."""
    fields = [f.name for f in dataclasses.fields(cls)]
    data = [f for f in fields if f in cls._leaves]
    meta = [f for f in fields if f not in cls._leaves]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)


def _pick(p: Array, c: Array) -> Array:
    return jnp.take_along_axis(p, c[:, None], -1)[:, 0]


@_pytree
@dataclasses.dataclass(frozen=True)
class Misclassification:
    """Untargeted: ``argmax probs != labels`` (labels ``[B]``)."""

    labels: Array
    _leaves = ("labels",)

    def is_adversarial(self, out: ModelOutput) -> Array:
        return jnp.argmax(out.probs, axis=-1) != self.labels

    @property
    def targeted(self) -> bool:
        return False


@_pytree
@dataclasses.dataclass(frozen=True)
class TargetedMisclassification:
    """Targeted: ``argmax probs == targets`` (targets ``[B]``)."""

    targets: Array
    _leaves = ("targets",)

    def is_adversarial(self, out: ModelOutput) -> Array:
        return jnp.argmax(out.probs, axis=-1) == self.targets

    @property
    def targeted(self) -> bool:
        return True


def decision(labels: Array, targets: Array | None) -> Misclassification | TargetedMisclassification:
    """The plain decision criterion: away from ``labels``, or onto ``targets`` when given."""
    return Misclassification(labels) if targets is None else TargetedMisclassification(targets)


@_pytree
@dataclasses.dataclass(frozen=True)
class Margin:
    """Carlini's ``compare()``: argmax of the clip scores after moving the class by ``confidence``.

    Untargeted (``targets`` None): ``s[y] += kappa; argmax != y``; targeted: ``s[t] -= kappa;
    argmax == t``; scores from :func:`jaxadv.attacks.common.clip_scores`. Also requires the clip
    decision (:func:`decision`) to have changed, which differs from the scores' argmax for
    multi-chunk logits.
    """

    labels: Array
    targets: Array | None
    confidence: float = 0.0
    scores: str = "log_probs"
    _leaves = ("labels", "targets")

    def is_adversarial(self, out: ModelOutput) -> Array:
        s = common.clip_scores(out, self.scores)
        targeted = self.targets is not None
        cls = self.targets if targeted else self.labels
        sign = -1.0 if targeted else 1.0
        adj = s + sign * self.confidence * jax.nn.one_hot(cls, s.shape[-1], dtype=s.dtype)
        pred = jnp.argmax(adj, axis=-1)
        ok = pred == cls if targeted else pred != cls
        return ok & decision(self.labels, self.targets).is_adversarial(out)


@_pytree
@dataclasses.dataclass(frozen=True)
class ProbabilityThreshold:
    """The authors' thresholds: untargeted ``probs[y] < untargeted``, targeted ``probs[t] >= targeted``.

    Also requires the clip decision to have changed (untargeted: ``argmax != y``, as the authors
    test; targeted: ``argmax == t``, implied for thresholds above 0.5).
    """

    labels: Array
    targets: Array | None
    untargeted: float = C.AUTHORS_UNTARGETED_THRESHOLD
    targeted: float = C.AUTHORS_TARGETED_THRESHOLD
    _leaves = ("labels", "targets")

    def is_adversarial(self, out: ModelOutput) -> Array:
        if self.targets is None:
            ok = _pick(out.probs, self.labels) < self.untargeted
        else:
            ok = _pick(out.probs, self.targets) >= self.targeted
        return ok & decision(self.labels, self.targets).is_adversarial(out)


Criterion = Misclassification | TargetedMisclassification | Margin | ProbabilityThreshold


def is_adversarial(criterion: Any, out: ModelOutput) -> Array:
    """``criterion.is_adversarial(out)`` -> ``[B]`` bool (a function form for ``vmap``/``tree``)."""
    return criterion.is_adversarial(out)
