"""The engine's sweep: jobs streamed through a few slots of one program, refilled as they finish.

* sweep == alone: job by job, a sweep through ``S`` slots gives the results of attacking each job
  alone (batch of one), for every attack.
* slot refill does the work: with more jobs than slots, every job runs, the slots are refilled
  (useful row-evaluations close to the computed ones), and a second sweep of the same shapes
  compiles nothing.
* a killed sweep resumes: the jobs finished before the kill are not recomputed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _attack_helpers import chunked_problem, other_class
from test_attacks_compile import TINY, _assert_close, _atol, _attack, _slack

from jaxadv import attacks as A
from jaxadv.attacks import engine


def _jobs(repeat: int = 2):
    """The chunked problem's 6 clips, ``repeat`` times (12 jobs by default)."""
    fn, params, x, lengths, labels = chunked_problem()
    x = jnp.concatenate([x] * repeat)
    lengths = jnp.concatenate([lengths] * repeat)
    labels = jnp.concatenate([labels] * repeat)
    return fn, params, x, lengths, labels


def _name(name: str) -> str:
    return _attack(name).name


@pytest.mark.parametrize("name", list(TINY))
def test_sweep_equals_each_job_alone(name):
    fn, params, x, lengths, labels = _jobs()
    config, targeted = TINY[name]
    targets = other_class(labels, 5) if targeted else None
    spec = _attack(name)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(3), jnp.arange(12))
    seen = []
    results, stats = A.sweep(
        spec.name, fn, params, x, lengths, labels, targets=targets, config=config,
        key=keys, slots=4, chunk=3, on_results=lambda items: seen.extend(j for j, _ in items),
    )  # fmt: skip
    assert sorted(seen) == list(range(12)) and stats.jobs == 12
    for j in range(12):
        alone = spec(
            fn, params, x[j : j + 1], lengths[j : j + 1], labels[j : j + 1],
            targets=None if targets is None else targets[j : j + 1], config=config,
            key=keys[j : j + 1],
        )  # fmt: skip
        alone = jax.tree.map(lambda a: np.asarray(a)[0], alone)
        _assert_close(results[j], alone, atol=_atol(name), steps_slack=_slack(name))


def test_sweep_refills_slots_and_compiles_once():
    fn, params, x, lengths, labels = _jobs(repeat=3)  # 18 jobs through 4 slots
    config = A.DeepFoolConfig(steps=16, overshoot=-0.5)  # a different number of steps per clip
    results, stats = A.sweep("deepfool", fn, params, x, lengths, labels, config=config, slots=4)
    steps = np.array([r.steps for r in results])
    assert steps.min() < steps.max()
    # useful row-evaluations are the evaluations the jobs needed: one per step, plus the one that
    # found the adversarial (none after the last allowed step)
    assert stats.useful == int(np.minimum(steps + 1, config.steps).sum())
    assert stats.useful <= stats.computed
    assert stats.efficiency > 0.6, stats
    size = engine._chunk_jit._cache_size()
    A.sweep("deepfool", fn, params, x * 0.5, lengths, labels, config=config, slots=4)
    assert engine._chunk_jit._cache_size() == size


def test_a_sweep_compiled_ahead_in_a_thread_compiles_nothing_and_matches():
    """compile_sweep (in a worker thread, as the experiments call it) builds the exact program
    the sweep runs: the sweep then compiles no attack program and its results are unchanged."""
    import threading

    fn, params, x, lengths, labels = _jobs()
    config = A.DeepFoolConfig(steps=12, overshoot=-0.4)  # a config no other test compiles
    compiles: list[str] = []

    def listen(event: str, duration: float, **kw) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(threading.current_thread().name)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        worker = threading.Thread(
            target=A.compile_sweep, name="ahead",
            args=("deepfool", fn, params, x, lengths, labels),
            kwargs={"config": config, "slots": 5},
        )  # fmt: skip
        worker.start()
        worker.join()
        assert "ahead" in compiles  # the chunk program was built in the thread
        compiles.clear()
        results, _ = A.sweep("deepfool", fn, params, x, lengths, labels, config=config, slots=5)
        # the sweep itself compiles no chunk program (tiny host-side ops aside: none here)
        assert compiles == [], compiles
    finally:
        from jax._src import monitoring

        monitoring.unregister_event_duration_listener(listen)
    for j in (0, 7):
        alone = A.deepfool(fn, params, x[j : j + 1], lengths[j : j + 1], labels[j : j + 1],
                           config=config)  # fmt: skip
        _assert_close(results[j], jax.tree.map(lambda a: np.asarray(a)[0], alone),
                      atol=_atol("deepfool"), steps_slack=_slack("deepfool"))  # fmt: skip


def test_killed_sweep_resumes_without_recomputing_finished_jobs():
    fn, params, x, lengths, labels = _jobs()
    config = A.CWConfig(binary_search_steps=2, max_iterations=20, learning_rate=5e-2)
    full, _ = A.sweep("cw", fn, params, x, lengths, labels, config=config, slots=3, chunk=2)

    store: dict[int, object] = {}

    class Killed(Exception):
        pass

    def keep_then_die(items):
        store.update(items)
        if len(store) >= 5:
            raise Killed

    with pytest.raises(Killed):
        A.sweep("cw", fn, params, x, lengths, labels, config=config, slots=3, chunk=2,
                on_results=keep_then_die)  # fmt: skip
    left = np.array([j for j in range(12) if j not in store])
    assert 0 < len(left) <= 7
    rerun, stats = A.sweep(
        "cw", fn, params, x[left], lengths[left], labels[left], config=config, slots=3, chunk=2
    )
    assert stats.jobs == len(left)  # only the unfinished jobs ran again
    for i, j in enumerate(left):
        store[int(j)] = rerun[i]
    for j in range(12):
        _assert_close(store[j], full[j])


def test_sweep_bad_arguments():
    fn, params, x, lengths, labels = _jobs()
    with pytest.raises(ValueError, match="slots must be an integer >= 1"):
        A.sweep("deepfool", fn, params, x, lengths, labels, slots=0)
    with pytest.raises(ValueError, match="chunk must be an integer >= 1"):
        A.sweep("deepfool", fn, params, x, lengths, labels, chunk=0)
    with pytest.raises(TypeError, match="config must be a DeepFoolConfig"):
        A.sweep("deepfool", fn, params, x, lengths, labels, config=A.CWConfig())


SHARDED = """
import sys
sys.path.insert(0, sys.argv[2])
import jax, numpy as np
from _attack_helpers import chunked_problem
from jaxadv import attacks as A
from jaxadv.attacks import engine
fn, params, x, lengths, labels = chunked_problem()
out = {"devices": np.array(len(jax.local_devices()))}
for name, cfg in {"deepfool": A.DeepFoolConfig(steps=16, overshoot=-0.5),
                  "cw": A.CWConfig(binary_search_steps=2, max_iterations=20, learning_rate=5e-2)}.items():
    rows, _ = A.sweep(name, fn, params, x, lengths, labels, config=cfg, slots=4, chunk=3)
    res = engine.stack(rows)
    out.update({f"{name}_{k}": np.asarray(v) for k, v in res._asdict().items()})
np.savez(sys.argv[1], **out)
"""


def test_sweep_sharded_over_two_devices_matches_one(tmp_path):
    """Slots split over 2 XLA host devices: the same successes and steps, values within 1e-5."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).parent
    env = dict(os.environ, PYTHONPATH=str(tests.parent))
    outs = {}
    for n in (1, 2):
        e = dict(env, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        outs[n] = tmp_path / f"d{n}.npz"
        subprocess.run(
            [sys.executable, "-c", SHARDED, str(outs[n]), str(tests)],
            env=e,
            check=True,
            timeout=300,
        )
    a, b = np.load(outs[1]), np.load(outs[2])
    assert int(a["devices"]) == 1 and int(b["devices"]) == 2
    for k in (k for k in a.files if k != "devices"):
        if a[k].dtype == bool or np.issubdtype(a[k].dtype, np.integer):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5, err_msg=k)
