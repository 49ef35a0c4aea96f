"""The sweep: every attack of an experiment on every job of one model, stored job by job.

A *job* (:class:`Job`) is one clip attacked towards one target (or untargeted) with one attack on
one model. :func:`sweep` groups a model's jobs by bucket length and streams each bucket's jobs
through the slots of one compiled attack program (:func:`jaxadv.attacks.sweep`: continuous
batching — a finished job leaves its slot to the next one; at most ``--batch-size`` slots, sharded
over all local devices), evaluates the finished jobs with one more forward pass, stores their
adversarial waveforms (:mod:`jaxadv.experiments.arrays`; WAV files too unless ``--no-audio``),
and appends their rows to the run's ``results.csv`` as they finish. A job whose row is present is
skipped, so the same command after a kill redoes only unfinished jobs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxadv import config as C
from jaxadv.datasets import Clip
from jaxadv.experiments.devices import replicate, shard
from jaxadv.experiments.models import LoadedModel


@dataclasses.dataclass(frozen=True)
class Job:
    """One clip, attacked towards ``target`` (a label index, or -1 when untargeted) whose name is
    ``target_label`` (default: ``config.LABELS[target]``; a model with labels of its own names
    it)."""

    clip: Clip
    target: int = -1
    target_label: str = ""

    @property
    def target_name(self) -> str:
        if self.target < 0:
            return ""
        return self.target_label or C.LABELS[self.target]


def example_key(seed: int, *parts: str) -> np.ndarray:
    """A PRNG key (uint32[2]) from a seed and strings, independent of batch composition."""
    h = hashlib.sha256(("|".join((str(seed), *parts))).encode()).digest()
    return np.frombuffer(h[:8], dtype=np.uint32).copy()


def job_batches(jobs: Sequence[Job], lengths: dict[str, int], batch_size: int) -> list[list[Job]]:
    """Jobs in the fixed batches of :func:`jaxadv.datasets.balanced_batches` (by clip length)."""
    from jaxadv.datasets import balanced_batches

    plan = balanced_batches([lengths[j.clip.fname] for j in jobs], batch_size)
    return [[jobs[i] for i in b] for b in plan]


def job_batch(waves: dict[str, np.ndarray], jobs: Sequence[Job]) -> Any:
    """The jobs' clips as one :class:`jaxadv.datasets.Batch` (``x [B, N]`` zero-padded to the
    bucket, ``lengths [B]``, ``label_indices [B]``)."""
    from jaxadv.datasets import pad_batch

    return pad_batch([waves[j.clip.fname] for j in jobs], [j.clip for j in jobs])


def job_key(model_name: str, attack: str, job: Job) -> tuple[str, str, str, str]:
    """A job's key in the result and array stores: ``(model, attack, fname, target name)``."""
    return (model_name, attack, job.clip.fname, job.target_name)


def adv_filename(model: str, attack: str, job: Job) -> str:
    stem = Path(job.clip.fname).stem
    tgt = f"__to_{job.target_name}" if job.target >= 0 else ""
    return f"audio/{model}/{attack}/{stem}{tgt}.wav"


def job_arrays(
    model_name: str, attack_key: str, jobs: Sequence[Job], waves: dict[str, np.ndarray], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(x [B, N], lengths, labels, targets or None, keys or None)`` of the jobs: targets when
    any job is targeted, per-example keys when the attack draws random numbers (``keyed``)."""
    from jaxadv import attacks as A

    x, lens, labels, _ = job_batch(waves, jobs)
    targets = None
    if any(j.target >= 0 for j in jobs):
        targets = np.array([j.target for j in jobs], np.int32)
    keys = None
    if A.ATTACKS[attack_key].keyed:
        keys = np.stack([example_key(seed, model_name, j.clip.fname) for j in jobs])
    return x, lens, labels, targets, keys


def run_batch(
    model: LoadedModel,
    attack_key: str,
    config: Any,
    jobs: Sequence[Job],
    waves: dict[str, np.ndarray],
    seed: int,
    rows: int | None = None,
) -> tuple[Any, np.ndarray, np.ndarray, float]:
    """Attack one batch; returns ``(metrics (host arrays), x, adversarial, seconds)``.

    ``rows``: pad the batch to this many rows (repeats of its last job, whose results are
    dropped), so that batches of one bucket share one compiled program.
    """
    import jax

    from jaxadv import attacks as A

    x, lens, labels, targets, keys = job_arrays(model.name, attack_key, jobs, waves, seed)
    extra = {"targets": targets, "key": keys}
    extra = {k: v for k, v in extra.items() if v is not None}
    dev, n = shard([x, lens, labels, *extra.values()], len(jobs), rows)
    xd, ld, yd = dev[:3]
    kwargs: dict[str, Any] = {"config": config, **dict(zip(extra, dev[3:], strict=True))}
    params = replicate(model.params)
    t0 = time.perf_counter()
    res = A.ATTACKS[attack_key](model.classifier, params, xd, ld, yd, **kwargs)
    met = A.evaluate(model.classifier, params, xd, ld, yd, res, targets=kwargs.get("targets"))
    met = jax.tree.map(lambda a: np.asarray(a)[:n], met)
    adv = np.asarray(res.adversarial)[:n]
    return met, x, adv, time.perf_counter() - t0


def rows_for_batch(
    model: str,
    attack: str,
    jobs: Sequence[Job],
    met: Any,
    seconds: float,
    files: list[str],
    labels: Sequence[str] = C.LABELS,
) -> list[dict[str, Any]]:
    """Result rows (:data:`results.COLUMNS`) for one evaluated batch; ``labels``: the model's
    class names."""
    rows = []
    for i, j in enumerate(jobs):
        orig, new = int(met.original[i]), int(met.new_label[i])
        rows.append(
            {
                "model": model,
                "attack": attack,
                "fname": j.clip.fname,
                "label": j.clip.label,
                "target": j.target_name,
                "original": labels[orig],
                "adversarial": labels[new],
                "success": int(bool(met.success[i])),
                "gt_conf": float(met.gt_confidence[i]),
                "new_conf": float(met.new_confidence[i]),
                "gt_conf_adv": float(met.gt_confidence_adv[i]),
                "target_conf": float(met.target_confidence[i]) if j.target >= 0 else None,
                "snr_db": float(met.snr_db[i]),
                "l2": float(met.l2[i]),
                "linf": float(met.linf[i]),
                "steps": int(met.steps[i]),
                "seconds": seconds / len(jobs),
                "adv_file": files[i],
            }
        )
    return rows


def sweep_slots(jobs: int, batch_size: int) -> int:
    """Slots of an attack's sweep: :func:`jaxadv.attacks.engine.auto_slots`, at most
    ``--batch-size``, rounded up to a multiple of the local devices. About 8 jobs per slot on a
    CPU and 4 elsewhere: a CPU's cost per computed row is flat in the batch size (dense_mel C&W,
    24 jobs: 18.9 ms per row at 4 slots, 18.2 at 24), so fewer slots only shorten the idle tail
    (47.9 s at 4 slots, 53.7 s at 8); an accelerator's wide batches are nearly free."""
    import jax

    from jaxadv.attacks import engine

    d = jax.local_device_count()
    per_slot = 8 if jax.default_backend() == "cpu" else 4
    return -(-engine.auto_slots(jobs, batch_size, per_slot) // d) * d


def run_sweep(
    model: LoadedModel,
    attack_key: str,
    config: Any,
    jobs: Sequence[Job],
    waves: dict[str, np.ndarray],
    seed: int,
    slots: int,
    on_rows: Any,
) -> None:
    """Attack ``jobs`` (one bucket) through ``slots`` slots of one program (continuous batching).

    As jobs finish, their metrics are computed (one fixed-size metrics program per bucket) and
    ``on_rows(jobs, metrics (host arrays), adversarial [k, N], seconds)`` is called, so results
    are stored job by job.
    """
    import jax

    from jaxadv import attacks as A

    x, lens, labels, targets, key = job_arrays(model.name, attack_key, jobs, waves, seed)
    clf, params = model.classifier, model.params
    clock = [time.perf_counter()]

    def on_results(items: list[tuple[int, Any]]) -> None:
        idx = np.array([j for j, _ in items])
        # a chunk can finish up to 2 * slots jobs: metrics in groups of exactly ``slots`` rows
        # (the last one padded with repeats), so one metrics program serves every call
        n = len(idx)
        pad = np.resize(np.arange(n), -(-n // slots) * slots)
        rows = idx[pad]
        res = jax.tree.map(lambda *a: np.stack(a)[pad], *[r for _, r in items])
        groups = []
        for g in range(0, len(pad), slots):
            r, part = rows[g : g + slots], jax.tree.map(lambda a, g=g: a[g : g + slots], res)
            groups.append(
                A.evaluate(
                    clf, params, x[r], lens[r], labels[r], part,
                    targets=None if targets is None else targets[r],
                )
            )  # fmt: skip
        met = jax.tree.map(lambda *a: np.concatenate([np.asarray(v) for v in a])[:n], *groups)
        now = time.perf_counter()
        secs, clock[0] = now - clock[0], now
        on_rows([jobs[i] for i in idx], met, np.asarray(res.adversarial)[:n], secs)

    A.sweep(
        attack_key, clf, params, x, lens, labels, targets=targets, config=config, key=key,
        slots=slots, on_results=on_results,
    )  # fmt: skip


class Part(NamedTuple):
    """One compiled program's share of a model's sweep: an attack on one length bucket."""

    name: str  # the attack's row name
    key: str  # its ``ATTACKS`` key
    config: Any
    bucket: int  # N, padded samples
    jobs: list[Job]  # the bucket's jobs without a row yet
    slots: int  # 0: a host-side mode in fixed batches (no sweep program)


def plan(
    store: Any,
    model: LoadedModel,
    attacks: dict[str, tuple[str, Any]],
    jobs: Sequence[Job],
    waves: dict[str, np.ndarray],
    batch_size: int,
    share: Any = None,
) -> list[Part]:
    """The parts of one model's sweep, in run order, with the jobs that ``store`` lacks (and
    that ``share``, a :class:`~jaxadv.experiments.cluster.Share`, owns; default: all)."""
    from jaxadv.frontend import bucket_length

    buckets: dict[int, list[Job]] = {}
    for j in jobs:
        if j.clip.fname in waves:
            buckets.setdefault(bucket_length(len(waves[j.clip.fname])), []).append(j)
    parts = []
    for name, (key, cfg) in attacks.items():
        for n in sorted(buckets):
            left = [j for j in buckets[n] if _pending(store, share, job_key(model.name, name, j))]
            host = getattr(cfg, "mode", None) == "scipy"  # host-side fidelity mode
            # slots from the whole bucket, not what is left (nor this process's share of it): a
            # resumed or distributed run runs the same program (same rows per convolution), so
            # its rows equal an uninterrupted single process's bit for bit
            slots = 0 if host else sweep_slots(len(buckets[n]), batch_size)
            parts.append(Part(name, key, cfg, n, left, slots))
    return parts


def _pending(store: Any, share: Any, key: tuple[str, ...]) -> bool:
    return key not in store and (share is None or share.owns(key))


class Compiler:
    """Builds sweep programs in worker threads ahead of the sweeps that run them.

    XLA compiles without the GIL, so the programs of several parts build at once, and later
    models' programs build while earlier models are attacked. A sweep waits for its own program
    (:meth:`wait`) and then compiles nothing. ``workers=0``: no threads (each sweep compiles its
    own program when it starts).

    Default (None): no threads on the CPU backend, where the attacks already keep every core
    busy: measured on 2 cores, the README's first command took 413 s cold with 2 workers
    against 398 s without (the compiles only took cores from the attacks, and the programs were
    traced twice). On an accelerator the attacks leave the host cores idle, so up to 4 workers
    build programs meanwhile (not measured: no accelerator was available).
    """

    def __init__(self, workers: int | None = None) -> None:
        if workers is None:
            import jax

            workers = 0 if jax.default_backend() == "cpu" else min(4, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(workers, "jaxadv-compile") if workers > 0 else None
        self._futures: dict[tuple[str, str, int], Future] = {}

    def submit(
        self, model: LoadedModel, parts: Sequence[Part], waves: dict[str, np.ndarray], seed: int
    ) -> None:
        """Start compiling the programs of ``parts`` (host-side and finished parts have none)."""
        if self._pool is None:
            return
        for p in parts:
            if p.slots and p.jobs:
                self._futures[(model.name, p.name, p.bucket)] = self._pool.submit(
                    _compile_part, model, p, waves, seed
                )

    def wait(self, model: LoadedModel, part: Part) -> None:
        """Block until ``part``'s program is built (a compile error is raised here)."""
        fut = self._futures.pop((model.name, part.name, part.bucket), None)
        if fut is not None:
            fut.result()

    def close(self) -> None:
        """Drop the programs not started and wait for the running ones."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._futures.clear()


def _compile_part(model: LoadedModel, part: Part, waves: dict[str, np.ndarray], seed: int) -> None:
    from jaxadv import attacks as A

    x, lens, labels, targets, key = job_arrays(model.name, part.key, part.jobs, waves, seed)
    A.compile_sweep(
        part.key, model.classifier, model.params, x, lens, labels, targets=targets,
        config=part.config, key=key, slots=part.slots,
    )  # fmt: skip


def sweep(
    out: Path,
    store: Any,
    model: LoadedModel,
    attacks: dict[str, tuple[str, Any]],
    jobs: Sequence[Job],
    waves: dict[str, np.ndarray],
    *,
    batch_size: int,
    seed: int,
    write_audio: bool,
    arrays: Any = None,
    progress: bool = True,
    compiler: Compiler | None = None,
    share: Any = None,
) -> None:
    """Run every attack on every job of one model, skipping jobs already in ``store``.

    ``arrays``: the run's :class:`~jaxadv.experiments.arrays.ArrayStore`, which receives each
    finished job's adversarial waveform before its row (None: not stored); ``write_audio``: also
    write it as a WAV file for listening (the row's ``adv_file``).

    Each (attack, length bucket) streams its jobs through the slots of one compiled program
    (:func:`jaxadv.attacks.sweep`: finished jobs leave their slot to the next ones), and every
    finished job is stored at once, so a killed run resumes job by job. L-BFGS's host-side
    ``mode="scipy"`` runs in fixed batches instead (:func:`run_batch`). ``compiler``: a
    :class:`Compiler` that was given this sweep's :func:`plan`; each part waits for its program.
    ``share``: attack only the jobs this process owns (:class:`~jaxadv.experiments.cluster.Share`;
    default: all); the progress bars count them.
    """
    from tqdm import tqdm

    from jaxadv import audio

    lengths = {k: len(v) for k, v in waves.items()}
    todo = [j for j in jobs if j.clip.fname in waves]
    parts = plan(store, model, attacks, todo, waves, batch_size, share)
    for name in attacks:
        mine = sum(share is None or share.owns(job_key(model.name, name, j)) for j in todo)
        bar = tqdm(
            total=mine,
            initial=mine - sum(len(p.jobs) for p in parts if p.name == name),
            desc=f"{model.name}/{name}",
            unit="ex",
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )

        def keep(b: Sequence[Job], met: Any, adv: np.ndarray, secs: float, name=name, bar=bar):
            if arrays is not None:  # before the rows: a stored row always has its waveform
                arrays.append(
                    {
                        job_key(model.name, name, j): adv[i, : lengths[j.clip.fname]]
                        for i, j in enumerate(b)
                    }
                )
            files = [""] * len(b)
            if write_audio:
                for i, j in enumerate(b):
                    rel = adv_filename(model.name, name, j)
                    (out / rel).parent.mkdir(parents=True, exist_ok=True)
                    audio.write_audio(
                        out / rel, adv[i, : lengths[j.clip.fname]], model.sample_rate,
                        subtype="FLOAT",
                    )  # fmt: skip
                    files[i] = rel
            store.append(rows_for_batch(model.name, name, b, met, secs, files, model.labels))
            bar.update(len(b))

        for p in parts:
            if p.name != name or not p.jobs:
                continue
            if not p.slots:  # host-side fidelity mode: fixed batches
                for b in job_batches(p.jobs, lengths, batch_size):
                    met, _, adv, secs = run_batch(
                        model, p.key, p.config, b, waves, seed, batch_size
                    )
                    keep(b, met, adv, secs)
                continue
            if compiler is not None:
                compiler.wait(model, p)
            run_sweep(model, p.key, p.config, p.jobs, waves, seed, p.slots, keep)
        bar.close()
