"""jaxadv.onnx_import against onnxruntime: small models built with onnx.helper (and Silero VAD's
files when the silero-vad wheel is installed), evaluated on the same random inputs.

The ONNX packages are optional: without them the module is skipped, except under CI (env var
``CI`` set), where a skip would hide a gap and the missing package fails the run instead.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest


def _require(module: str, pip_name: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the Python package {pip_name} (pip install {pip_name})")
        pytest.skip(f"needs the Python package {pip_name}", allow_module_level=True)


onnx = _require("onnx", "onnx")
ort = _require("onnxruntime", "onnxruntime")

from onnx import TensorProto as TP  # noqa: E402
from onnx import helper as oh  # noqa: E402
from onnx import numpy_helper as onh  # noqa: E402

from jaxadv.onnx_import import OnnxFunction, OnnxImportError, from_onnx  # noqa: E402

ATOL = 1e-5
F, I64 = TP.FLOAT, TP.INT64


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def vi(name: str, shape: list | int, dtype: int = F):
    """A value info; an int ``shape`` is a rank (symbolic dimensions)."""
    if isinstance(shape, int):
        shape = [f"{name}_{i}" for i in range(shape)]
    return oh.make_tensor_value_info(name, dtype, shape)


def make_model(nodes, inputs, outputs, inits=None, opset: int = 17, check: bool = True):
    """A model of ``nodes`` (named after their op), initializers from a dict of arrays."""
    for k, n in enumerate(nodes):
        n.name = n.name or f"{n.op_type}_{k}"
    init = [onh.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    graph = oh.make_graph(nodes, "test", inputs, outputs, initializer=init)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    model.ir_version = 8  # one that every onnxruntime of the last years reads
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def run_ort(model, feeds: dict) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1  # the test machine is shared
    opts.log_severity_level = 3
    src = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def as_tuple(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


def check_parity(model, feeds: dict, atol: float = ATOL, label: str = "", **kw) -> float:
    """Import ``model``, run it jitted and with onnxruntime on ``feeds``; the max abs error."""
    fn, params = from_onnx(model, **kw)
    ours = as_tuple(jax.jit(fn)(params, *[feeds[n] for n in fn.input_names]))
    ref = run_ort(model, feeds)
    assert len(ours) == len(ref)
    err = 0.0
    for name, o, r in zip(fn.output_names, ours, ref, strict=True):
        o = np.asarray(o)
        assert o.shape == r.shape, (name, o.shape, r.shape)
        if r.dtype == bool or np.issubdtype(r.dtype, np.integer):
            np.testing.assert_array_equal(o, r, err_msg=name)
            continue
        e = float(np.max(np.abs(o - r), initial=0.0))
        assert e <= atol, f"{name}: max abs error {e:.2e} > {atol:.0e}"
        err = max(err, e)
    print(f"{label or model.graph.name}: max abs error {err:.2e}")
    return err


def rand(rng, *shape, scale: float = 1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def mlp_model(rng):
    """x [B, 16] -> Gemm(transB) -> Relu -> Gemm(alpha, beta) -> Softmax -> [B, 5]."""
    nodes = [
        oh.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        oh.make_node("Relu", ["h"], ["r"]),
        oh.make_node("Gemm", ["r", "w2", "b2"], ["z"], alpha=0.5, beta=2.0),
        oh.make_node("Softmax", ["z"], ["p"], axis=-1),
    ]
    inits = {
        "w1": rand(rng, 12, 16, scale=0.5),
        "b1": rand(rng, 12),
        "w2": rand(rng, 12, 5),
        "b2": rand(rng, 5),
    }
    return make_model(nodes, [vi("x", ["B", 16])], [vi("p", ["B", 5])], inits, opset=13)


def cnn1d_model(rng):
    """A waveform classifier: x [B, 64] -> Conv/BatchNorm/MaxPool/Conv/AveragePool/ReduceMean
    -> Gemm -> LogSoftmax [B, 3] (opset 18: ReduceMean and Unsqueeze take axes as inputs)."""
    c1, c2 = 6, 4
    nodes = [
        oh.make_node("Unsqueeze", ["x", "ax1"], ["x1"]),
        oh.make_node("Conv", ["x1", "w1", "b1"], ["h1"], kernel_shape=[9], strides=[2], pads=[4, 3]),
        oh.make_node("BatchNormalization", ["h1", "g", "beta", "mu", "var"], ["n1"], epsilon=1e-3),
        oh.make_node("Relu", ["n1"], ["r1"]),
        oh.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3], strides=[2], pads=[1, 1], ceil_mode=1),
        oh.make_node("Conv", ["p1", "w2"], ["h2"], strides=[2], group=2, auto_pad="SAME_LOWER"),
        oh.make_node("LeakyRelu", ["h2"], ["r2"], alpha=0.1),
        # ceil_mode where the last window would start in the padding: onnxruntime drops it
        oh.make_node("AveragePool", ["r2"], ["p2"], kernel_shape=[2], strides=[3], pads=[0, 1], ceil_mode=1),
        oh.make_node("ReduceMean", ["p2", "ax2"], ["m"], keepdims=0),
        oh.make_node("Gemm", ["m", "w3", "b3"], ["z"]),
        oh.make_node("LogSoftmax", ["z"], ["y"], axis=1),
    ]  # fmt: skip
    inits = {
        "ax1": np.array([1], np.int64),
        "ax2": np.array([2], np.int64),
        "w1": rand(rng, c1, 1, 9, scale=0.4),
        "b1": rand(rng, c1),
        "g": 1 + rand(rng, c1, scale=0.1),
        "beta": rand(rng, c1, scale=0.1),
        "mu": rand(rng, c1, scale=0.1),
        "var": np.abs(1 + rand(rng, c1, scale=0.2)),
        "w2": rand(rng, c2, c1 // 2, 4, scale=0.3),  # even: SAME_LOWER pads more at the start
        "w3": rand(rng, c2, 3),
        "b3": rand(rng, 3),
    }
    return make_model(nodes, [vi("x", ["B", 64])], [vi("y", ["B", 3])], inits, opset=18)


def cnn2d_model(rng):
    """x [B, 1, 12, 16] -> Pad(reflect) -> Conv -> Conv(groups, dilations, strides) -> Tanh
    -> ConvTranspose(groups, output_padding) -> AveragePool(count_include_pad) -> MaxPool
    (dilations) -> GlobalAveragePool -> Flatten -> MatMul -> Add -> Sigmoid [B, 3]."""
    nodes = [
        oh.make_node("Pad", ["x", "pads"], ["xp"], mode="reflect"),
        oh.make_node("Conv", ["xp", "w1", "b1"], ["h1"], kernel_shape=[3, 3]),
        oh.make_node("Conv", ["h1", "w2", "b2"], ["h2"], group=2, dilations=[2, 1], strides=[1, 2], pads=[1, 0, 2, 1]),
        oh.make_node("Tanh", ["h2"], ["t2"]),
        oh.make_node("ConvTranspose", ["t2", "w3", "b3"], ["h3"], group=2, strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 0]),
        oh.make_node("AveragePool", ["h3"], ["p3"], kernel_shape=[3, 2], strides=[2, 1], pads=[1, 1, 1, 0], count_include_pad=1),
        oh.make_node("MaxPool", ["p3"], ["p4"], kernel_shape=[2, 2], dilations=[2, 1]),
        oh.make_node("GlobalAveragePool", ["p4"], ["gap"]),
        oh.make_node("Flatten", ["gap"], ["f"], axis=1),
        oh.make_node("MatMul", ["f", "w4"], ["z0"]),
        oh.make_node("Add", ["z0", "b4"], ["z"]),
        oh.make_node("Sigmoid", ["z"], ["y"]),
    ]  # fmt: skip
    inits = {
        "pads": np.array([0, 0, 1, 2, 0, 0, 1, 1], np.int64),
        "w1": rand(rng, 4, 1, 3, 3, scale=0.5),
        "b1": rand(rng, 4, scale=0.1),
        "w2": rand(rng, 6, 2, 3, 3, scale=0.3),
        "b2": rand(rng, 6, scale=0.1),
        "w3": rand(rng, 6, 2, 3, 3, scale=0.3),  # [C_in, C_out / group, kh, kw]
        "b3": rand(rng, 4, scale=0.1),
        "w4": rand(rng, 4, 3),
        "b4": rand(rng, 3),
    }
    return make_model(nodes, [vi("x", ["B", 1, 12, 16])], [vi("y", ["B", 3])], inits, opset=17)


def chain_model(rng):
    """Shape arithmetic and indexing: Shape/Gather/Unsqueeze/Concat/Reshape, Transpose, Slice
    with a negative step, Gather (static and run-time indices), Split, Where/Greater/Equal/Less,
    Expand, Tile, Pad, Clip, the elementwise ops, Cast, Size, Range, ConstantOfShape."""
    nodes = [
        oh.make_node("Shape", ["x"], ["s"]),
        oh.make_node("Gather", ["s", "i0"], ["b"]),
        oh.make_node("Unsqueeze", ["b", "ax0"], ["b1"]),
        oh.make_node("Concat", ["b1", "m1"], ["shp"], axis=0),
        oh.make_node("Reshape", ["x", "shp"], ["flat"]),
        oh.make_node("Split", ["flat", "sizes"], ["sp1", "sp2"], axis=1),
        oh.make_node("Concat", ["sp2", "sp1"], ["cat"], axis=1),
        oh.make_node("Greater", ["cat", "zero"], ["gt"]),
        oh.make_node("Mul", ["cat", "tenth"], ["small"]),
        oh.make_node("Where", ["gt", "cat", "small"], ["out_where"]),
        oh.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 3, 1]),
        oh.make_node("Slice", ["xt", "st", "en", "axs", "steps"], ["sl"]),
        oh.make_node("Gather", ["sl", "i1"], ["g"], axis=3),
        oh.make_node("Expand", ["bias", "gshape"], ["ex"]),
        oh.make_node("Add", ["g", "ex"], ["ge"]),
        oh.make_node("Tile", ["ge", "reps"], ["ti"]),
        oh.make_node("Pad", ["ti", "pads", "padval"], ["pd"]),
        oh.make_node("Clip", ["pd", "lo", "hi"], ["cl"]),
        oh.make_node("Abs", ["cl"], ["ab"]),
        oh.make_node("Add", ["ab", "one"], ["ab1"]),
        oh.make_node("Log", ["ab1"], ["lg"]),
        oh.make_node("Sqrt", ["ab1"], ["sq"]),
        oh.make_node("Pow", ["ab1", "onehalf"], ["pw"]),
        oh.make_node("Div", ["lg", "sq"], ["dv"]),
        oh.make_node("Exp", ["cl"], ["e"]),
        oh.make_node("Sub", ["dv", "e"], ["sb"]),
        oh.make_node("Neg", ["sb"], ["ng"]),
        oh.make_node("Add", ["ng", "pw"], ["out_elem"]),
        oh.make_node("Gather", ["x", "idx"], ["out_gather"], axis=1),
        oh.make_node("Cast", ["gt"], ["gtf"], to=F),
        oh.make_node("ReduceSum", ["gtf", "ax1"], ["cnt"], keepdims=0),
        oh.make_node("Size", ["x"], ["n"]),
        oh.make_node("Cast", ["n"], ["nf"], to=F),
        oh.make_node("Div", ["cnt", "nf"], ["out_frac"]),
        oh.make_node("Range", ["i0", "b", "i1"], ["out_range"]),
        oh.make_node("Equal", ["s", "s_ref"], ["out_eq"]),
        oh.make_node("Less", ["x", "zero"], ["lt"]),
        oh.make_node("ConstantOfShape", ["s"], ["c"], value=onh.from_array(np.array([2.0], np.float32))),
        oh.make_node("Where", ["lt", "c", "x"], ["out_cos"]),
        oh.make_node("Dropout", ["out_cos"], ["out_drop"]),
        oh.make_node("ReduceMax", ["out_drop"], ["out_max"], axes=[2, 3], keepdims=1),
    ]  # fmt: skip
    inits = {
        "i0": np.array(0, np.int64),
        "i1": np.array(1, np.int64),
        "ax0": np.array([0], np.int64),
        "ax1": np.array([1], np.int64),
        "m1": np.array([-1], np.int64),
        "sizes": np.array([20, 40], np.int64),
        "zero": np.array(0.0, np.float32),
        "tenth": np.array(0.1, np.float32),
        "one": np.array(1.0, np.float32),
        "onehalf": np.array(1.5, np.float32),
        "st": np.array([-1, 0], np.int64),
        "en": np.array([-(2**63), 5], np.int64),  # INT64_MIN: through index 0
        "axs": np.array([1, 2], np.int64),
        "steps": np.array([-1, 2], np.int64),
        "bias": rand(rng, 3),
        "gshape": np.array([1, 4, 1], np.int64),
        "reps": np.array([1, 1, 2], np.int64),
        "pads": np.array([0, 1, 0, 0, 2, 1], np.int64),
        "padval": np.array(0.5, np.float32),
        "lo": np.array(-0.5, np.float32),
        "hi": np.array(0.8, np.float32),
        "s_ref": np.array([2, 3, 4, 6], np.int64),
    }
    outputs = [
        vi("out_where", ["B", 60]),
        vi("out_elem", 3),
        vi("out_gather", 4),
        vi("out_frac", 1),
        vi("out_range", 1, I64),
        vi("out_eq", 1, TP.BOOL),
        vi("out_max", 4),
    ]
    inputs = [vi("x", ["B", 3, 4, 5]), vi("idx", [2], I64)]
    return make_model(nodes, inputs, outputs, inits, opset=13)


def styled_model(opset: int):
    """The same computation in the attribute style (opset 9), the first input styles (11, 13)
    and the newest (18): Squeeze/Unsqueeze, Slice, Pad, Clip, ReduceMean/ReduceSum, Split
    and Softmax (2-D coercion before 13)."""
    ints = {}

    def axes_or_input(op: str, ins: list[str], out: str, key: str, values, since: int, **kw):
        if opset >= since:
            ints[f"{out}_{key}"] = np.array(values, np.int64)
            return oh.make_node(op, [*ins, f"{out}_{key}"], [out], **kw)
        return oh.make_node(op, ins, [out], **{key: values}, **kw)

    nodes = [
        axes_or_input("Squeeze", ["x"], "sq", "axes", [1], 13),
        axes_or_input("Unsqueeze", ["sq"], "us", "axes", [0], 13),
    ]
    if opset >= 10:
        ints.update(st=np.array([1], np.int64), en=np.array([5], np.int64))
        ints.update(ax=np.array([2], np.int64))
        nodes.append(oh.make_node("Slice", ["us", "st", "en", "ax"], ["sl"]))
    else:
        nodes.append(oh.make_node("Slice", ["us"], ["sl"], starts=[1], ends=[5], axes=[2]))
    pads = [0, 0, 1, 2, 0, 0, 1, 1]
    if opset >= 11:
        ints["pads"] = np.array(pads, np.int64)
        nodes.append(oh.make_node("Pad", ["sl", "pads"], ["pd"], mode="reflect"))
        nodes.append(oh.make_node("Clip", ["pd", "lo", "hi"], ["cl"]))
    else:
        nodes.append(oh.make_node("Pad", ["sl"], ["pd"], mode="reflect", pads=pads))
        nodes.append(oh.make_node("Clip", ["pd"], ["cl"], min=-0.3, max=0.4))
    nodes += [
        axes_or_input("ReduceMean", ["cl"], "rm", "axes", [3], 18, keepdims=1),
        axes_or_input("ReduceSum", ["rm"], "out_sum", "axes", [2], 13, keepdims=0),
        oh.make_node("Softmax", ["cl"], ["out_softmax"], axis=1),
        axes_or_input("Split", ["cl"], "sp", "split", [2, 4], 13, axis=2),
    ]
    nodes[-1].output[:] = ["out_a", "out_b"]
    floats = {"lo": np.array(-0.3, np.float32), "hi": np.array(0.4, np.float32)}
    inits = {**ints, **(floats if opset >= 11 else {})}
    outs = [vi(n, r) for n, r in (("out_sum", 3), ("out_softmax", 4), ("out_a", 4), ("out_b", 4))]
    return make_model(nodes, [vi("x", [2, 1, 6, 4])], outs, inits, opset=opset)


def lstm_model(rng, direction: str, seq_lens: bool, peepholes: bool, clip: float | None):
    """LSTM X [T=5, B=3, I=4] with hidden 6, initial states and biases (W, R, B params)."""
    t_len, batch, n_in, hid = 5, 3, 4, 6
    d = 2 if direction == "bidirectional" else 1
    inits = {
        "W": rand(rng, d, 4 * hid, n_in, scale=0.5),
        "R": rand(rng, d, 4 * hid, hid, scale=0.5),
        "B": rand(rng, d, 8 * hid, scale=0.3),
    }
    ins = ["X", "W", "R", "B", "", "h0", "c0"]
    if seq_lens:
        inits["lens"] = np.array([5, 3, 1], np.int32)
        ins[4] = "lens"
    if peepholes:
        inits["P"] = rand(rng, d, 3 * hid, scale=0.5)
        ins.append("P")
    kw = {"clip": clip} if clip else {}
    node = oh.make_node(
        "LSTM", ins, ["Y", "Y_h", "Y_c"], hidden_size=hid, direction=direction, **kw
    )
    inputs = [vi("X", [t_len, batch, n_in]), vi("h0", [d, batch, hid]), vi("c0", [d, batch, hid])]
    outputs = [vi("Y", 4), vi("Y_h", 3), vi("Y_c", 3)]
    return make_model([node], inputs, outputs, inits, opset=14)


# ---------------------------------------------------------------------------------------------
# Parity
# ---------------------------------------------------------------------------------------------


def test_mlp_parity():
    rng = np.random.default_rng(0)
    model = mlp_model(rng)
    fn, params = from_onnx(model)
    assert fn.input_names == ("x",) and fn.output_names == ("p",)
    assert set(params) == {"w1", "b1", "w2", "b2"}
    assert all(v.dtype == jnp.float32 for v in params.values())
    check_parity(model, {"x": rand(rng, 4, 16)}, label="mlp")


def test_cnn1d_parity():
    rng = np.random.default_rng(1)
    model = cnn1d_model(rng)
    fn, params = from_onnx(model)
    assert "ax1" not in params  # int initializers stay static
    check_parity(model, {"x": rand(rng, 3, 64)}, label="cnn1d")


def test_cnn2d_parity():
    rng = np.random.default_rng(2)
    check_parity(cnn2d_model(rng), {"x": rand(rng, 2, 1, 12, 16)}, label="cnn2d")


def test_shape_and_indexing_chain_parity():
    rng = np.random.default_rng(3)
    feeds = {"x": rand(rng, 2, 3, 4, 5), "idx": np.array([2, -1], np.int64)}
    check_parity(chain_model(rng), feeds, label="chain")


@pytest.mark.parametrize("opset", [9, 11, 13, 18])
def test_attribute_and_input_opset_styles(opset):
    rng = np.random.default_rng(4)
    check_parity(styled_model(opset), {"x": rand(rng, 2, 1, 6, 4)}, label=f"styles-opset{opset}")


@pytest.mark.parametrize(
    "direction, seq_lens, peepholes, clip",
    [("forward", False, False, None), ("reverse", True, True, None), ("bidirectional", True, False, 2.0)],
)  # fmt: skip
def test_lstm_parity(direction, seq_lens, peepholes, clip):
    rng = np.random.default_rng(5)
    model = lstm_model(rng, direction, seq_lens, peepholes, clip)
    d = 2 if direction == "bidirectional" else 1
    feeds = {"X": rand(rng, 5, 3, 4), "h0": rand(rng, d, 3, 6), "c0": rand(rng, d, 3, 6)}
    check_parity(model, feeds, label=f"lstm-{direction}")


@pytest.mark.parametrize(
    "op, attrs, w_shape, x_shape",
    [
        ("Conv", dict(auto_pad="SAME_UPPER", strides=[2]), (3, 2, 4), (2, 2, 11)),
        ("Conv", dict(auto_pad="VALID", dilations=[3], group=2), (4, 1, 3), (2, 2, 11)),
        ("ConvTranspose", dict(strides=[3], output_shape=[25]), (2, 3, 4), (2, 2, 9)),
        ("ConvTranspose", dict(strides=[3], output_shape=[26], group=2), (2, 3, 4), (2, 2, 9)),
        ("ConvTranspose", dict(auto_pad="VALID", strides=[2], dilations=[2]), (2, 3, 3), (2, 2, 9)),
        ("MaxPool", dict(kernel_shape=[3], strides=[2], auto_pad="SAME_UPPER"), None, (2, 2, 10)),
        ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), None, (1, 2, 5, 7)),
        ("AveragePool", dict(kernel_shape=[3], strides=[2], pads=[1, 1], count_include_pad=1,
                             ceil_mode=1), None, (2, 2, 10)),
    ],
)  # fmt: skip
def test_conv_and_pool_variants(op, attrs, w_shape, x_shape):
    rng = np.random.default_rng(12)
    ins, inits = ["x"], {}
    if w_shape:
        ins.append("w")
        inits["w"] = rand(rng, *w_shape, scale=0.5)
    nodes = [oh.make_node(op, ins, ["y"], **attrs)]
    model = make_model(nodes, [vi("x", list(x_shape))], [vi("y", len(x_shape))], inits)
    check_parity(model, {"x": rand(rng, *x_shape)}, label=f"{op}-{sorted(attrs)}")


def test_lstm_batch_major_layout_matches_time_major():
    # onnxruntime does not implement layout=1; it must equal layout 0 with transposed tensors.
    rng = np.random.default_rng(6)
    model = lstm_model(rng, "forward", False, False, None)
    fn0, params = from_onnx(model)
    model.graph.node[0].attribute.append(oh.make_attribute("layout", 1))
    fn1, _ = from_onnx(model)
    x, h0, c0 = rand(rng, 5, 3, 4), rand(rng, 1, 3, 6), rand(rng, 1, 3, 6)
    y0, h_0, c_0 = fn0(params, x, h0, c0)
    y1, h_1, c_1 = fn1(params, x.swapaxes(0, 1), h0.swapaxes(0, 1), c0.swapaxes(0, 1))
    np.testing.assert_allclose(y1, np.transpose(y0, (2, 0, 1, 3)), atol=1e-6)
    np.testing.assert_allclose(h_1, np.swapaxes(h_0, 0, 1), atol=1e-6)
    np.testing.assert_allclose(c_1, np.swapaxes(c_0, 0, 1), atol=1e-6)


def if_model(mismatched: bool = False):
    """``If`` on a shape (static) and on a bool input (run-time); subgraphs read outer names."""

    def branch(name: str, op: str, ins: list[str]):
        out = f"{name}_out"
        return oh.make_graph([oh.make_node(op, ins, [out], name=f"{name}_{op}")], name, [],
                             [vi(out, 2)])  # fmt: skip

    nodes = [
        oh.make_node("Shape", ["x"], ["s"]),
        oh.make_node("Gather", ["s", "i0"], ["b"]),
        oh.make_node("Equal", ["b", "two"], ["is2"]),
        oh.make_node("If", ["is2"], ["y_static"], then_branch=branch("t1", "Neg", ["x"]),
                     else_branch=branch("e1", "Exp", ["x"])),
        oh.make_node("If", ["flag"], ["y_dynamic"], then_branch=branch("t2", "Add", ["x", "x"]),
                     else_branch=branch("e2", "Transpose" if mismatched else "Tanh", ["x"])),
    ]  # fmt: skip
    inits = {"i0": np.array(0, np.int64), "two": np.array(2, np.int64)}
    inputs = [vi("x", ["B", 3]), vi("flag", [], TP.BOOL)]
    outputs = [vi("y_static", 2), vi("y_dynamic", 2)]
    return make_model(nodes, inputs, outputs, inits, opset=17, check=not mismatched)


@pytest.mark.parametrize("flag", [True, False])
def test_if_static_and_runtime_conditions(flag):
    rng = np.random.default_rng(7)
    x = rand(rng, 2, 3)
    check_parity(if_model(), {"x": x, "flag": np.array(flag)}, label=f"if-{flag}")
    fn, params = from_onnx(if_model())
    assert fn.ops == {"Shape": 1, "Gather": 1, "Equal": 1, "If": 2, "Neg": 1, "Exp": 1,
                      "Add": 1, "Tanh": 1}  # fmt: skip


def test_if_with_mismatched_branches_needs_static_inputs():
    fn, params = from_onnx(if_model(mismatched=True))
    x = np.ones((2, 3), np.float32)
    with pytest.raises(OnnxImportError, match="static_inputs"):
        fn(params, x, np.array(True))
    fn, params = from_onnx(if_model(mismatched=True), static_inputs={"flag": False})
    assert fn.input_names == ("x",)
    _, y = fn(params, x)
    assert y.shape == (3, 2)


# ---------------------------------------------------------------------------------------------
# The function contract: jit, gradients, hashing
# ---------------------------------------------------------------------------------------------


def test_jit_equals_eager():
    rng = np.random.default_rng(8)
    fn, params = from_onnx(cnn2d_model(rng))
    x = rand(rng, 2, 1, 12, 16)
    np.testing.assert_allclose(jax.jit(fn)(params, x), fn(params, x), rtol=0, atol=1e-6)


def test_input_gradient_matches_finite_difference():
    rng = np.random.default_rng(9)
    model = cnn1d_model(rng)
    fn, params = from_onnx(model)
    x = rand(rng, 2, 64)
    weights = rand(rng, 2, 3)

    def loss(x):
        return jnp.sum(fn(params, x) * weights)

    grad = np.asarray(jax.jit(jax.grad(loss))(x))
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0

    def ort_loss(x):  # the reference model's loss, in float64 from its float32 outputs
        return float(
            np.sum(run_ort(model, {"x": x.astype(np.float32)})[0] * weights, dtype=np.float64)
        )

    eps = 1e-2
    for b, i in [(0, 3), (0, 31), (1, 50), (1, 63)]:
        step = np.zeros_like(x)
        step[b, i] = eps
        fd = (ort_loss(x + step) - ort_loss(x - step)) / (2 * eps)
        assert abs(fd - grad[b, i]) <= 2e-3 + 2e-2 * abs(fd), (b, i, fd, grad[b, i])

    # and w.r.t. the params (they are passed in, so they can be differentiated too)
    gp = jax.grad(lambda p: jnp.sum(fn(p, x) * weights))(params)
    assert set(gp) == set(params) and all(np.all(np.isfinite(v)) for v in gp.values())


def test_hashable_and_no_recompile():
    rng = np.random.default_rng(10)
    model = mlp_model(rng)
    fn, params = from_onnx(model)
    fn2, _ = from_onnx(model)
    assert isinstance(fn, OnnxFunction)
    assert fn == fn2 and hash(fn) == hash(fn2) and fn is not fn2
    assert "graph" not in repr(fn)  # the repr stays short

    traces = []

    @functools.partial(jax.jit, static_argnums=0)
    def run(f, p, x):
        traces.append(1)
        return f(p, x)

    x = rand(rng, 4, 16)
    run(fn, params, x)
    run(fn, params, x + 1)
    run(fn2, params, x - 1)  # an equal function from a second import: the same program
    assert len(traces) == 1
    run(fn, params, rand(rng, 5, 16))  # a new batch size traces again
    assert len(traces) == 2


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_unsupported_ops_are_listed_at_import():
    nodes = [
        oh.make_node("TopK", ["x", "k"], ["v", "i"]),
        oh.make_node("Relu", ["v"], ["r"]),
        oh.make_node("Hardmax", ["r"], ["y"]),
    ]
    nodes.append(oh.make_node("FusedConv", ["y"], ["z"], domain="com.microsoft"))
    outs = [vi("z", 2), vi("i", 2, I64)]
    inits = {"k": np.array([2], np.int64)}
    model = make_model(nodes, [vi("x", [2, 5])], outs, inits, check=False)
    with pytest.raises(
        OnnxImportError,
        match=r"unsupported ops: Hardmax \(x1\), TopK \(x1\), com.microsoft::FusedConv \(x1\)",
    ):
        from_onnx(model)


def test_runtime_value_where_a_static_one_is_needed():
    nodes = [oh.make_node("Reshape", ["x", "shape"], ["y"])]
    model = make_model(nodes, [vi("x", [6]), vi("shape", [2], I64)], [vi("y", 2)])
    fn, params = from_onnx(model)
    with pytest.raises(OnnxImportError, match=r"Reshape.*shape must be static"):
        jax.jit(fn)(params, np.zeros(6, np.float32), np.array([2, 3]))
    fn, params = from_onnx(model, static_inputs={"shape": [3, 2]})
    assert fn(params, np.zeros(6, np.float32)).shape == (3, 2)


def test_importing_the_module_does_not_import_onnx():
    code = "import sys, jaxadv.onnx_import; assert 'onnx' not in sys.modules, 'onnx imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_bad_files_and_arguments(tmp_path):
    with pytest.raises(OnnxImportError, match="no such ONNX file"):
        from_onnx(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(OnnxImportError, match="not a readable ONNX model"):
        from_onnx(tmp_path / "bad.onnx")
    model = mlp_model(np.random.default_rng(0))
    with pytest.raises(OnnxImportError, match="static_inputs names"):
        from_onnx(model, static_inputs={"nope": 1})
    fn, params = from_onnx(model)
    with pytest.raises(OnnxImportError, match="params lacks"):
        fn({}, np.zeros((1, 16), np.float32))


# ---------------------------------------------------------------------------------------------
# Silero VAD (the ONNX files of the silero-vad wheel; the package itself imports torch, so it
# is never imported, only located)
# ---------------------------------------------------------------------------------------------


def silero_file(name: str) -> Path:
    spec = importlib.util.find_spec("silero_vad")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        msg = "the silero-vad wheel: pip install --no-deps silero-vad==6.2.3"
        if os.environ.get("CI"):
            pytest.fail(f"CI needs {msg}")
        pytest.skip(f"needs {msg}")
    return Path(spec.submodule_search_locations[0]) / "data" / name


@pytest.mark.parametrize(
    "name, static",
    [
        ("silero_vad_op18_ifless.onnx", False),  # the sample-rate If becomes lax.cond
        ("silero_vad_16k_op15.onnx", False),  # an LSTM op inside nested Ifs on shapes
        ("silero_vad.onnx", True),  # its 8 kHz branch cannot trace on 16 kHz chunks: bind sr
    ],
)
def test_silero_vad_parity(name, static):
    """Three 512-sample chunks at 16 kHz, batch 2, each model carrying its own state."""
    path = silero_file(name)
    fn, params = from_onnx(path, static_inputs={"sr": 16000} if static else None)
    step = jax.jit(fn)
    rng = np.random.default_rng(11)
    sr = np.array(16000, np.int64)
    ref_state = state = np.zeros((2, 2, 128), np.float32)
    prob_err = state_err = 0.0
    for _ in range(3):
        chunk = rand(rng, 2, 512, scale=0.1)
        ref_prob, ref_state = run_ort(str(path), {"input": chunk, "state": ref_state, "sr": sr})
        feeds = {"input": chunk, "state": state, "sr": sr}
        prob, state = step(params, *[feeds[n] for n in fn.input_names])
        prob_err = max(prob_err, float(np.abs(np.asarray(prob) - ref_prob).max()))
        state_err = max(state_err, float(np.abs(np.asarray(state) - ref_state).max()))
    print(f"{name}: max abs error prob {prob_err:.2e}, state {state_err:.2e}")
    assert prob_err <= ATOL
    # The encoder's activations reach ~2e3, so float32 summation order alone moves the LSTM
    # state by up to ~2e-5 (a relative error of ~1e-6 at the encoder output).
    assert state_err <= 5e-5

    def speech(x):
        feeds = {"input": x, "state": state, "sr": sr}
        return jnp.sum(fn(params, *[feeds[n] for n in fn.input_names])[0])

    g = jax.jit(jax.grad(speech))(chunk)
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
