"""Randomized smoothing (jaxadv.certify): the certified radius of a linear classifier against
Cohen et al.'s closed form, the Clopper-Pearson bound, abstention, batch independence."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import beta, norm

from jaxadv import certify as K
from jaxadv.classifier import LinearClassifier, ModelOutput

N = 64


@dataclasses.dataclass(frozen=True)
class RawLinear:
    """``logits = x @ w + b`` over *every* sample, padding included (unlike LinearClassifier)."""

    def __call__(self, params, x, lengths):
        logits = x @ params["w"] + params["b"]
        return ModelOutput(logits[:, None], jnp.ones((x.shape[0], 1), bool),
                           jax.nn.softmax(logits, -1))  # fmt: skip


def _linear(distance: float, n: int = N, seed: int = 0):
    """A binary linear classifier and a clip at L2 ``distance`` from its boundary (class 1)."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(n).astype(np.float32)
    u /= np.linalg.norm(u)
    w = np.stack([np.zeros(n, np.float32), u], axis=1)  # logit 1 - logit 0 = u . x
    x = rng.uniform(-0.1, 0.1, n).astype(np.float32)
    x = x - (x @ u) * u + distance * u  # u . x = distance exactly
    return LinearClassifier(), {"w": w, "b": np.zeros(2, np.float32)}, x


@pytest.mark.parametrize("ratio", [0.5, 1.0, 2.0])
def test_the_certified_radius_of_a_linear_classifier_is_cohens_closed_form(ratio):
    # Cohen et al., Theorem 1 on a linear classifier: p_A = Phi(d / sigma), R = sigma
    # Phi^-1(p_A) = d, the exact distance to the boundary; the certificate is a lower bound of it
    sigma, d = 0.02, 0.02 * ratio
    clf, params, x = _linear(d)
    cfg = K.SmoothingConfig(sigma=sigma, n0=100, n=20_000, alpha=0.001, per_step=500)
    cert = K.certify(clf, params, x[None], np.array([N]), jax.random.key(1), cfg)
    assert cert.prediction[0] == 1
    # the empirical frequency matches Phi(d / sigma) (binomial noise, 4 standard deviations)
    p = norm.cdf(ratio)
    k = cert.counts[0, 1]
    assert abs(k / cfg.n - p) < 4 * np.sqrt(p * (1 - p) / cfg.n)
    # Clopper-Pearson: the alpha quantile of Beta(k, n - k + 1)
    np.testing.assert_allclose(cert.p_lower[0], beta.ppf(cfg.alpha, k, cfg.n - k + 1))
    assert cert.radius[0] < d  # a lower bound ...
    # ... within what n = 20 000 draws allow: k is within 4 standard errors of p n (above) and
    # the one-sided 99.9 % Clopper-Pearson bound about 3.1 more below k / n
    worst = sigma * norm.ppf(p - 8 * np.sqrt(p * (1 - p) / cfg.n))
    assert cert.radius[0] > worst
    # the certified SNR is the SNR of a perturbation of that norm
    energy = float(np.sum(x.astype(np.float64) ** 2))
    np.testing.assert_allclose(cert.snr_db[0], 10 * np.log10(energy / cert.radius[0] ** 2))


def test_a_clip_on_the_boundary_abstains():
    clf, params, x = _linear(0.0)
    cfg = K.SmoothingConfig(sigma=0.02, n0=100, n=2_000, per_step=500)
    cert = K.certify(clf, params, x[None], np.array([N]), jax.random.key(2), cfg)
    assert cert.prediction[0] == -1 and cert.radius[0] == 0 and np.isinf(cert.snr_db[0])
    assert K.predict(clf, params, x[None], np.array([N]), jax.random.key(3), cfg)[0] == -1


def test_predict_is_the_clean_class_far_from_the_boundary():
    clf, params, x = _linear(0.2)
    cfg = K.SmoothingConfig(sigma=0.02, n=1_000, per_step=500)
    assert K.predict(clf, params, x[None], np.array([N]), jax.random.key(4), cfg)[0] == 1


def test_counts_do_not_depend_on_the_batch_and_padding_gets_no_noise():
    clf, params, x = _linear(0.02)
    keys = jax.random.split(jax.random.key(5), 3)
    xb = np.stack([x, -x, x])
    lens = np.array([N, N, N // 2])
    both = K.sample_counts(clf, params, xb, lens, keys, sigma=0.02, num=1000, per_step=250)
    alone = K.sample_counts(clf, params, xb[:1], lens[:1], keys[:1], sigma=0.02, num=1000,
                            per_step=250)  # fmt: skip
    np.testing.assert_array_equal(both[0], alone[0])
    assert both.sum(1).tolist() == [1000] * 3
    # a clip whose second half is padding gets no noise there: a classifier that reads the
    # padding with huge weights counts exactly as one whose padding weights are zero
    raw = RawLinear()
    w0 = params["w"].copy()
    w0[N // 2 :] = 0.0
    w_big = params["w"].copy()
    w_big[N // 2 :, 1] = 1e3
    xh = np.where(np.arange(N) < N // 2, x, 0.0).astype(np.float32)[None]
    kw = {"sigma": 0.02, "num": 1000, "per_step": 250}
    a = K.sample_counts(raw, {"w": w0, "b": params["b"]}, xh, lens[2:], keys[2:], **kw)
    b = K.sample_counts(raw, {"w": w_big, "b": params["b"]}, xh, lens[2:], keys[2:], **kw)
    np.testing.assert_array_equal(a, b)
    assert 0 < a[0, 1] < 1000  # the valid half is near the boundary: both classes are drawn


def test_jit_program_is_reused_for_a_second_batch():
    clf, params, x = _linear(0.02)
    keys = jax.random.split(jax.random.key(6), 1)
    K.sample_counts(clf, params, x[None], np.array([N]), keys, sigma=0.02, num=500, per_step=250)
    before = K._count._cache_size()
    K.sample_counts(clf, params, -x[None], np.array([N]), keys, sigma=0.03, num=500, per_step=250)
    assert K._count._cache_size() == before  # sigma is an array argument: no recompilation


def test_certified_accuracy_curve():
    cert = K.Certificate(
        prediction=np.array([1, 0, -1, 1]),
        counts=np.zeros((4, 2)),
        p_lower=np.zeros(4),
        radius=np.zeros(4),
        snr_db=np.array([30.0, 50.0, np.inf, 70.0]),
    )
    labels = np.array([1, 1, 1, 1])  # clip 1 is wrong, clip 2 abstains
    acc = K.certified_accuracy(cert, labels, [20, 40, 60, 80])
    np.testing.assert_allclose(acc, [0.0, 0.25, 0.25, 0.5])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sigma": 0.0}, "sigma must be a positive"),
        ({"alpha": 0.7}, "alpha must be in"),
        ({"n": 0}, "must be >= 1"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        K.SmoothingConfig(**kwargs)


def test_counts_must_be_exact():
    clf, params, x = _linear(0.02)
    with pytest.raises(ValueError, match="multiple of per_step"):
        K.certify(clf, params, x[None], np.array([N]), jax.random.key(0),
                  K.SmoothingConfig(n=1050, per_step=100))  # fmt: skip


def test_dbfs_noise_level():
    assert K.SmoothingConfig.at_dbfs(-40).sigma == pytest.approx(0.01)


# --- python -m jaxadv.experiments.certify on a model of one's own --------------------------


def test_the_certify_command_on_a_wrapped_model(tmp_path, capfd):
    import json

    import soundfile as sf

    from jaxadv.experiments import certify as E
    from jaxadv.experiments.results import read_rows

    audio = tmp_path / "data" / "audio_test"
    audio.mkdir(parents=True)
    rows = ["fname,label,usage,freesound_id,license"]
    for i, (freq, label) in enumerate([(300, "low"), (5000, "high")]):
        t = np.arange(16000) / 16000
        sf.write(audio / f"c{i}.wav", (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32),
                 16000)  # fmt: skip
        rows.append(f"c{i}.wav,{label},Private,{i},CC0")
    (tmp_path / "data" / "test_post_competition_scoring_clips.csv").write_text(
        "\n".join(rows) + "\n"
    )
    out = tmp_path / "run"
    argv = ["--model-fn", "band=tests._custom_model:build", "--data", str(tmp_path / "data"),
            "--out", str(out), "--noise-dbfs=-40,-20", "--n", "200", "--n0", "50",
            "--per-step", "50", "--no-progress"]  # fmt: skip
    E.main(argv)
    got = read_rows(out / E.FILE, E.schema())
    assert len(got) == 4 and {r["model"] for r in got} == {"band"}
    for r in got:
        # a pure tone far from the band boundary: every draw agrees, p_A = alpha^(1/n)
        assert r["prediction"] == r["label"] and r["top_count"] == 200
        np.testing.assert_allclose(r["p_lower"], 0.001 ** (1 / 200), rtol=1e-6)
        sigma = 10 ** (r["noise_dbfs"] / 20)
        from scipy.stats import norm

        np.testing.assert_allclose(
            r["radius"], sigma * norm.ppf(r["p_lower"]), rtol=1e-4
        )  # CSV: 7 decimals
    # 20 dB more noise, 20 dB less certified SNR (the same p_A)
    by = {(r["fname"], r["noise_dbfs"]): r["certified_snr_db"] for r in got}
    np.testing.assert_allclose(by[("c0.wav", -20.0)], by[("c0.wav", -40.0)] - 20.0, atol=1e-6)
    table = (out / "certified_accuracy.md").read_text()
    assert "band" in table and (out / "figure_certified.png").stat().st_size > 5000
    assert json.loads((out / "config.json").read_text())["sample_rate"] == 16000
    before = (out / E.FILE).read_bytes()
    E.main(argv)  # resume: nothing to do
    assert (out / E.FILE).read_bytes() == before
    capfd.readouterr()
    with pytest.raises(SystemExit) as e:
        E.main([*argv[:-1], "--alpha", "0.01", "--no-progress"])
    assert e.value.code == 2
    assert "holds a certification with other settings" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--noise-dbfs", "abc"], "--noise-dbfs: expected comma-separated numbers"),
        (["--noise-dbfs", "3"], "must be below 0 dBFS"),
        (["--n", "120", "--per-step", "50"], "must be multiples of --per-step"),
        (["--alpha", "0.9"], "alpha must be in"),
    ],
)
def test_certify_bad_flags_are_one_line(tmp_path, capfd, flags, message):
    from jaxadv.experiments import certify as E

    with pytest.raises(SystemExit) as e:
        E.main(["--out", str(tmp_path / "run"), "--no-progress", *flags])
    assert e.value.code == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()
