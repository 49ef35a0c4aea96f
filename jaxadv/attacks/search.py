"""The search over the constant ``c`` of C&W and L-BFGS, written once as ``init``/``update`` pairs.

A search is a frozen (hashable) strategy object. ``init(xp, batch, dtype=float32)`` gives a :class:`SearchState`
of per-example arrays and ``update(xp, state, ok)`` takes the outcome ``ok [B]`` of a solve (or a
C&W binary-search step) at ``state.const`` and returns ``(state, finished [B])``. ``xp`` is an
array namespace (``numpy`` or ``jax.numpy``), so L-BFGS's host-side scipy mode and the compiled
attacks share the same code.

* :class:`CarliniBisection` — Carlini's rule (carlini/nn_robust_attacks ``l2_attack.py``; also the
  authors' ``lbfgs.py``): success ``up = min(up, c)``, ``c = (lo + up) / 2`` if ``up < 1e9``;
  failure ``lo = max(lo, c)``, ``c = (lo + up) / 2`` if ``up < 1e9`` else ``c * 10``. With
  ``repeat_last`` (Carlini's ``binary_search_steps >= 10``) the last step runs at ``c = up``.
* :class:`AuthorsHalving` — the paper authors' C&W as coded (``carlini_wagner_method.py``): both
  ``if`` blocks sit inside the success branch, so a success halves ``c`` (``lo`` stays 0) and a
  failure leaves it unchanged.
* :class:`Foolbox1Doubling` — Foolbox 1.8 ``LBFGSAttack``: ``c = 2 eps, 4 eps, ...`` (at most
  ``max_doublings``) until a success, then bisection on ``[0, c]`` until ``up - lo < eps``.
* :class:`GeometricBisection` — the same bracket in log space (``c / factor`` after a success,
  ``c * factor`` after a failure, then ``sqrt(lo * up)``): C&W's ``const_update="geometric"``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

CONST_UPPER_INIT = 1e10  # Carlini's initial upper bound on the constant
CONST_SEARCHING = 1e9  # "no success yet" while the upper bound is at least this


class SearchState(NamedTuple):
    """Per-example search state (all ``[B]``): the constant to use next and the bracket."""

    const: Any
    lo: Any
    up: Any
    count: Any  # steps run (bisections) or doublings (Foolbox 1.x)
    phase: Any  # 0 = doubling, 1 = bisecting (Foolbox 1.x; always 0 otherwise)


def _init(xp: Any, batch: int, c0: float, dtype: Any) -> SearchState:
    f, i32 = dtype or xp.float32, xp.int32
    return SearchState(
        const=xp.full((batch,), c0, f),
        lo=xp.zeros((batch,), f),
        up=xp.full((batch,), CONST_UPPER_INIT, f),
        count=xp.zeros((batch,), i32),
        phase=xp.zeros((batch,), i32),
    )


def carlini_update(xp: Any, c: Any, lo: Any, up: Any, ok: Any) -> tuple[Any, Any, Any]:
    """Carlini's per-example update after a step at ``c``; returns ``(c, lo, up)``."""
    up = xp.where(ok, xp.minimum(up, c), up)
    lo = xp.where(ok, lo, xp.maximum(lo, c))
    c = xp.where(up < CONST_SEARCHING, (lo + up) / 2, xp.where(ok, c, c * 10))
    return c, lo, up


@dataclasses.dataclass(frozen=True)
class CarliniBisection:
    """Carlini's bisection with ×10 growth until the first success; ``steps`` steps in all."""

    initial: float
    steps: int
    repeat_last: bool = False

    def init(self, xp: Any, batch: int, dtype: Any = None) -> SearchState:
        return _init(xp, batch, self.initial, dtype)

    def update(self, xp: Any, st: SearchState, ok: Any) -> tuple[SearchState, Any]:
        c, lo, up = carlini_update(xp, st.const, st.lo, st.up, ok)
        count = st.count + 1
        if self.repeat_last:
            c = xp.where(count == self.steps - 1, up, c)
        return SearchState(c, lo, up, count, st.phase), count >= self.steps


@dataclasses.dataclass(frozen=True)
class AuthorsHalving:
    """The paper authors' C&W rule as coded: halve on success, keep on failure."""

    initial: float
    steps: int

    def init(self, xp: Any, batch: int, dtype: Any = None) -> SearchState:
        return _init(xp, batch, self.initial, dtype)

    def update(self, xp: Any, st: SearchState, ok: Any) -> tuple[SearchState, Any]:
        c, lo, up = st.const, st.lo, st.up
        up2 = xp.where(ok, xp.minimum(up, c), up)
        c_a = xp.where(up2 < CONST_SEARCHING, (lo + up2) / 2, c)
        lo_a = xp.where(up2 < CONST_SEARCHING, lo, xp.maximum(lo, c))
        c_b = xp.where(up2 < CONST_SEARCHING, (lo_a + up2) / 2, c_a * 10)
        count = st.count + 1
        new = SearchState(xp.where(ok, c_b, c), xp.where(ok, lo_a, lo), up2, count, st.phase)
        return new, count >= self.steps


@dataclasses.dataclass(frozen=True)
class Foolbox1Doubling:
    """Foolbox 1.8's L-BFGS search: double from ``2 eps`` until a success, then bisect to ``eps``."""

    epsilon: float
    max_doublings: int

    def init(self, xp: Any, batch: int, dtype: Any = None) -> SearchState:
        return _init(xp, batch, 2.0 * self.epsilon, dtype)

    def update(self, xp: Any, st: SearchState, ok: Any) -> tuple[SearchState, Any]:
        w = xp.where
        doubling = st.phase == 0
        up = w(ok, st.const, st.up)
        lo = w(doubling, w(ok, 0.0, st.lo), w(ok, st.lo, st.const))
        phase = w(xp.logical_or(ok, xp.logical_not(doubling)), 1, 0)
        count = w(xp.logical_and(doubling, xp.logical_not(ok)), st.count + 1, st.count)
        c = w(phase == 1, (lo + up) / 2, st.const * 2)
        finished = w(phase == 1, (up - lo) < self.epsilon, count >= self.max_doublings)
        return SearchState(c, lo, up, count, phase), finished


@dataclasses.dataclass(frozen=True)
class GeometricBisection:
    """The const search in log space: ``c / factor`` after a success and ``c * factor`` after a
    failure until both bounds are known, then ``c = sqrt(lo * up)``; ``steps`` steps in all.

    Carlini's rule only halves ``c`` after a success (``(0 + up) / 2``), so from ``c0 = 1e-3``
    nine steps reach ``4e-6`` at the least, while on the demo VGG13 most clips' best ``c`` is
    1e-8..1e-7 (their smallest perturbations lie ~90-110 dB below the signal) and a few need
    1e-3 (``benchmarks/cw_convergence.py``).
    """

    initial: float
    steps: int
    factor: float = 10.0

    def init(self, xp: Any, batch: int, dtype: Any = None) -> SearchState:
        return CarliniBisection(self.initial, self.steps).init(xp, batch, dtype)  # lo = 0

    def update(self, xp: Any, st: SearchState, ok: Any) -> tuple[SearchState, Any]:
        c = st.const
        up = xp.where(ok, xp.minimum(st.up, c), st.up)
        lo = xp.where(ok, st.lo, xp.maximum(st.lo, c))
        bracketed = (lo > 0) & (up < CONST_SEARCHING)
        grow = xp.where(ok, c / self.factor, c * self.factor)
        c = xp.where(bracketed, xp.sqrt(lo * up), grow)
        count = st.count + 1
        return SearchState(c, lo, up, count, st.phase), count >= self.steps


ConstSearch = CarliniBisection | AuthorsHalving | Foolbox1Doubling | GeometricBisection
