"""A model that is not one of the five, for the adapter tests and the README tutorial: a Flax
band-energy classifier at 16 kHz with labels of its own ("low", "high")."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxadv

SAMPLE_RATE = 16_000
LABELS = ("low", "high")


class BandEnergy(nn.Module):
    """log mean power below and above 2 kHz → ``Dense(2)``: ``[B, n]`` at 16 kHz → ``[B, 2]``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        power = jnp.abs(jnp.fft.rfft(x, axis=-1)) ** 2
        cut = power.shape[-1] // 4  # 2 kHz of the 8 kHz band
        low = jnp.log(jnp.mean(power[:, :cut], axis=-1) + 1e-8)
        high = jnp.log(jnp.mean(power[:, cut:], axis=-1) + 1e-8)
        return nn.Dense(2)(jnp.stack([low, high], axis=-1))


MODULE = BandEnergy()


@functools.cache
def build() -> jaxadv.WrappedModel:
    """The wrapped model (the same objects every call): logits ``[low - high, high - low]``."""
    variables = MODULE.init(jax.random.key(0), jnp.zeros((1, 8000)))
    variables = jax.tree.map(np.asarray, variables)
    variables["params"]["Dense_0"]["kernel"] = np.array([[1.0, -1.0], [-1.0, 1.0]], np.float32)
    variables["params"]["Dense_0"]["bias"] = np.zeros(2, np.float32)
    return jaxadv.wrap(
        MODULE.apply, variables, sample_rate=SAMPLE_RATE, labels=LABELS, chunking=(8000, 4000),
        name="band",
    )  # fmt: skip


def tone(freq: float, seconds: float, seed: int = 0) -> np.ndarray:
    """A tone with a little noise at 16 kHz, peak about 0.5."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    return (0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def tiny_onnx(path):
    """A small ONNX classifier of 4000-sample windows: ``x [B, 4000]`` -> Conv1d(1->4, k=64,
    stride 32) -> ReLU -> mean over time -> Gemm(4->3) -> logits ``[B, 3]`` (opset 18)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.2, (4, 1, 64)).astype(np.float32)
    k = rng.normal(0, 1.0, (4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Unsqueeze", ["x", "axis1"], ["x3"]),
            helper.make_node("Conv", ["x3", "w"], ["h"], strides=[32]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("ReduceMean", ["r", "axis2"], ["m"], keepdims=0),
            helper.make_node("Gemm", ["m", "k"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4000])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 3])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(k, "k"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
            numpy_helper.from_array(np.array([2], np.int64), "axis2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
