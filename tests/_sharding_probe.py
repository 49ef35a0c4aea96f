"""Run one sweep batch through jaxadv.experiments.sweep and save the results (used by
test_experiments.py in subprocesses with 1 and 4 host devices)."""

import sys

import jax
import numpy as np

from jaxadv import attacks as A
from jaxadv.classifier import Classifier
from jaxadv.datasets import Clip
from jaxadv.experiments import models as M
from jaxadv.experiments import sweep as S


def main(out: str) -> None:
    clf = Classifier.build("vgg13", width=1 / 16)
    params = clf.init_params(jax.random.PRNGKey(0), mean=-30.0, std=20.0)
    model = M.LoadedModel("vgg13", clf, params, {}, None)
    rng = np.random.default_rng(0)
    waves, jobs = {}, []
    for i in range(6):  # 6 rows: not a multiple of 4 devices, so padding is exercised
        n = 20_000 + 3000 * i
        t = np.arange(n) / 32000
        waves[f"c{i}.wav"] = (0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t)).astype(np.float32)
        waves[f"c{i}.wav"] += 0.01 * rng.standard_normal(n).astype(np.float32)
        jobs.append(S.Job(Clip(f"c{i}.wav", "Cello", 6, None, "test")))
    res = {}
    for name, cfg in {
        "deepfool": A.DeepFoolConfig(steps=5),
        "cw": A.CWConfig(binary_search_steps=2, max_iterations=10, learning_rate=1e-3),
        "noise": A.NoiseConfig(snr_db=20.0),
    }.items():
        met, x, adv, _ = S.run_batch(model, name, cfg, jobs, waves, seed=1)
        res[name + "_adv"] = adv
        res[name + "_snr"] = met.snr_db
        res[name + "_success"] = met.success
    res["devices"] = np.array(len(jax.local_devices()))
    np.savez(out, **res)


if __name__ == "__main__":
    main(sys.argv[1])
