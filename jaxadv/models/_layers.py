"""Building blocks shared by the five models (Flax linen), with Keras 2.2.4 semantics.

Every convolution of every model goes through :func:`conv` and every dense layer through
:func:`dense`: one place to change how they are computed (e.g. a custom VJP for the input-gradient
convolution, which XLA:CPU runs slowly inside while loops). Arrays are float32 and channels-last
(``NHWC`` / ``NWC``), kernels in Keras' layout (``HWIO`` / ``WIO``; dense ``[in, out]``), so
converted Keras weights are used as they are.

Variable-length batches (Cochlear models). A clip's positions beyond its valid length are padding.
The rule used here: values at invalid positions may be anything finite, and every operation that
mixes positions masks them: a convolution's input is zeroed there first (Keras pads a clip with
zeros at its true end), max-pooling sees ``-inf`` there (TF 'same' pooling ignores padding) and
global averages only count valid positions. A clip then gives the same output alone or inside a
padded batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxadv import config as C

Array = jax.Array

# Keras 2.2.4 defaults, used when a model is initialised from scratch.
KERNEL_INIT = nn.initializers.glorot_uniform()
RECURRENT_INIT = nn.initializers.orthogonal()
BIAS_INIT = nn.initializers.zeros


def scaled(n: int, width: float) -> int:
    """Channel count ``n`` of the paper's model scaled by the width multiplier (at least 1)."""
    return max(1, int(round(n * width)))


# ---------------------------------------------------------------------------------------------
# The one convolution and the one dense layer
# ---------------------------------------------------------------------------------------------

_DIMENSION_NUMBERS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}

# How the input gradient of :func:`conv` is computed (see :func:`set_conv_vjp`).
CONV_VJP_MODES = ("auto", "flipped", "native")
_conv_vjp = "auto"


def set_conv_vjp(mode: str) -> None:
    """Choose how reverse-mode autodiff computes the input gradient of every :func:`conv`.

    * ``"flipped"``: a custom VJP writes the input gradient as a forward convolution of the
      cotangent with the explicitly flipped, in/out-swapped kernel (``HWIO`` → flip ``H, W``, swap
      ``I, O``), kept behind ``lax.optimization_barrier``. On XLA:CPU (jaxlib 0.10.2) the
      convolution JAX's transpose rule emits keeps the swap in its dimension numbers
      (``dim_labels=b01f_01oi->b01f``); standalone, XLA canonicalises it onto the Eigen runtime
      call, but inside a ``while_loop``/``scan`` body it is compiled as a generic loop nest: ~2.8x
      slower per forward+backward of VGG13 (``benchmarks/README.md``). Kernel and bias gradients
      are JAX's own (exact: training is unchanged). Forward-mode autodiff (``jax.jvp``,
      ``jax.hessian``) is not available through a custom VJP: use ``"native"`` for it.
    * ``"native"``: JAX's own transpose rule.
    * ``"auto"`` (default): ``"flipped"`` when the default backend is the CPU, else ``"native"``
      (the trap was measured on XLA:CPU only; GPU/TPU run JAX's rule unchanged).

    The mode is read when a function is traced: this clears JAX's compilation caches so that
    already-jitted functions are retraced with the new mode.
    """
    global _conv_vjp
    if mode not in CONV_VJP_MODES:
        raise ValueError(f"conv VJP mode must be one of {CONV_VJP_MODES}, got {mode!r}")
    if mode != _conv_vjp:
        _conv_vjp = mode
        jax.clear_caches()


def conv_vjp_mode() -> str:
    """The effective mode at trace time: ``"flipped"`` or ``"native"`` (``"auto"`` resolved)."""
    if _conv_vjp == "auto":
        return "flipped" if jax.default_backend() == "cpu" else "native"
    return _conv_vjp


def _conv_native(x: Array, kernel: Array, padding: str | Sequence[tuple[int, int]]) -> Array:
    nd = kernel.ndim - 2
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(1,) * nd,
        padding=padding,
        dimension_numbers=_DIMENSION_NUMBERS[nd],
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_flipped(x: Array, kernel: Array, padding: str) -> Array:
    return _conv_native(x, kernel, padding)


def _conv_flipped_fwd(x: Array, kernel: Array, padding: str) -> tuple[Array, tuple[Array, Array]]:
    return _conv_native(x, kernel, padding), (x, kernel)


def _conv_flipped_bwd(padding: str, res: tuple[Array, Array], ct: Array) -> tuple[Array, Array]:
    x, kernel = res
    nd = kernel.ndim - 2
    ks = kernel.shape[:nd]
    pads = jax.lax.padtype_to_pads(x.shape[1:-1], ks, (1,) * nd, padding)
    # y[i] = sum_k x[i + k - lo] w[k]  =>  dx[j] = sum_k ct[j + k - (K - 1 - lo)] w[K - 1 - k]:
    # a stride-1 convolution of ct with the flipped kernel, front padding K - 1 - lo and back
    # padding chosen so that the output has x's size.
    tpads = [
        (k - 1 - lo, x.shape[1 + i] - ct.shape[1 + i] + lo)
        for i, (k, (lo, _)) in enumerate(zip(ks, pads, strict=True))
    ]
    flipped = jnp.swapaxes(jnp.flip(kernel, tuple(range(nd))), -1, -2)  # [..., Cout, Cin]
    # the barrier keeps XLA from folding the transpose back into the convolution's dimension
    # numbers (the slow form); it costs one copy of the kernel
    flipped = jax.lax.optimization_barrier(flipped)
    dx = _conv_native(ct, flipped, tpads)
    # kernel gradient: JAX's own transpose of the convolution in the kernel (exact, as native)
    (dk,) = jax.linear_transpose(lambda k: _conv_native(x, k, padding), kernel)(ct)
    return dx, dk


_conv_flipped.defvjp(_conv_flipped_fwd, _conv_flipped_bwd)


def conv(x: Array, kernel: Array, bias: Array | None = None, padding: str = "SAME") -> Array:
    """Stride-1 convolution as Keras' ``Conv1D`` / ``Conv2D`` (``padding='same'`` = TF 'SAME').

    Args:
      x: ``[B, W, Cin]`` or ``[B, H, W, Cin]``.
      kernel: ``[kw, Cin, Cout]`` or ``[kh, kw, Cin, Cout]`` (Keras layout).
      bias: ``[Cout]`` or None.
      padding: ``"SAME"`` or ``"VALID"``.

    Returns:
      ``[B, W', Cout]`` or ``[B, H', W', Cout]``. Its input gradient follows
      :func:`set_conv_vjp` (same values either way).
    """
    if padding not in ("SAME", "VALID"):
        raise ValueError(f"conv padding must be 'SAME' or 'VALID', got {padding!r}")
    if kernel.ndim - 2 not in _DIMENSION_NUMBERS or x.ndim != kernel.ndim:
        raise ValueError(
            f"conv expects x [B, (H,) W, Cin] and kernel [(kh,) kw, Cin, Cout] of the same rank "
            f"(1-D or 2-D), got x {x.shape} and kernel {kernel.shape}"
        )
    if conv_vjp_mode() == "flipped":
        y = _conv_flipped(x, kernel, padding)
    else:
        y = _conv_native(x, kernel, padding)
    return y if bias is None else y + bias


def dense(x: Array, kernel: Array, bias: Array | None = None) -> Array:
    """Keras ``Dense`` without activation: ``x @ kernel + bias`` on the last axis."""
    y = x @ kernel
    return y if bias is None else y + bias


class Conv(nn.Module):
    """Keras ``Conv1D``/``Conv2D`` (stride 1, 'same', bias on); params ``kernel``, ``bias``."""

    features: int
    kernel_size: tuple[int, ...]

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", KERNEL_INIT, (*self.kernel_size, x.shape[-1], self.features))
        bias = self.param("bias", BIAS_INIT, (self.features,))
        return conv(x, kernel, bias)


class Dense(nn.Module):
    """Keras ``Dense`` without activation; params ``kernel [in, out]``, ``bias [out]``."""

    features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", KERNEL_INIT, (x.shape[-1], self.features))
        bias = self.param("bias", BIAS_INIT, (self.features,))
        return dense(x, kernel, bias)


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
    """Keras ``BatchNormalization(axis=-1)`` defaults: epsilon 1e-3, momentum 0.99.

    Inference (``train=False``): ``(x - moving_mean) / sqrt(moving_var + 1e-3) * gamma + beta``
    with Flax's names ``batch_stats/{mean,var}`` and ``params/{scale,bias}``.
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=C.KERAS_BN_MOMENTUM,
        epsilon=C.KERAS_BN_EPSILON,
        name=name,
    )


def hard_sigmoid(x: Array) -> Array:
    """Keras 2.2.4 (TF backend) ``hard_sigmoid``: ``clip(0.2 * x + 0.5, 0, 1)``."""
    return jnp.clip(0.2 * x + 0.5, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Pooling (Iqbal: fixed-size chunks, 'valid' pooling)
# ---------------------------------------------------------------------------------------------


def max_pool_valid(x: Array, pool: Sequence[int]) -> Array:
    """Keras ``MaxPooling2D(pool, padding='valid')`` (stride = pool) on ``[B, H, W, C]``.

    Written as a reshape and a max (the remainder rows/columns are dropped, as 'valid' does), whose
    gradient is a cheap broadcast rather than XLA's select-and-scatter.
    """
    b, h, w, c = x.shape
    ph, pw = pool
    x = x[:, : (h // ph) * ph, : (w // pw) * pw]
    return jnp.max(x.reshape(b, h // ph, ph, w // pw, pw, c), axis=(2, 4))


# ---------------------------------------------------------------------------------------------
# Masking helpers (Cochlear: variable-length clips, time on axis -2)
# ---------------------------------------------------------------------------------------------


def _bmask(mask: Array, x: Array) -> Array:
    """Time mask ``[B, T]`` broadcastable against ``x [B, ..., T, C]`` (time on axis -2)."""
    return mask.reshape(mask.shape[0], *([1] * (x.ndim - 3)), mask.shape[1], 1)


def zero_invalid(x: Array, mask: Array) -> Array:
    """``x [B, ..., T, C]`` with the invalid time positions set to 0 (Keras' 'same' zero padding)."""
    return jnp.where(_bmask(mask, x), x, 0.0)


def masked_mean(x: Array, mask: Array) -> Array:
    """Global average over every axis but batch and channels, valid time positions only.

    ``x [B, ..., T, C]``, ``mask [B, T]`` → ``[B, C]``. Keras' ``GlobalAveragePooling1D/2D`` of the
    clip alone.
    """
    m = _bmask(mask, x)
    axes = tuple(range(1, x.ndim - 1))
    total = jnp.sum(jnp.where(m, x, 0.0), axis=axes)
    other = 1
    for n in x.shape[1:-2]:
        other *= n
    count = jnp.maximum(jnp.sum(mask, axis=1).astype(x.dtype), 1.0) * other
    return total / count[:, None]


def same_pool_front(n: Array | int, pool: int) -> Array | int:
    """Padding TF 'SAME' pooling (stride = pool) puts before a length ``n``: ``(ceil(n/p)*p - n)//2``."""
    return ((-(-n // pool)) * pool - n) // 2


def _max_pool_same_static(x: Array, axis: int, pool: int) -> Array:
    """TF 'SAME' max pooling (stride = pool) along a fully valid axis of static size."""
    n = x.shape[axis]
    out = -(-n // pool)
    front = same_pool_front(n, pool)
    pads = [(0, 0)] * x.ndim
    pads[axis] = (front, out * pool - n - front)
    x = jnp.pad(x, pads, constant_values=-jnp.inf)
    shape = x.shape[:axis] + (out, pool) + x.shape[axis + 1 :]
    return jnp.max(x.reshape(shape), axis=axis + 1)


def masked_max_pool_same(x: Array, mask: Array, pool: Sequence[int]) -> tuple[Array, Array]:
    """Keras ``MaxPooling1D/2D(pool, padding='same')`` of each clip alone, on a padded batch.

    ``x [B, T, C]`` with ``pool = (pt,)`` or ``x [B, H, T, C]`` with ``pool = (ph, pt)``; ``mask
    [B, T]``. The non-time axis is fully valid and pooled as TF does. Along time, each clip of valid
    length ``L`` is pooled as if alone: TF 'SAME' pads ``(ceil(L/p)*p - L)//2`` positions in front
    (0 for ``p <= 2``), so for larger pools each clip is shifted by its own front padding first.

    Returns:
      ``(y [B, (H',) ceil(T/pt), C], mask [B, ceil(T/pt)])``; invalid positions of ``y`` are 0.
    """
    pt = pool[-1]
    if x.ndim == 4 and pool[0] > 1:
        x = _max_pool_same_static(x, 1, pool[0])
    lengths = jnp.sum(mask, axis=1).astype(jnp.int32)
    t = x.shape[-2]
    t_out = -(-t // pt)
    x = jnp.where(_bmask(mask, x), x, -jnp.inf)
    pads = [(0, 0)] * x.ndim
    if pt <= 2:
        pads[-2] = (0, t_out * pt - t)
        x = jnp.pad(x, pads, constant_values=-jnp.inf)
    else:
        # Shift each clip right by its own front padding (at most pt // 2) via a dynamic slice.
        lead = pt // 2
        pads[-2] = (lead, t_out * pt - t)
        xp = jnp.pad(x, pads, constant_values=-jnp.inf)
        starts = lead - same_pool_front(lengths, pt)
        axis = x.ndim - 2

        def take(row: Array, s: Array) -> Array:
            return jax.lax.dynamic_slice_in_dim(row, s, t_out * pt, axis=axis - 1)

        x = jax.vmap(take)(xp, starts)
    shape = x.shape[:-2] + (t_out, pt, x.shape[-1])
    y = jnp.max(x.reshape(shape), axis=-2)
    new_mask = jnp.arange(t_out)[None, :] < (-(-lengths // pt))[:, None]
    return zero_invalid(y, new_mask), new_mask


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


class ConvBlock(nn.Module):
    """Iqbal's ``_conv_block``: 2 x [Conv2D 3x3 'same' → ReLU → BN] → MaxPooling2D(2, 2) 'valid'."""

    features: int

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        for i in range(2):
            x = nn.relu(Conv(self.features, (3, 3), name=f"conv_{i}")(x))
            x = batch_norm(train, name=f"bn_{i}")(x)
        return max_pool_valid(x, (2, 2))


class GatedConvBlock(nn.Module):
    """Iqbal's ``gated_conv.block``: 2 x [GatedConv 3x3 → BN] → MaxPooling2D(2, 2) 'valid'.

    ``GatedConv(n)`` is a Conv2D with ``2n`` filters (linear, bias on) whose output is
    ``conv[..., :n] * sigmoid(conv[..., n:])``: first half the value, second half the gate.
    """

    features: int

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        n = self.features
        for i in range(2):
            y = Conv(2 * n, (3, 3), name=f"conv_{i}")(x)
            x = y[..., :n] * jax.nn.sigmoid(y[..., n:])
            x = batch_norm(train, name=f"bn_{i}")(x)
        return max_pool_valid(x, (2, 2))


class KerasGRU(nn.Module):
    """Keras 2.2.4 ``GRU(units, activation='relu', return_sequences=True)``, one direction.

    Keras 2.2.4 defaults: ``recurrent_activation='hard_sigmoid'``, ``reset_after=False`` (the reset
    gate multiplies the state *before* the recurrent matmul), kernel columns ``[z | r | h]``,
    zero initial state. Per step::

        z = hs(x Wz + bz + h Uz);  r = hs(x Wr + br + h Ur)
        hh = relu(x Wh + bh + (r * h) Uh);  h = z * h + (1 - z) * hh

    Params ``kernel [D, 3u]``, ``recurrent_kernel [u, 3u]``, ``bias [3u]``. With ``reverse=True``
    the sequence is processed backwards and the outputs are re-reversed (Keras ``Bidirectional``'s
    backward layer).
    """

    units: int
    reverse: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """``x [B, T, D]`` → hidden states ``[B, T, units]``."""
        u = self.units
        kernel = self.param("kernel", KERNEL_INIT, (x.shape[-1], 3 * u))
        recurrent = self.param("recurrent_kernel", RECURRENT_INIT, (u, 3 * u))
        bias = self.param("bias", BIAS_INIT, (3 * u,))
        xs = dense(x, kernel, bias)  # all time steps' input projections in one matmul
        if self.reverse:
            xs = xs[:, ::-1]
        u_zr, u_h = recurrent[:, : 2 * u], recurrent[:, 2 * u :]

        def step(h: Array, xt: Array) -> tuple[Array, Array]:
            zr = hard_sigmoid(xt[:, : 2 * u] + h @ u_zr)
            z, r = zr[:, :u], zr[:, u:]
            hh = nn.relu(xt[:, 2 * u :] + (r * h) @ u_h)
            h = z * h + (1.0 - z) * hh
            return h, h

        h0 = jnp.zeros((x.shape[0], u), x.dtype)
        _, hs = jax.lax.scan(step, h0, jnp.swapaxes(xs, 0, 1))
        hs = jnp.swapaxes(hs, 0, 1)
        return hs[:, ::-1] if self.reverse else hs


class BiGRU(nn.Module):
    """Keras ``Bidirectional(GRU(...), merge_mode='concat')``: ``[forward | backward]`` features."""

    units: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fwd = KerasGRU(self.units, name="forward")(x)
        bwd = KerasGRU(self.units, reverse=True, name="backward")(x)
        return jnp.concatenate([fwd, bwd], axis=-1)


class DenseSEBlock(nn.Module):
    """Cochlear's ``Conv2D_TD_BAC_mel`` (and its 1-D counterpart) on a masked batch.

    BN → ReLU → Conv(f, 1) → BN → ReLU → Conv(f, k) → squeeze-excitation
    [global average → Dense(f // r, relu) → Dense(f, sigmoid) → scale] → concatenate
    ``[new features, block input]``. ``x [B, (H,) T, C]`` → ``[B, (H,) T, f + C]``.
    """

    features: int
    kernel: int
    ndim: int  # 1 (waveform) or 2 (mel, time)
    se_reduction: int = 2  # 0: no squeeze-excitation

    @nn.compact
    def __call__(self, x: Array, mask: Array, train: bool = False) -> Array:
        f = self.features
        bn_mask = jnp.broadcast_to(_bmask(mask, x), x.shape[:-1] + (1,))
        y = nn.relu(batch_norm(train, name="bn_0")(x, mask=bn_mask))
        y = Conv(f, (1,) * self.ndim, name="conv_0")(y)
        y = nn.relu(batch_norm(train, name="bn_1")(y, mask=bn_mask))
        y = Conv(f, (self.kernel,) * self.ndim, name="conv_1")(zero_invalid(y, mask))
        if self.se_reduction:
            s = masked_mean(y, mask)
            s = nn.relu(Dense(max(1, f // self.se_reduction), name="se_0")(s))
            s = jax.nn.sigmoid(Dense(f, name="se_1")(s))
            y = y * s.reshape(s.shape[0], *([1] * (y.ndim - 2)), f)
        return jnp.concatenate([y, x], axis=-1)


class DenseSEStack(nn.Module):
    """Cochlear's trunk and heads after the front-end, shared by dense-mel and dense-wav.

    ``x [B, (H,) T, 1]`` (masked input features) → stem ``Conv(stem, k)`` concatenated after its
    input → per block: :class:`DenseSEBlock` then 'same' max pooling → BN → ReLU → ``n_heads``
    heads, each ``Dense(num_classes)`` of the global average (= Keras' Dense per position then
    ``GlobalAveragePooling``, both being affine). Returns the heads' pre-softmax outputs
    ``[B, n_heads, num_classes]``.
    """

    stem: int
    filters: tuple[int, ...]
    kernel: int
    pool: tuple[int, ...]
    se_reduction: int
    n_heads: int
    num_classes: int

    @nn.compact
    def __call__(self, x: Array, mask: Array, train: bool = False) -> Array:
        ndim = x.ndim - 2
        x = zero_invalid(x, mask)
        stem = Conv(self.stem, (self.kernel,) * ndim, name="stem")(x)
        x = jnp.concatenate([x, stem], axis=-1)
        for i, f in enumerate(self.filters):
            x = DenseSEBlock(f, self.kernel, ndim, self.se_reduction, name=f"block_{i}")(
                x, mask, train
            )
            x, mask = masked_max_pool_same(x, mask, self.pool)
        bn_mask = jnp.broadcast_to(_bmask(mask, x), x.shape[:-1] + (1,))
        x = nn.relu(batch_norm(train, name="bn_out")(x, mask=bn_mask))
        pooled = masked_mean(x, mask)
        heads = [Dense(self.num_classes, name=f"head_{h}")(pooled) for h in range(self.n_heads)]
        return jnp.stack(heads, axis=1)
