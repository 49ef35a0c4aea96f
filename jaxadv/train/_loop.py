"""Iqbal et al.'s training recipe in JAX: config, the jitted step, and the resumable fit loop.

Recipe (tqbl/dcase2018_task2 ``task2/training.py``, ``task2/mixup.py``,
``task2/config/training.py``; ORIGINALS.md §4.1): Adam 5e-4, multiplied by 0.9 at the start of
every even epoch (Keras' ``LearningRateScheduler`` with ``epoch % 2 == 0``, so already at epoch
0), batch 128, 40 epochs, ``len(train chunks) // 128`` steps per epoch, mixup with
alpha = 1 on class-balanced pairs, labels mixed too, standardisation with one scalar mean/std
fitted on the training chunks and applied after mixing, categorical cross-entropy with optional
weights for unverified clips, batch norm in training mode (momentum 0.99, epsilon 1e-3).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxadv import config as C
from jaxadv.classifier import Classifier
from jaxadv.datasets import Clip, Failure
from jaxadv.frontend import standardise
from jaxadv.train import _data as D
from jaxadv.train.augment import Augment, augment_batch

log = logging.getLogger("jaxadv.train")

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (defaults: Iqbal's recipe for the paper's models)."""

    model: str  # registry name: vgg13, crnn, gcnn, dense_mel, dense_wav
    width: float = 1.0  # width multiplier (1.0 = the paper's model)
    epochs: int = 40
    batch_size: int = 128
    learning_rate: float = 5e-4
    lr_decay: float = 0.9  # multiplied in at every epoch with epoch % lr_decay_every == 0
    lr_decay_every: int = 2
    mixup_alpha: float = 1.0  # Beta(alpha, alpha) mixing weights; 0 disables mixup
    adam_eps: float = 1e-7  # Keras 2.2.4's K.epsilon()
    unverified_weight: float = 1.0  # sample weight of clips with manually_verified == 0
    val_fold: int | None = None  # Iqbal's fold column; else a seeded fraction
    val_fraction: float = 0.1  # 0 trains on everything (Iqbal's 'all')
    seed: int = 1000  # Iqbal's initial_seed
    save_every: int = 200  # steps between saved training states (and at every epoch end)
    merge: str = "gmean"  # clip merge of Iqbal chunk predictions for evaluation (Iqbal: gmean)
    frontend: str = "iqbal"  # Iqbal models' features: a jaxadv.frontend.CHUNKED_FRONTENDS name
    # PGD adversarial training (Madry et al. 2018) on the waveform; adv_snr_db None: off
    adv_snr_db: float | None = None  # budget: radius ||x|| * 10^(-snr/20) (L2), RMS(x) * .. (L-inf)
    adv_steps: int = 5  # PGD steps per batch (each one forward+backward)
    adv_norm: str = "l2"  # "l2" or "linf" ball
    adv_fraction: float = 0.5  # share of each batch replaced by its adversarial examples
    adv_rel_stepsize: float = 0.5  # PGD step as a fraction of the radius (Madry: 2.5 / steps)
    augment: Augment = Augment()  # waveform augmentation (jaxadv.train.augment); off by default
    # A warm start (``fit(init=...)``): the first epoch this run trains. The learning-rate
    # schedule, the epoch plans and the augmentation and PGD draws continue from there, so a model
    # trained for ``start_epoch`` epochs trains on as that run would have (less Adam's moments,
    # which start again from zero).
    start_epoch: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.start_epoch < self.epochs:
            raise ValueError(
                f"start_epoch must lie in [0, epochs) = [0, {self.epochs}), got {self.start_epoch}"
            )
        if self.adv_snr_db is None:
            return
        if not math.isfinite(self.adv_snr_db):
            raise ValueError(f"adv_snr_db must be a finite SNR in dB, got {self.adv_snr_db}")
        if self.adv_steps < 1:
            raise ValueError(f"adv_steps must be at least 1, got {self.adv_steps}")
        if self.adv_norm not in ("l2", "linf"):
            raise ValueError(f"adv_norm must be 'l2' or 'linf', got {self.adv_norm!r}")
        if not 0.0 < self.adv_fraction <= 1.0:
            raise ValueError(f"adv_fraction must lie in (0, 1], got {self.adv_fraction}")
        if not self.adv_rel_stepsize > 0:
            raise ValueError(f"adv_rel_stepsize must be positive, got {self.adv_rel_stepsize}")

    @property
    def adversarial(self) -> bool:
        """PGD adversarial training is on."""
        return self.adv_snr_db is not None

    def pgd(self) -> Any:
        """The :class:`jaxadv.attacks.PGDConfig` of the training attack (random start, every step
        taken: no early abort), or None."""
        if not self.adversarial:
            return None
        from jaxadv.attacks.pgd import PGDConfig

        return PGDConfig(
            snr_db=float(self.adv_snr_db), norm=self.adv_norm, steps=self.adv_steps,
            rel_stepsize=self.adv_rel_stepsize, random_start=True, abort_early=False,
        )  # fmt: skip

    def adversarial_count(self) -> int:
        """Examples per batch replaced by adversarial ones (at least one when training is
        adversarial)."""
        if not self.adversarial:
            return 0
        return max(1, min(self.batch_size, round(self.adv_fraction * self.batch_size)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def waveform_examples(self) -> bool:
        """The Iqbal models train on waveform segments (features computed in the step) when the
        waveform is perturbed: adversarial training or augmentation."""
        return self.adversarial or self.augment.active

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The default of every field that has one, as saved in ``train.json``: what a run of an
        older jaxadv, whose saved config lacks a newer field, trained with."""
        return {
            f.name: dataclasses.asdict(f.default)
            if dataclasses.is_dataclass(f.default)
            else f.default
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config saved in ``train.json`` (or a checkpoint's ``training``) back."""
        d = {**cls.defaults(), **d}
        return cls(**{**d, "augment": Augment.from_dict(d["augment"])})


def lr_at_epoch(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate during 0-based ``epoch``: ``lr * decay ** (epoch // every + 1)``.

    Keras calls the schedule at the start of each epoch with the current rate and Iqbal's schedule
    decays when ``epoch % 2 == 0``, so epochs 0-1 already run at ``lr * 0.9``.
    """
    return cfg.learning_rate * cfg.lr_decay ** (epoch // cfg.lr_decay_every + 1)


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam (Keras 2.2.4 defaults, epsilon 1e-7) with the per-epoch schedule.

    Keras folds the bias corrections into the step size (``lr * sqrt(1 - b2^t) / (1 - b1^t)``
    with ``eps`` added to the uncorrected ``sqrt(v)``); optax adds ``eps`` to the corrected
    ``sqrt(v_hat)``. The two differ only while ``sqrt(v)`` is comparable to ``eps``.
    """

    def schedule(step: Array) -> Array:
        # a warm start's optimizer counts from 0 again: the schedule continues at start_epoch
        epoch = step // steps_per_epoch + cfg.start_epoch
        exponent = epoch // cfg.lr_decay_every + 1
        return cfg.learning_rate * jnp.power(cfg.lr_decay, exponent.astype(jnp.float32))

    return optax.adam(schedule, b1=0.9, b2=0.999, eps=cfg.adam_eps)


# ---------------------------------------------------------------------------------------------
# The jitted step
# ---------------------------------------------------------------------------------------------


def _log_probs(clf: Classifier, variables: Any, x: Array, lengths: Array) -> tuple[Array, Any]:
    """Training-mode forward: log class probabilities ``[B, C]`` and the new batch statistics."""
    module = clf.module()
    if clf.family == "iqbal":
        logits, upd = module.apply(variables, x[..., None], train=True, mutable=["batch_stats"])
        return jax.nn.log_softmax(logits, axis=-1), upd["batch_stats"]
    heads, upd = module.apply(variables, x, lengths, train=True, mutable=["batch_stats"])
    # The Cochlear models' output is the mean of the heads' softmaxes (Keras' Average layer);
    # Keras' categorical cross-entropy clips it to [1e-7, 1 - 1e-7] before the log.
    probs = jnp.mean(jax.nn.softmax(heads, axis=-1), axis=1)
    return jnp.log(jnp.clip(probs, 1e-7, 1.0 - 1e-7)), upd["batch_stats"]


def _model_inputs(
    clf: Classifier, norm: dict[str, Array], x: Array, lengths: Array, waveform: bool
) -> Array:
    """What the Flax module takes: standardised features ``[B, 128, F]`` (Iqbal models: cached
    chunks, or the front-end's single chunk of each 65536-sample waveform segment), or the
    waveform itself (Cochlear models)."""
    if clf.family != "iqbal":
        return x
    if waveform:
        # a segment of 65536 samples has 129 centred frames: exactly one chunk (Iqbal's rule)
        x = clf.frontend(x, lengths).chunks[:, 0]
    return standardise(x, norm["mean"], norm["std"])


def adversarial_examples(
    clf: Classifier,
    variables: Any,
    norm: dict[str, Array],
    x: Array,
    lengths: Array,
    labels: Array,
    keys: Array,
    pgd: Any,
) -> Array:
    """Madry et al.'s PGD examples ``[B, N]`` for training: ``pgd.steps`` steps of
    :class:`jaxadv.attacks.pgd.PGD` from a random start in the SNR ball, returning the last
    iterate (the strongest, at a fixed cost) rather than the first adversarial one that attacks
    report. The model runs in training mode on the batch's own statistics (not updated).
    """
    from jaxadv.attacks import engine
    from jaxadv.attacks.pgd import PGD
    from jaxadv.classifier import ModelOutput

    def fn(params: Any, xw: Array, n: Array) -> ModelOutput:
        model, nrm = params  # passed in like every classifier function's params
        logp, _ = _log_probs(clf, model, _model_inputs(clf, nrm, xw, n, True), n)
        return ModelOutput(logp[:, None, :], jnp.ones((xw.shape[0], 1), bool), jnp.exp(logp))

    params = (variables, norm)
    alg = PGD(pgd)
    problem = alg.prepare(engine.Problem(x, lengths, labels, None, keys))
    st = alg.init(fn, params, problem)

    def body(_: Array, st: Any) -> Any:
        e = alg.evaluate(fn, params, problem, alg.query(st))
        return alg.step(problem, st, e, jnp.ones(x.shape[:1], bool))

    st = jax.lax.fori_loop(0, pgd.steps, body, st)
    return jax.lax.stop_gradient(jnp.where(problem.valid, problem.x + st.delta, x))


@functools.partial(
    jax.jit,
    static_argnames=("clf", "optimizer", "waveform", "pgd", "n_adv", "augment"),
    donate_argnames=("state",),
)
def train_step(
    clf: Classifier,
    optimizer: optax.GradientTransformation,
    state: dict[str, Any],
    norm: dict[str, Array],
    x1: Array,
    x2: Array,
    len1: Array,
    len2: Array,
    y1: Array,
    y2: Array,
    w1: Array,
    w2: Array,
    lam: Array,
    adv_key: Array | None = None,
    aug_key: Array | None = None,
    *,
    waveform: bool = False,
    pgd: Any = None,
    n_adv: int = 0,
    augment: Augment | None = None,
) -> tuple[dict[str, Any], dict[str, Array]]:
    """One mixup step on a batch of example pairs; returns the new state and metrics.

    ``x = lam * x1 + (1 - lam) * x2`` (and the one-hot labels, and the sample weights, alike), then
    standardised (Iqbal models), forward in training mode, Keras' weighted mean of the
    cross-entropy ``mean(w * ce) / mean(w != 0)``, one Adam update.

    Adversarial training (``pgd``, a :class:`jaxadv.attacks.PGDConfig`): the examples are
    waveforms (``waveform=True`` for the Iqbal models, whose features the step computes), and the
    first ``n_adv`` mixed examples of the batch are replaced by their PGD examples against the
    label with the larger mixing weight, from keys ``fold_in(adv_key, step)``.

    Augmentation (``augment``, a :class:`jaxadv.train.augment.Augment`): the mixed waveforms go
    through :func:`jaxadv.train.augment.augment_batch` (keys ``fold_in(aug_key, step)``) before
    any PGD.
    """
    shape = (-1,) + (1,) * (x1.ndim - 1)
    x = lam.reshape(shape) * x1.astype(jnp.float32) + (1 - lam.reshape(shape)) * x2.astype(
        jnp.float32
    )
    lengths = jnp.maximum(len1, len2)
    n_cls = clf.num_classes
    y = lam[:, None] * jax.nn.one_hot(y1, n_cls) + (1 - lam[:, None]) * jax.nn.one_hot(y2, n_cls)
    w = lam * w1 + (1 - lam) * w2
    metrics: dict[str, Array] = {}
    if augment is not None and augment.active:
        keys = jax.random.split(jax.random.fold_in(aug_key, state["step"]), x.shape[0])
        x, lengths = augment_batch(x, lengths, keys, augment)
    if pgd is not None:
        variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
        hard = jnp.where(lam >= 0.5, y1, y2)
        keys = jax.random.split(jax.random.fold_in(adv_key, state["step"]), n_adv)
        xa = adversarial_examples(
            clf, variables, norm, x[:n_adv], lengths[:n_adv], hard[:n_adv], keys, pgd
        )
        x = jnp.concatenate([xa, x[n_adv:]], axis=0)
    inputs = _model_inputs(clf, norm, x, lengths, waveform)

    def loss_fn(params: Any) -> tuple[Array, tuple[Any, Array]]:
        variables = {"params": params, "batch_stats": state["batch_stats"]}
        logp, stats = _log_probs(clf, variables, inputs, lengths)
        ce = -jnp.sum(y * logp, axis=-1)
        loss = jnp.mean(ce * w) / jnp.maximum(jnp.mean((w != 0).astype(jnp.float32)), 1e-12)
        return loss, (stats, logp)

    (loss, (stats, logp)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    new = {
        "params": optax.apply_updates(state["params"], updates),
        "batch_stats": stats,
        "opt_state": opt_state,
        "step": state["step"] + 1,
    }
    hit = jnp.argmax(logp, -1) == jnp.argmax(y, -1)
    metrics["loss"] = loss
    metrics["acc"] = jnp.mean(hit)
    if pgd is not None:  # accuracy on the batch's adversarial examples (training mode)
        metrics["adv_acc"] = jnp.mean(hit[:n_adv])
    return new, metrics


# ---------------------------------------------------------------------------------------------
# The fit loop
# ---------------------------------------------------------------------------------------------


def _as_json(d: dict[str, Any]) -> Any:
    """``d`` as it reads back from JSON (tuples become lists), for comparing saved configs."""
    return json.loads(json.dumps(d))


def _manager(path: Path):
    import orbax.checkpoint as ocp

    # Orbax writes each step into a temporary folder and renames it when complete, so a kill
    # during a save leaves the previous state intact.
    return ocp.CheckpointManager(
        path.absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
    )


def _evaluate(clf: Classifier, params: Any, clips: Sequence[Clip]) -> dict[str, float]:
    if not clips:
        return {"acc": math.nan, "map3": math.nan, "n": 0}
    probs, labels = D.clip_predictions(clf, params, clips)
    return {
        "acc": float(np.mean(probs.argmax(1) == labels)) if len(labels) else math.nan,
        "map3": D.map_at_k(labels, probs, 3),
        "n": int(len(labels)),
    }


def fit(
    cfg: TrainConfig,
    train_clips: Sequence[Clip],
    out: str | Path,
    *,
    val_clips: Sequence[Clip] = (),
    test_clips: Sequence[Clip] = (),
    stop_after: int | None = None,
    progress: bool = True,
    init: str | Path | None = None,
) -> dict[str, Any]:
    """Train (or resume) a model in folder ``out``; returns the final report.

    Writes ``out/examples/`` (cached training examples), ``out/state/`` (resumable training
    state every ``cfg.save_every`` steps and each epoch end), ``out/history.csv`` (per-epoch
    loss, accuracy, validation accuracy and MAP@3), ``out/model/`` (the final model, a
    :func:`jaxadv.checkpoint.save_checkpoint` folder with the same sidecar as converted models),
    ``out/best/`` (the epoch with the best validation MAP@3, when validating), and
    ``out/table1.{md,json}`` (train and test accuracy, the paper's Table 1).

    Args:
      cfg: hyper-parameters.
      train_clips: training clips (the validation fold already removed, see
        :func:`jaxadv.train.split_train_val`).
      out: run folder; an existing state is resumed from its last saved step.
      val_clips: clips evaluated after every epoch (accuracy, MAP@3).
      test_clips: clips of the final test accuracy (Table 1).
      stop_after: stop (after saving) once this many steps are done in total — a deliberate
        interruption, for tests.
      progress: show progress bars.
      init: a warm start: the checkpoint folder (:func:`jaxadv.checkpoint.save_checkpoint`, of
        the same architecture, width and front-end) whose weights, batch-norm statistics and
        standardisation start the run instead of a fresh initialisation; it trains epochs
        ``cfg.start_epoch`` to ``cfg.epochs - 1`` (fine-tuning a trained model for more epochs).
        Its digest is recorded in ``train.json``: resuming from another checkpoint is refused.
    """
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "train.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        # a run of an older jaxadv lacks the newer fields: it trained with their defaults
        if _as_json({**TrainConfig.defaults(), **old["config"]}) != _as_json(cfg.to_dict()):
            raise ValueError(
                f"{out} holds a training run with another configuration; resume it with the same "
                "settings or choose another output folder"
            )
    from jaxadv.models import get_config as model_config

    fe = None
    if model_config(cfg.model).family == "iqbal":
        fe = cfg.frontend
    elif cfg.frontend != "iqbal":
        raise ValueError(
            f"{cfg.model} takes the waveform and computes its own features; frontend "
            f"{cfg.frontend!r} is for vgg13, crnn and gcnn"
        )
    clf = Classifier.build(cfg.model, width=cfg.width, merge=cfg.merge, frontend=fe)
    start = _warm_start(clf, cfg, init)
    old_init = json.loads(meta_path.read_text()).get("init") if meta_path.exists() else None
    if meta_path.exists() and (old_init or {}).get("digest") != (
        start["init"]["digest"] if start else None
    ):
        raise ValueError(
            f"{out} holds a training run that started from another checkpoint; resume it with "
            "the same init or choose another output folder"
        )
    failures: list[Failure] = []
    # adversarial training perturbs the waveform: the Iqbal models then train on waveform
    # segments (as the Cochlear models always do) and the step computes their features
    waveform = clf.family == "iqbal" and cfg.waveform_examples
    cache = out / "examples"
    if (cache / "labels.npy").exists():
        ex = D.load_examples(cache)
    else:
        ex = D.extract_examples(
            "waveform" if waveform else clf.family, train_clips,
            unverified_weight=cfg.unverified_weight, failures=failures, progress=progress,
            frontend=clf.frontend,
        )  # fmt: skip
        D.save_examples(cache, ex)
        ex = D.load_examples(cache)
    if start is not None:
        # the standardisation belongs to the weights: keep the initial model's
        mean, std = start["mean"], start["std"]
    elif clf.family == "iqbal":
        # keras-preprocessing's ImageDataGenerator.fit: one scalar mean and population std
        if waveform:
            mean, std = D.feature_moments(clf.frontend, ex)
        else:
            x32 = np.asarray(ex.x, np.float32)
            mean = float(np.mean(x32))
            std = float(np.std(x32))
            del x32
    else:
        mean, std = 0.0, 1.0
    n_ex = len(ex.labels)
    spe = n_ex // cfg.batch_size
    if spe < 1:
        raise ValueError(
            f"{n_ex} training examples are fewer than one batch of {cfg.batch_size}; "
            "lower --batch-size"
        )
    meta = {
        "config": cfg.to_dict(),
        "examples": n_ex,
        "steps_per_epoch": spe,
        "mean": mean,
        "std": std,
        "skipped": [f.clip.fname for f in failures],
        **({"init": start["init"]} if start is not None else {}),
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    optimizer = make_optimizer(cfg, spe)
    if start is not None:
        params = jax.tree.map(jnp.asarray, start["params"])
    else:
        params = clf.init_params(jax.random.key(cfg.seed), mean=mean, std=std)
    norm = params.get("norm", {"mean": jnp.float32(0), "std": jnp.float32(1)})
    state = {
        "params": params["model"]["params"],
        "batch_stats": params["model"]["batch_stats"],
        "opt_state": optimizer.init(params["model"]["params"]),
        # the step counts from epoch 0: epoch plans and augmentation keys continue a warm start
        "step": jnp.asarray(cfg.start_epoch * spe, jnp.int32),
    }
    history: list[dict[str, Any]] = []
    mngr = _manager(out / "state")
    if mngr.latest_step() is not None:
        import orbax.checkpoint as ocp

        step0 = mngr.latest_step()
        state = mngr.restore(step0, args=ocp.args.StandardRestore(jax.tree.map(np.asarray, state)))
        state = jax.tree.map(jnp.asarray, state)
        hist_path = out / "history.json"
        history = json.loads(hist_path.read_text()) if hist_path.exists() else []
        history = [h for h in history if h["epoch"] < step0 // spe]
        log.info("resuming %s from step %d (epoch %d)", out, step0, step0 // spe)
    pgd, n_adv = cfg.pgd(), cfg.adversarial_count()
    adv_key = jax.random.key(cfg.seed + 1) if pgd is not None else None
    aug = cfg.augment if cfg.augment.active else None
    aug_key = jax.random.key(cfg.seed + 2) if aug is not None else None
    print(f"training {cfg.model} (width {cfg.width}) on {jax.devices()[0].platform}: "
          f"{n_ex} examples, {spe} steps/epoch, {cfg.epochs} epochs"
          + (f" (from epoch {cfg.start_epoch} of {init})" if start is not None else "")
          + (f", PGD {cfg.adv_norm} at {cfg.adv_snr_db:g} dB ({cfg.adv_steps} steps) on "
             f"{n_adv} of every {cfg.batch_size}" if pgd is not None else ""))  # fmt: skip

    def as_params(st: dict[str, Any]) -> dict[str, Any]:
        p = {"model": {"params": st["params"], "batch_stats": st["batch_stats"]}}
        if clf.family == "iqbal":
            p["norm"] = norm
        return p

    total = cfg.epochs * spe
    step = int(state["step"])
    best = max((h.get("val_map3", -math.inf) for h in history), default=-math.inf)
    first = cfg.start_epoch * spe
    bar = tqdm(
        total=total - first, initial=step - first, unit="step", disable=not progress,
        dynamic_ncols=True,
    )  # fmt: skip
    while step < total:
        epoch, k0 = divmod(step, spe)
        plan = D.epoch_plan(ex.labels, spe, cfg.batch_size, cfg.mixup_alpha, cfg.seed, epoch)
        if cfg.mixup_alpha <= 0:
            plan = dataclasses.replace(plan, lam=np.ones_like(plan.lam))
        t0, losses, accs, adv_accs = time.perf_counter(), [], [], []
        for k in range(k0, spe):
            a, b = np.sort(plan.first[k]), np.sort(plan.second[k])
            # memory-mapped gathers are fastest on sorted indices; undo the sort afterwards
            ia, ib = np.argsort(np.argsort(plan.first[k])), np.argsort(np.argsort(plan.second[k]))
            x1, x2 = np.asarray(ex.x[a])[ia], np.asarray(ex.x[b])[ib]
            f, s = plan.first[k], plan.second[k]
            state, m = train_step(
                clf, optimizer, state, norm, x1, x2, ex.lengths[f], ex.lengths[s],
                ex.labels[f], ex.labels[s], ex.weight[f], ex.weight[s], plan.lam[k], adv_key,
                aug_key, waveform=waveform, pgd=pgd, n_adv=n_adv, augment=aug,
            )  # fmt: skip
            losses.append(m["loss"])
            accs.append(m["acc"])
            if "adv_acc" in m:
                adv_accs.append(m["adv_acc"])
            step += 1
            bar.update(1)
            if (step % cfg.save_every == 0 or step == stop_after) and k < spe - 1:
                mngr.save(step, args=_save_args(state))
                mngr.wait_until_finished()
            if step == stop_after and k < spe - 1:
                bar.close()
                return {"stopped_at": step}
        row = {
            "epoch": epoch,
            "lr": lr_at_epoch(cfg, epoch),
            "loss": float(np.mean([float(v) for v in losses])) if losses else math.nan,
            "train_batch_acc": float(np.mean([float(v) for v in accs])) if accs else math.nan,
            **({"train_adv_acc": float(np.mean([float(v) for v in adv_accs]))} if adv_accs else {}),
            "seconds": time.perf_counter() - t0,
        }
        if val_clips:
            v = _evaluate(clf, as_params(state), val_clips)
            row.update(val_acc=v["acc"], val_map3=v["map3"])
            if v["map3"] > best:
                best = v["map3"]
                _save_model(out / "best", clf, as_params(state), cfg, extra={"epoch": epoch})
        history.append(row)
        (out / "history.json").write_text(json.dumps(history, indent=1))
        _write_history_csv(out / "history.csv", history)
        # the epoch's state is saved after its history row, so a resumed run never lacks a row
        mngr.save(step, args=_save_args(state))
        mngr.wait_until_finished()
        bar.write(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f}, batch acc "
            f"{row['train_batch_acc']:.3f}"
            + (f", val acc {row['val_acc']:.3f}, MAP@3 {row['val_map3']:.3f}" if val_clips else "")
        )
        if step == stop_after:
            bar.close()
            return {"stopped_at": step}
    bar.close()
    final = as_params(state)
    _save_model(out / "model", clf, final, cfg, extra={"epoch": cfg.epochs - 1, **(
        {"init": start["init"]} if start is not None else {})})  # fmt: skip
    train_eval = _evaluate(clf, final, train_clips)
    test_eval = _evaluate(clf, final, test_clips)
    report = {
        "model": cfg.model,
        "width": cfg.width,
        "train_accuracy": train_eval["acc"],
        "train_clips": train_eval["n"],
        "test_accuracy": test_eval["acc"],
        "test_map3": test_eval["map3"],
        "test_clips": test_eval["n"],
        "epochs": cfg.epochs,
        "history": history,
    }
    (out / "table1.json").write_text(json.dumps(report, indent=1))
    (out / "table1.md").write_text(table1_markdown([report]))
    print(table1_markdown([report]))
    return report


def _warm_start(clf: Classifier, cfg: TrainConfig, init: str | Path | None) -> dict | None:
    """The initial model of a warm start: ``{"params", "mean", "std", "init"}`` (``init``: the
    checkpoint's path and digest), or None for a fresh initialisation."""
    if init is None:
        if cfg.start_epoch:
            raise ValueError(
                f"start_epoch {cfg.start_epoch} continues a trained model: give its checkpoint "
                "as init"
            )
        return None
    from jaxadv import checkpoint

    try:
        c0, params, meta = checkpoint.load_checkpoint(init, expect=clf)
    except (checkpoint.CheckpointError, FileNotFoundError) as e:
        raise ValueError(f"init: {e}") from None
    if c0.frontend != clf.frontend:
        raise ValueError(
            f"init: {init} computes features with {c0.frontend}, this run with {clf.frontend}"
        )
    norm = params.get("norm", {"mean": 0.0, "std": 1.0})
    return {
        "params": params,
        "mean": float(norm["mean"]),
        "std": float(norm["std"]),
        "init": {"path": str(Path(init).absolute()), "digest": checkpoint.digest(meta, params)},
    }


def _save_args(state: dict[str, Any]):
    import orbax.checkpoint as ocp

    return ocp.args.StandardSave(state)


def _save_model(path: Path, clf: Classifier, params: Any, cfg: TrainConfig, extra: dict) -> None:
    from jaxadv.checkpoint import save_checkpoint

    save_checkpoint(
        path, clf, params, labels=C.LABELS, source="trained",
        extra={"training": cfg.to_dict(), **extra}, overwrite=True,
    )  # fmt: skip


def _write_history_csv(path: Path, history: list[dict[str, Any]]) -> None:
    keys = list(dict.fromkeys(k for h in history for k in h))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(history)


def table1_markdown(reports: Sequence[dict[str, Any]]) -> str:
    """The paper's Table 1 (model, training accuracy, test accuracy) as Markdown."""
    lines = ["| Model | Width | Training | Test |", "|---|---|---|---|"]
    for r in reports:
        lines.append(
            f"| {r['model']} | {r['width']} | {r['train_accuracy']:.4f} | {r['test_accuracy']:.4f} |"
        )
    return "\n".join(lines) + "\n"
