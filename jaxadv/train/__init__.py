"""Training the five architectures in JAX with Iqbal et al.'s recipe (``python -m jaxadv.train``).

See ``README.md`` in this folder. Public API::

    from jaxadv.train import TrainConfig, fit, split_train_val
    cfg = TrainConfig("vgg13", width=1.0)
    train, val = split_train_val(read_train(root), val_fold=None, val_fraction=0.1, seed=cfg.seed)
    report = fit(cfg, train, "runs/train-vgg13", val_clips=val, test_clips=read_test(root))
"""

from jaxadv.train._data import (
    EpochPlan,
    Examples,
    epoch_plan,
    extract_examples,
    map_at_k,
    segment_starts,
    split_train_val,
)
from jaxadv.train._loop import (
    TrainConfig,
    fit,
    lr_at_epoch,
    make_optimizer,
    table1_markdown,
    train_step,
)
from jaxadv.train.augment import Augment

__all__ = [
    "Augment",
    "EpochPlan",
    "Examples",
    "TrainConfig",
    "epoch_plan",
    "extract_examples",
    "fit",
    "lr_at_epoch",
    "make_optimizer",
    "map_at_k",
    "segment_starts",
    "split_train_val",
    "table1_markdown",
    "train_step",
]
