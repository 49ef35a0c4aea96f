"""The attack engine: the one owner of every attack's loop.

An attack is an :class:`Algorithm` — a frozen, hashable object (its config inside) with pure
functions over a per-example state, in the shape of optimistix's solvers
(``optimistix/_iterate.py``: one verb drives ``init/step/terminate/postprocess``) and optax's
``init``/``update`` pairs:

* ``init(fn, params, problem) -> state`` — per-example state, every leaf with a leading ``[B]``
  axis; rows must be independent (the sweep initialises a refilled slot with it).
* ``query(state) -> q`` — what the next evaluation needs of the state (a pytree, ``[B, ...]``).
* ``evaluate(fn, params, problem, q) -> e`` — the model work of one iteration (a forward, a
  forward+backward, K pullbacks, ...), row-independent: the engine runs it on the rows still
  running only.
* ``step(problem, state, e, active) -> state`` — the algorithm's update; rows where ``active`` is
  False are discarded by the engine (they keep their old state), and ``e`` is only meaningful on
  active rows.
* ``done(state) -> [B]`` — the example has finished.
* ``result(fn, params, problem, state, evaluations) -> Result`` — the attack's NamedTuple result.
* optionally ``prepare(problem) -> problem`` — a row-wise change of the inputs before ``init``
  (e.g. clipping the clean clip to the box); :func:`prepare` applies it where defined.

The engine owns what every attack used to write for itself: the ``lax.while_loop``, the active
mask, evaluating only the running rows (:func:`~jaxadv.attacks.common.compact_map`), freezing
finished rows and counting each row's evaluations. :func:`run` attacks one batch (one compiled
program per call shape); :func:`sweep` streams any number of jobs through ``S`` slots of one
compiled program, refilling finished slots with new jobs (continuous batching).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.attacks import common

Array = jax.Array


class Problem(NamedTuple):
    """Per-example inputs of an attack (leading axis ``B``).

    Attributes:
      x: ``[B, N]`` clean waveforms at 32 kHz in [-1, 1] (zero padded beyond ``lengths``).
      lengths: ``[B]`` int32 valid samples per clip.
      labels: ``[B]`` int32 ground-truth classes.
      targets: ``[B]`` int32 target classes, or None (untargeted; static).
      keys: ``[B]`` typed PRNG keys, or None (deterministic attacks).
    """

    x: Array
    lengths: Array
    labels: Array
    targets: Array | None = None
    keys: Array | None = None

    @property
    def valid(self) -> Array:
        """``[B, N]`` bool: the clip's valid samples."""
        return common.valid_mask(self.x.shape[1], self.lengths)

    @property
    def targeted(self) -> bool:
        return self.targets is not None


class Algorithm(Protocol):
    """What an attack implements (see the module docstring)."""

    def init(self, fn: Any, params: Any, problem: Problem) -> Any: ...
    def query(self, state: Any) -> Any: ...
    def evaluate(self, fn: Any, params: Any, problem: Problem, q: Any) -> Any: ...
    def step(self, problem: Problem, state: Any, e: Any, active: Array) -> Any: ...
    def done(self, state: Any) -> Array: ...
    def result(
        self, fn: Any, params: Any, problem: Problem, state: Any, evaluations: Array
    ) -> Any: ...


def prepare(algo: Any, problem: Problem) -> Problem:
    """``algo.prepare(problem)`` where the algorithm defines it, else ``problem``."""
    f = getattr(algo, "prepare", None)
    return problem if f is None else f(problem)


def _iteration(algo: Any, fn: Any, params: Any, problem: Problem, sizes: tuple[int, ...]):
    """One engine iteration over ``(state, evaluations)``: evaluate running rows, step, freeze."""

    def it(state: Any, evaluations: Array, active: Array) -> tuple[Any, Array]:
        q = algo.query(state)
        e = common.compact_map(
            lambda rows: algo.evaluate(fn, params, rows[0], rows[1]), active, (problem, q), sizes
        )
        new = algo.step(problem, state, e, active)
        return common.tree_where_b(active, new, state), evaluations + active.astype(jnp.int32)

    return it


def run(algo: Any, fn: Any, params: Any, problem: Problem, *, compact_levels: int = 0) -> Any:
    """Attack one batch: ``init``, then iterate until every row is ``done``; returns the result.

    Traceable (call it inside ``jit``). ``compact_levels`` halvings of the evaluated batch let the
    last examples' iterations cost less (:func:`~jaxadv.attacks.common.compact_map`); results do
    not depend on it.
    """
    b = problem.x.shape[0]
    sizes = common.compaction_sizes(b, compact_levels)
    problem = prepare(algo, problem)
    it = _iteration(algo, fn, params, problem, sizes)
    state = algo.init(fn, params, problem)

    def body(carry):
        state, evals = carry
        return it(state, evals, ~algo.done(state))

    state, evals = jax.lax.while_loop(
        lambda c: ~jnp.all(algo.done(c[0])), body, (state, jnp.zeros((b,), jnp.int32))
    )
    return algo.result(fn, params, problem, state, evals)


# --- continuous batching ------------------------------------------------------------------------


class SweepStats(NamedTuple):
    """Work of a :func:`sweep` (row-evaluations = evaluations of one row)."""

    jobs: int
    slots: int
    iterations: int  # engine iterations run (each evaluates up to ``slots`` rows)
    useful: int  # row-evaluations the jobs needed (the sum of their ``evaluations``)
    computed: int  # row-evaluations computed: iterations * slots
    chunks: int  # compiled-program calls
    seconds: float  # wall time

    @property
    def efficiency(self) -> float:
        """Slot efficiency: useful / computed row-evaluations."""
        return self.useful / max(self.computed, 1)


class _Slots(NamedTuple):
    state: Any  # the algorithm's state, [S]
    problem: Problem  # the slots' jobs, [S]
    job: Array  # [S] job index, -1 = empty
    evals: Array  # [S] evaluations of the slot's job so far


def _take(tree: Any, idx: Array) -> Any:
    return jax.tree.map(lambda a: a[idx], tree)


@dataclasses.dataclass(frozen=True)
class _Chunk:
    """One compiled chunk of a sweep: harvest finished slots, refill, iterate; ``T`` at most."""

    algo: Any
    fn: Any
    chunk: int
    refill_at: int

    def __call__(self, params, slots: _Slots, pending: Problem, pending_job: Array, n_pending):
        algo, fn = self.algo, self.fn
        s = slots.job.shape[0]
        out_cap = 2 * s  # at most S jobs in the slots plus S pending ones can finish

        def results_of(sl: _Slots) -> Any:
            return algo.result(fn, params, sl.problem, sl.state, sl.evals)

        shapes = jax.eval_shape(results_of, slots)
        out0 = jax.tree.map(lambda a: jnp.zeros((out_cap,) + a.shape[1:], a.dtype), shapes)

        def harvest(carry):
            sl, out, out_job, n_out, used, iters, useful = carry
            fin = (sl.job >= 0) & algo.done(sl.state)

            def take(args):
                out, out_job, n_out = args
                res = results_of(sl)
                pos = jnp.where(fin, n_out + jnp.cumsum(fin.astype(jnp.int32)) - 1, out_cap)
                out = jax.tree.map(lambda o, r: o.at[pos].set(r, mode="drop"), out, res)
                out_job = out_job.at[pos].set(sl.job, mode="drop")
                return out, out_job, n_out + jnp.sum(fin.astype(jnp.int32))

            out, out_job, n_out = jax.lax.cond(
                jnp.any(fin), take, lambda a: a, (out, out_job, n_out)
            )
            sl = sl._replace(job=jnp.where(fin, -1, sl.job))
            return sl, out, out_job, n_out, used, iters, useful

        def refill(carry):
            sl, out, out_job, n_out, used, iters, useful = carry
            free = sl.job < 0
            left = n_pending - used
            n_free = jnp.sum(free.astype(jnp.int32))
            # wait for a few free slots before paying an init, unless nothing else runs
            want = (left > 0) & ((n_free >= jnp.minimum(self.refill_at, left)) | ~jnp.any(~free))

            def fill(sl):
                rank = jnp.cumsum(free.astype(jnp.int32)) - 1
                take = free & (rank < left)
                src = jnp.clip(used + rank, 0, s - 1)
                prob = common.tree_where_b(take, prepare(algo, _take(pending, src)), sl.problem)
                state = common.tree_where_b(take, algo.init(fn, params, prob), sl.state)
                return (
                    _Slots(
                        state,
                        prob,
                        jnp.where(take, pending_job[src], sl.job),
                        jnp.where(take, 0, sl.evals),
                    ),
                    jnp.sum(take.astype(jnp.int32)),
                )

            sl, n = jax.lax.cond(want, fill, lambda sl: (sl, jnp.int32(0)), sl)
            return sl, out, out_job, n_out, used + n, iters, useful

        def body(carry):
            carry = refill(harvest(carry))
            sl, out, out_job, n_out, used, iters, useful = carry
            active = (sl.job >= 0) & ~algo.done(sl.state)
            it = _iteration(algo, fn, params, sl.problem, (s,))
            state, evals = it(sl.state, sl.evals, active)
            sl = sl._replace(state=state, evals=evals)
            useful = useful + jnp.sum(active.astype(jnp.int32))
            return sl, out, out_job, n_out, used, iters + 1, useful

        def cond(carry):
            sl, _, _, _, used, iters, _ = carry
            running = jnp.any((sl.job >= 0) & ~algo.done(sl.state))
            return (iters < self.chunk) & (running | (used < n_pending))

        carry = (slots, out0, jnp.full((out_cap,), -1, jnp.int32), 0, 0, 0, 0)
        carry = jax.lax.while_loop(cond, body, carry)
        sl, out, out_job, n_out, used, iters, useful = harvest(carry)
        return sl, out, out_job, n_out, used, iters, useful


def _chunk_impl(algo, fn, chunk, refill_at, params, slots, pending, pending_job, n_pending):
    return _Chunk(algo, fn, chunk, refill_at)(params, slots, pending, pending_job, n_pending)


_chunk_jit = jax.jit(_chunk_impl, static_argnames=("algo", "fn", "chunk", "refill_at"))


def _zeros_like_shape(a: jax.ShapeDtypeStruct, sharding: Any) -> Array:
    """Zeros of an abstract leaf (typed PRNG keys as keys of zero data), laid out by ``sharding``."""
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        data = jax.eval_shape(jax.random.key_data, a)
        zeros = jax.device_put(np.zeros(data.shape, data.dtype), sharding)
        return jax.random.wrap_key_data(zeros, impl=jax.random.key_impl(a))
    return jax.device_put(np.zeros(a.shape, a.dtype), sharding)


def empty_slots(algo: Any, fn: Any, params: Any, pending: Problem, rows: Any) -> _Slots:
    """``S`` empty slots (job -1) with the shapes of ``pending``'s state, all zeros.

    No program is compiled for them: an empty slot's state is never read (``harvest`` and
    ``running`` look at slots with a job only) and ``refill`` initialises a slot before its first
    iteration, so only the shapes matter (``jax.eval_shape``).
    """
    s = pending.x.shape[0]
    shapes = jax.eval_shape(lambda p: algo.init(fn, params, prepare(algo, p)), pending)
    state = jax.tree.map(lambda a: _zeros_like_shape(a, rows), shapes)
    return _Slots(
        state,
        pending,
        jax.device_put(np.full((s,), -1, np.int32), rows),
        jax.device_put(np.zeros((s,), np.int32), rows),
    )


def _host_problem(jobs: Problem) -> tuple[dict[str, np.ndarray], bool]:
    """Jobs as host arrays (typed keys as their raw data) and whether they carry keys."""
    arrays = {
        "x": np.asarray(jobs.x, np.float32),
        "lengths": np.asarray(jobs.lengths, np.int32),
        "labels": np.asarray(jobs.labels, np.int32),
    }
    if jobs.targets is not None:
        arrays["targets"] = np.asarray(jobs.targets, np.int32)
    keyed = jobs.keys is not None
    if keyed:
        arrays["keys"] = np.asarray(jax.random.key_data(jobs.keys))
    return arrays, keyed


def _device_problem(arrays: dict[str, np.ndarray], idx: np.ndarray, rows: Any) -> Problem:
    """The jobs ``idx`` as a device Problem, its rows laid out by the sharding ``rows``."""

    def put(a):
        return jax.device_put(a, rows)

    keys = arrays.get("keys")
    return Problem(
        x=put(arrays["x"][idx]),
        lengths=put(arrays["lengths"][idx]),
        labels=put(arrays["labels"][idx]),
        targets=None if "targets" not in arrays else put(arrays["targets"][idx]),
        keys=None if keys is None else jax.random.wrap_key_data(put(keys[idx])),
    )


def slot_sharding(slots: int) -> tuple[Any, Any]:
    """``(rows, replicated)`` shardings: the slot axis split over all local devices.

    With one device (or ``slots`` not a multiple of the device count) both are that device.
    The per-device programs then see ``slots / devices`` rows, so results may differ from one
    device in the last float32 digits (a convolution's kernel choice depends on its batch):
    ``tests/test_attacks_sweep.py`` bounds the difference.
    """
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.local_devices()
    if len(devices) == 1 or slots % len(devices):
        return devices[0], devices[0]
    mesh = Mesh(np.array(devices), ("slots",))
    return NamedSharding(mesh, PartitionSpec("slots")), NamedSharding(mesh, PartitionSpec())


def auto_slots(jobs: int, most: int, per_slot: int = 4) -> int:
    """Slots for ``jobs`` jobs: at most ``most``, and few enough that each slot runs about
    ``per_slot`` jobs, so the tail (slots idle once the queue is empty) stays a small part of
    the work. ``most`` bounds memory; on an accelerator pass a large ``most``."""
    return max(1, min(most, -(-jobs // per_slot)))


def _check_sweep(slots: Any, chunk: Any, refill_at: Any) -> int:
    """``refill_at`` resolved; ValueError for bad ``slots`` / ``chunk``."""
    if not isinstance(slots, int) or slots < 1:
        raise ValueError(f"sweep: slots must be an integer >= 1, got {slots!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"sweep: chunk must be an integer >= 1, got {chunk!r}")
    return max(1, slots // 8) if refill_at is None else int(refill_at)


def _sweep_inputs(
    algo: Any, fn: Any, arrays: dict[str, np.ndarray], params: Any, slots: int
) -> tuple[Any, Any, tuple[Problem, Array, int], _Slots]:
    """What the first chunk of a sweep takes: ``params`` on the slots' devices,
    ``pending_at(start) -> (jobs, job ids, count)`` (the ``slots`` jobs from ``start`` laid out as
    the program takes them), ``pending_at(0)`` and the empty slots."""
    n_jobs = arrays["x"].shape[0]
    rows, replicated = slot_sharding(slots)

    def pending_at(start: int) -> tuple[Problem, Array, int]:
        idx = np.arange(start, start + slots)
        n = int(min(slots, n_jobs - start))
        idx = np.minimum(idx, n_jobs - 1)  # pad with the last job (valid data, never used)
        job = np.where(np.arange(slots) < n, idx, -1).astype(np.int32)
        return _device_problem(arrays, idx, rows), jax.device_put(job, rows), n

    params = jax.device_put(params, replicated)
    first = pending_at(0)
    return params, pending_at, first, empty_slots(algo, fn, params, first[0], rows)


def compile_sweep(
    algo: Any,
    fn: Any,
    params: Any,
    jobs: Problem,
    *,
    slots: int,
    chunk: int = 16,
    refill_at: int | None = None,
) -> None:
    """Compile the program :func:`sweep` runs for these arguments, without running it.

    The program lands in JAX's in-memory cache (and the persistent one, where enabled), so the
    sweep's first chunk compiles nothing. XLA compiles without holding the GIL: calling this
    from worker threads builds several programs at once, and builds later sweeps' programs
    while earlier sweeps run (``jaxadv.experiments`` does both).
    """
    refill_at = _check_sweep(slots, chunk, refill_at)
    arrays, _ = _host_problem(jobs)
    if arrays["x"].shape[0] == 0:
        return
    params, _, (pending, pending_job, n_pending), sl = _sweep_inputs(
        algo, fn, arrays, params, slots
    )
    _chunk_jit.lower(
        algo, fn, chunk, refill_at, params, sl, pending, pending_job, jnp.int32(n_pending)
    ).compile()


def sweep(
    algo: Any,
    fn: Any,
    params: Any,
    jobs: Problem,
    *,
    slots: int,
    chunk: int = 16,
    refill_at: int | None = None,
    on_results: Callable[[list[tuple[int, Any]]], None] | None = None,
) -> tuple[list[Any], SweepStats]:
    """Stream ``J`` jobs through ``slots`` slots of one compiled program (continuous batching).

    The device runs chunks of at most ``chunk`` engine iterations; inside a chunk, whenever a
    slot's job is done its result is written to an output buffer and (once ``refill_at`` slots
    are free, default ``max(1, slots // 8)``, or when nothing else runs) the next jobs take the
    free slots, initialised inside the program. Between chunks the host collects finished jobs
    and passes the next ``slots`` pending ones. One program per ``(algo, fn, slots, N, chunk)``:
    a second sweep of the same shapes compiles nothing. With several local devices (GPUs, TPU
    cores) and ``slots`` a multiple of their number, the slots are split over all of them
    (:func:`slot_sharding`).

    Args:
      algo: an :class:`Algorithm` (e.g. ``ATTACKS["cw"].algorithm(config)``).
      fn, params: the classifier.
      jobs: a :class:`Problem` of ``J`` jobs (host or device arrays, one length bucket ``N``).
      slots: ``S``, rows evaluated per iteration.
      chunk: iterations per compiled call (progress and results come back between calls).
      refill_at: free slots that trigger a refill.
      on_results: called after each chunk with the jobs it finished, ``[(j, result_j), ...]``
        (``result_j`` the attack's result NamedTuple for job ``j``, NumPy arrays without the
        batch axis): progress, storage and resume work job by job.

    Returns:
      ``(results, stats)``: ``results[j]`` is job ``j``'s result (as passed to ``on_results``) and
      :class:`SweepStats`.
    """
    t0 = time.perf_counter()
    refill_at = _check_sweep(slots, chunk, refill_at)
    arrays, _ = _host_problem(jobs)
    n_jobs = arrays["x"].shape[0]
    results: list[Any] = [None] * n_jobs
    if n_jobs == 0:
        return results, SweepStats(0, slots, 0, 0, 0, 0, 0.0)
    params, pending_at, (pending, pending_job, n_pending), sl = _sweep_inputs(
        algo, fn, arrays, params, slots
    )
    nxt = 0
    iterations = useful = chunks = finished = 0
    while finished < n_jobs:
        sl, out, out_job, n_out, used, iters, use = _chunk_jit(
            algo, fn, chunk, refill_at, params, sl, pending, pending_job, jnp.int32(n_pending)
        )
        n_out, used, iters, use = (int(v) for v in jax.device_get((n_out, used, iters, use)))
        chunks += 1
        iterations += iters
        useful += use
        if n_out:
            host_out, host_job = jax.device_get((out, out_job))
            items = []
            for i in range(n_out):
                j = int(host_job[i])
                results[j] = jax.tree.map(lambda a, i=i: a[i], host_out)
                items.append((j, results[j]))
            finished += n_out
            if on_results is not None:
                on_results(items)
        if used:
            nxt += used
            pending, pending_job, n_pending = pending_at(min(nxt, n_jobs))
    stats = SweepStats(
        jobs=n_jobs,
        slots=slots,
        iterations=iterations,
        useful=useful,
        computed=iterations * slots,
        chunks=chunks,
        seconds=time.perf_counter() - t0,
    )
    return results, stats


def stack(results: list[Any]) -> Any:
    """Per-job results (NumPy, no batch axis) stacked into one result with a leading ``[J]``."""
    return jax.tree.map(lambda *rows: np.stack(rows), *results)
