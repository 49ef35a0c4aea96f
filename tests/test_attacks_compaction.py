"""Compaction: an attack iteration evaluates only the examples still running.

``common.compact_map`` gathers the active rows into the smallest batch of ``compaction_sizes``
that holds them (a ``lax.switch`` inside the compiled loop); the attacks' results must not depend
on it (``compact_levels=0`` evaluates the whole batch every iteration).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _attack_helpers import chunked_problem, other_class

from jaxadv import attacks as A
from jaxadv.attacks import common


@pytest.mark.parametrize(
    "batch,levels,want",
    [
        (16, 3, (16, 8, 4, 2)),
        (5, 3, (5, 3, 2, 1)),
        (6, 9, (6, 3, 2, 1)),
        (1, 3, (1,)),
        (8, 0, (8,)),
    ],
)
def test_compaction_sizes(batch, levels, want):
    assert common.compaction_sizes(batch, levels) == want


def test_compact_map_evaluates_active_rows_in_the_smallest_batch():
    b = 5
    sizes = common.compaction_sizes(b, 3)  # (5, 3, 2, 1)
    rows = (jnp.arange(b * 3, dtype=jnp.float32).reshape(b, 3), jnp.arange(b) * 10)

    def f(r):
        a, c = r
        k = a.shape[0]  # the evaluated batch size, recorded per row
        return {"y": 2.0 * a + c[:, None], "size": jnp.full((k,), k)}

    run = jax.jit(lambda active, rows: common.compact_map(f, active, rows, sizes))
    rng = np.random.default_rng(0)
    masks = [np.zeros(b, bool), np.ones(b, bool)] + [rng.random(b) < p for p in (0.2, 0.5, 0.8)]
    masks += [np.eye(b, dtype=bool)[i] for i in range(b)]
    full = f(rows)
    for m in masks:
        out = run(jnp.asarray(m), rows)
        n = int(m.sum())
        size = min(s for s in sizes if s >= n) if n else sizes[-1]
        if n > sizes[1]:  # the whole batch, in order
            np.testing.assert_array_equal(out["y"], full["y"])
            np.testing.assert_array_equal(out["size"], np.full(b, b))
            continue
        np.testing.assert_array_equal(out["y"][m], full["y"][m])
        np.testing.assert_array_equal(out["size"][m], np.full(n, size))
        # rows that were not evaluated are zeros (only the active rows may be used)
        evaluated = np.zeros(b, bool)
        evaluated[np.argsort(~m, kind="stable")[:size]] = True
        np.testing.assert_array_equal(out["y"][~evaluated], 0.0)


def test_compact_map_without_levels_is_f():
    rows = jnp.ones((4, 2))
    out = common.compact_map(lambda r: r * 3, jnp.array([True, False, False, False]), rows, (4,))
    np.testing.assert_array_equal(out, 3 * np.ones((4, 2)))


CONFIGS = {
    "cw": (A.CWConfig(binary_search_steps=3, max_iterations=30, learning_rate=5e-2), True),
    # overshoot < 0: several steps, a different number per example
    "deepfool": (A.DeepFoolConfig(steps=16, overshoot=-0.5), False),
    "lbfgs": (A.LBFGSConfig(binary_search_steps=3, max_iterations=15, initial_const=1.0), True),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_results_do_not_depend_on_compaction(name):
    fn, params, x, lengths, labels = chunked_problem()
    config, targeted = CONFIGS[name]
    targets = other_class(labels, 5) if targeted else None
    out = {}
    for levels in (0, 3):
        cfg = dataclasses.replace(config, compact_levels=levels)
        res = A.ATTACKS[name](fn, params, x, lengths, labels, targets=targets, config=cfg)
        out[levels] = jax.tree.map(np.asarray, res)
    steps = out[3].steps
    assert steps.min() < steps.max()  # examples finish at different iterations: compaction ran
    for field, u, v in zip(out[0]._fields, out[0], out[3], strict=True):
        if field in ("steps", "iterations") and name == "lbfgs":
            # float32 rounding of a smaller batch may move a line-search decision by one trial
            np.testing.assert_array_less(np.abs(u - v), 2, err_msg=field)
        elif u.dtype == bool or np.issubdtype(u.dtype, np.integer):
            np.testing.assert_array_equal(u, v, err_msg=field)
        else:
            np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6, err_msg=field)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_bad_compact_levels(name):
    fn, params, x, lengths, labels = chunked_problem()
    config, targeted = CONFIGS[name]
    targets = other_class(labels, 5) if targeted else None
    for bad in (-1, 1.5, True):
        # refused when the config is made (``__post_init__``), before any attack runs
        with pytest.raises(ValueError, match="compact_levels must be an integer >= 0"):
            cfg = dataclasses.replace(config, compact_levels=bad)
            A.ATTACKS[name](fn, params, x, lengths, labels, targets=targets, config=cfg)
