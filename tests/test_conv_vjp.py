"""The custom VJP of ``jaxadv.models._layers.conv`` (flipped-kernel input gradient).

Gradients w.r.t. input, kernel and bias must equal JAX's native autodiff for 1-D and 2-D, odd and
even spatial and kernel sizes, 'SAME' and 'VALID'; a model's gradients must be unchanged; jit and
vmap must work; and inside a ``while_loop`` the compiled program must contain no convolution with
the in/out-swapped kernel layout (the slow XLA:CPU form). Second-order and forward-mode autodiff
are not supported through the custom VJP (``set_conv_vjp("native")`` gives them back); the tests
check that the error is JAX's clear one.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv.classifier import Classifier
from jaxadv.models import _layers as L

RTOL = 1e-5


@contextlib.contextmanager
def conv_vjp(mode: str):
    old = L._conv_vjp
    L.set_conv_vjp(mode)
    try:
        yield
    finally:
        L.set_conv_vjp(old)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _grads(mode, x, k, b, padding, ct):
    with conv_vjp(mode):
        y, pullback = jax.vjp(lambda x, k, b: L.conv(x, k, b, padding), x, k, b)
        return y, pullback(ct)


CASES = [
    # (x shape, kernel shape): 1-D and 2-D, odd/even spatial sizes, odd/even kernel sizes
    ((2, 9, 3), (3, 3, 4)),
    ((2, 10, 3), (4, 3, 5)),
    ((1, 7, 1), (1, 1, 2)),
    ((2, 8, 7, 3), (3, 3, 3, 4)),
    ((2, 9, 6, 2), (2, 4, 2, 3)),
    ((3, 5, 5, 1), (5, 2, 1, 2)),
]


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("xs,ks", CASES)
def test_gradients_equal_native_autodiff(xs, ks, padding):
    rng = np.random.default_rng(sum(xs) + sum(ks))
    x = jnp.asarray(rng.normal(size=xs), jnp.float32)
    k = jnp.asarray(rng.normal(size=ks), jnp.float32)
    b = jnp.asarray(rng.normal(size=ks[-1:]), jnp.float32)
    y_n, _ = jax.vjp(lambda x: L._conv_native(x, k, padding), x)
    ct = jnp.asarray(rng.normal(size=y_n.shape), jnp.float32)
    y_nat, g_nat = _grads("native", x, k, b, padding, ct)
    y_fl, g_fl = _grads("flipped", x, k, b, padding, ct)
    assert y_fl.shape == y_nat.shape
    assert _rel(y_fl, y_nat) == 0.0  # the forward is the same convolution
    for name, a, c in zip(("input", "kernel", "bias"), g_fl, g_nat, strict=True):
        assert a.shape == c.shape, name
        assert _rel(a, c) <= RTOL, (name, _rel(a, c))


def test_input_gradient_matches_a_numpy_correlation():
    """A closed-form check independent of JAX's transpose rule (1-D 'SAME', even kernel)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 6, 1)).astype(np.float32)
    k = rng.normal(size=(4, 1, 1)).astype(np.float32)
    ct = rng.normal(size=(1, 6, 1)).astype(np.float32)
    lo = (4 - 1) // 2  # TF 'SAME': padding (1, 2) for a kernel of 4
    # y[i] = sum_t x[i + t - lo] k[t]  =>  dx[j] = sum_i ct[i] k[j - i + lo]
    want = np.zeros(6)
    for j in range(6):
        for i in range(6):
            t = j - i + lo
            if 0 <= t < 4:
                want[j] += ct[0, i, 0] * k[t, 0, 0]
    with conv_vjp("flipped"):
        _, pullback = jax.vjp(lambda v: L.conv(v, jnp.asarray(k)), jnp.asarray(x))
        (dx,) = pullback(jnp.asarray(ct))
    np.testing.assert_allclose(np.asarray(dx)[0, :, 0], want, rtol=1e-5, atol=1e-6)


def test_model_gradients_unchanged():
    """Input and parameter gradients of a whole classifier (VGG13; 1-D is covered above)."""
    clf = Classifier.build("vgg13", width=0.125, num_classes=5)
    params = clf.init_params(jax.random.key(0))
    n = 24000
    x = 0.3 * jax.random.normal(jax.random.key(1), (2, n))
    lengths = jnp.array([n, n - 3000], jnp.int32)

    def loss(p, xx):
        out = clf(p, xx, lengths)
        return jnp.sum(jnp.log(out.probs[:, 1])) + jnp.sum(out.logits**2) * 1e-3

    grads = {}
    for mode in ("native", "flipped"):
        with conv_vjp(mode):
            grads[mode] = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    gp_n, gx_n = grads["native"]
    gp_f, gx_f = grads["flipped"]
    assert float(jnp.max(jnp.abs(gx_n))) > 0
    assert _rel(gx_f, gx_n) <= RTOL
    leaves_n = jax.tree_util.tree_leaves_with_path(gp_n)
    leaves_f = jax.tree.leaves(gp_f)
    assert len(leaves_n) == len(leaves_f)
    for (path, a), c in zip(leaves_n, leaves_f, strict=True):
        assert _rel(c, a) <= RTOL, jax.tree_util.keystr(path)


def test_jit_and_vmap():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(2, 8, 6, 2)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)
    cts = jnp.asarray(rng.normal(size=(3, 2, 8, 6, 4)), jnp.float32)  # 3 cotangents
    with conv_vjp("native"):
        _, pb = jax.vjp(lambda v: L.conv(v, k), x)
        want = jnp.stack([pb(c)[0] for c in cts])
    with conv_vjp("flipped"):

        def input_grads(v, cts):
            _, pb = jax.vjp(lambda u: L.conv(u, k), v)
            return jax.vmap(lambda c: pb(c)[0])(cts)  # as DeepFool's vmapped pullbacks

        eager = input_grads(x, cts)
        jitted = jax.jit(input_grads)(x, cts)
        # vmap over examples of a per-example gradient
        per_ex = jax.vmap(lambda xi, ci: jax.vjp(lambda u: L.conv(u[None], k)[0], xi)[1](ci)[0])(
            x, cts[0]
        )
    assert _rel(eager, want) <= RTOL
    assert _rel(jitted, want) <= RTOL
    assert _rel(per_ex, want[0]) <= RTOL


def _loop_hlo() -> str:
    """Compiled HLO of 3 input gradients of a 2-layer conv net inside a while loop."""
    k1 = jnp.ones((3, 3, 1, 8)) * 0.1
    k2 = jnp.ones((3, 3, 8, 8)) * 0.1

    def f(x, k1, k2):
        return jnp.sum(jnp.tanh(L.conv(jnp.tanh(L.conv(x, k1)), k2)))

    @jax.jit
    def loop(x, k1, k2):
        return jax.lax.fori_loop(0, 3, lambda i, v: v - 0.1 * jax.grad(f)(v, k1, k2), x)

    return loop.lower(jnp.ones((2, 16, 8, 1)), k1, k2).compile().as_text()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU layout check")
def test_loop_has_no_swapped_kernel_convolution():
    """The fix is structural: with it, no input-gradient convolution keeps the ``01oi`` kernel."""
    with conv_vjp("flipped"):
        hlo = _loop_hlo()
    assert hlo.count("convolution(") == 4  # 2 forward + 2 input-gradient (kernel grads: dead)
    assert "_01oi->" not in hlo
    with conv_vjp("native"):
        hlo = _loop_hlo()
    # JAX's own rule keeps the in/out swap in the dimension numbers (the trap); if a future XLA
    # canonicalises it, this fails and the custom VJP may no longer be needed on CPU
    assert "_01oi->" in hlo


def test_mode_switch_and_errors():
    with conv_vjp("auto"):
        want = "flipped" if jax.default_backend() == "cpu" else "native"
        assert L.conv_vjp_mode() == want
    with pytest.raises(ValueError, match="conv VJP mode must be one of"):
        L.set_conv_vjp("fast")
    with pytest.raises(ValueError, match="padding must be 'SAME' or 'VALID'"):
        L.conv(jnp.ones((1, 4, 1)), jnp.ones((3, 1, 1)), padding="FULL")
    with pytest.raises(ValueError, match="same rank"):
        L.conv(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 1, 1)))


def test_forward_mode_needs_native():
    """Forward-mode / second-order autodiff: JAX's error with the custom VJP, fine natively."""
    x = jnp.ones((1, 5, 1))
    k = jnp.full((3, 1, 1), 0.5)
    with conv_vjp("flipped"), pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda v: L.conv(v, k), (x,), (x,))
    with conv_vjp("native"):
        _, t = jax.jvp(lambda v: L.conv(v, k), (x,), (x,))
    np.testing.assert_allclose(np.asarray(t)[0, :, 0], [1.0, 1.5, 1.5, 1.5, 1.0], rtol=1e-6)
