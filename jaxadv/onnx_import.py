"""Import ONNX models as pure, differentiable, jit-able JAX functions.

:func:`from_onnx` reads an ONNX model and returns ``(fn, params)``:

* ``fn`` is an :class:`OnnxFunction`, a frozen, hashable description of the graph (nodes as tuples
  of op type, input/output names and attributes converted to hashable Python values; constant
  tensors kept as hashable NumPy constants). ``fn(params, *inputs)`` evaluates the graph with
  ``jax.numpy``/``lax`` and returns one array, or a tuple when the graph has several outputs.
  Being hashable by value, ``fn`` can be a static argument of ``jax.jit`` (as the attacks take
  classifier functions): the same model and shapes never compile twice.
* ``params`` is a dict ``name -> float32 array`` of the model's floating-point initializers
  (float16/64 ones are cast), so a caller can differentiate w.r.t. the inputs or the params, and
  passes the params in (they are never closed over). Float tensors of ``Constant`` nodes stay
  constants of ``fn`` (some exporters, e.g. Silero's ``silero_vad.onnx``, put all the weights
  there; such a model has no params).

Static values. Non-float initializers, ``Constant`` nodes, inputs bound with
``from_onnx(..., static_inputs=...)`` and ``Shape``/``Size`` of any tensor (shapes are static
under ``jax.jit``) are NumPy values. An op whose inputs are all static is evaluated with NumPy
at trace time (constant folding), so the shape arithmetic that exporters emit
(``Shape -> Gather -> Concat -> Reshape``, ``If`` on a shape) costs nothing at run time and the
inputs that must be static (Reshape shapes, Slice starts, Pad pads, reduction axes, ...) are.
Such an input that depends on a run-time value raises :class:`OnnxImportError` while tracing.

``If`` with a static condition evaluates only the branch taken; with a run-time condition it
becomes ``lax.cond`` (both branches must give the same shapes and dtypes; otherwise bind the
inputs that decide it with ``static_inputs``, e.g. ``static_inputs={"sr": 16000}`` for Silero).

Supported operators (default domain, opset 7 and newer). Where an attribute became an input,
the model's opset decides which one is read; the version of the change is given:

* Elementwise: Add, Sub, Mul, Div (integer division truncates, as in C), Pow (a static integral
  scalar exponent uses ``lax.integer_pow``), Neg, Abs, Sqrt, Exp, Log, Reciprocal, Floor, Ceil,
  Erf, Sin, Cos, Relu, LeakyRelu, Elu, Sigmoid, HardSigmoid, Softplus, Tanh, PRelu, Min, Max,
  Sum, Mean, Clip (min/max attributes before opset 11, inputs from 11), Where, Equal, Less,
  LessOrEqual, Greater, GreaterOrEqual, Not, And, Or, Xor, Cast, CastLike, Identity, Dropout
  (inference: identity; the mask output is all true).
* Linear algebra: MatMul, Gemm (alpha, beta, transA, transB; C broadcast).
* Convolution and pooling (N-d, ``NC...`` layout): Conv (pads, auto_pad NOTSET/VALID/SAME_UPPER/
  SAME_LOWER, strides, dilations, group), ConvTranspose (explicit pads, output_padding,
  output_shape, strides, dilations, group; auto_pad NOTSET/VALID only), MaxPool and AveragePool
  (pads, auto_pad, strides, dilations, ceil_mode with onnxruntime's rule that a window starting
  in the end padding is dropped; AveragePool count_include_pad; no MaxPool Indices output),
  GlobalAveragePool, GlobalMaxPool.
* Normalisation: BatchNormalization (inference only), InstanceNormalization,
  LayerNormalization (opset 17).
* Softmax, LogSoftmax (before opset 13 they flatten to 2-D at ``axis``, default 1; from 13 they
  act on ``axis``, default -1).
* Reductions: ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2,
  ReduceSumSquare, ReduceLogSumExp (axes attribute before opset 18, ReduceSum before 13; then an
  input; keepdims, noop_with_empty_axes), ArgMax, ArgMin.
* Shapes and indexing: Reshape (0 copies a dimension unless allowzero), Flatten, Transpose,
  Squeeze, Unsqueeze (axes attribute before opset 13, input from 13), Concat, Split (split
  attribute before 13, input from 13, num_outputs from 18), Slice (attributes before opset 10,
  inputs from 10, negative steps), Gather, GatherElements, Pad (constant, reflect, edge, wrap;
  attributes before opset 11, inputs from 11, axes from 18, negative pads crop), Expand, Tile,
  Shape (start/end), Size, ConstantOfShape, Range (static inputs), Constant.
* Recurrent: LSTM (forward, reverse, bidirectional; initial states, biases, peepholes,
  sequence_lens, clip, layout 0/1; activations Sigmoid/Tanh/Relu; not input_forget).
* Control flow: If (see above).

Anything else (and any op outside the default domain) is refused by :func:`from_onnx`, which
lists every unsupported op of the model at once. Float computations run in the params' dtype
(float32); 64-bit values follow JAX's ``jax_enable_x64`` setting (int64 becomes int32 by
default). Convolutions and matrix products use JAX's default precision: wrap the call in
``jax.default_matmul_precision("highest")`` on accelerators whose default is TF32.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections import ChainMap
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxadv.cli import UserError

if TYPE_CHECKING:
    import onnx

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

MIN_OPSET = 7


class OnnxImportError(UserError, ValueError):
    """An ONNX model that cannot be imported or evaluated (unsupported op, bad file, a value that
    must be static but depends on a run-time input)."""


# ---------------------------------------------------------------------------------------------
# The static description
# ---------------------------------------------------------------------------------------------


class Const:
    """A constant tensor, hashable and comparable by value (a read-only NumPy array)."""

    __slots__ = ("array", "_key", "_hash")

    def __init__(self, array: np.ndarray):
        a = np.array(array, copy=True, order="C")
        a.setflags(write=False)
        self.array = a
        # A 128-bit digest stands for the data: hashing and comparing stay cheap for the
        # megabytes of weights some exporters put in Constant nodes (jit compares static
        # arguments on every cache lookup).
        digest = hashlib.blake2b(a.tobytes(), digest_size=16).digest()
        self._key = (a.dtype.str, a.shape, digest)
        self._hash = hash(self._key)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Const):
            return NotImplemented
        return self._key == other._key

    def __repr__(self) -> str:
        return f"Const({self.array.dtype}{list(self.array.shape)})"


class Node(NamedTuple):
    """One ONNX node: op type, node name, input names ('' = absent optional input), output
    names and ``(name, value)`` attribute pairs (ints, floats, strs, tuples, :class:`Const`,
    :class:`Graph`)."""

    op: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: tuple[tuple[str, Any], ...]


class Graph(NamedTuple):
    """A (sub)graph: nodes in topological order, its static constants, inputs and outputs."""

    nodes: tuple[Node, ...]
    constants: tuple[tuple[str, Const], ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class OnnxFunction:
    """An imported ONNX graph: ``fn(params, *inputs) -> Array | tuple[Array, ...]``.

    ``params`` maps each of :attr:`param_names` to an array (the float initializers, as returned
    by :func:`from_onnx`); ``inputs`` are the graph inputs in the order of :attr:`input_names`,
    with the shapes the model declares (e.g. a waveform ``[B, N]``). Returns the outputs named
    by :attr:`output_names` (a single array when there is one). Pure and hashable by value.
    """

    graph: Graph = dataclasses.field(repr=False)
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    param_names: tuple[str, ...]
    opset: int
    _hash: int = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Hashed once: jit hashes its static arguments on every call.
        fields = (self.graph, self.input_names, self.output_names, self.param_names, self.opset)
        object.__setattr__(self, "_hash", hash(fields))

    def __hash__(self) -> int:
        return self._hash

    def __call__(
        self, params: Mapping[str, ArrayLike], *inputs: ArrayLike
    ) -> Array | tuple[Array, ...]:
        if len(inputs) != len(self.input_names):
            raise TypeError(
                f"the ONNX graph takes {len(self.input_names)} inputs "
                f"{list(self.input_names)}, got {len(inputs)}"
            )
        missing = [n for n in self.param_names if n not in params]
        if missing:
            raise OnnxImportError(
                f"params lacks {len(missing)} of the model's initializers: {missing[:5]}"
            )
        env: dict[str, Any] = {n: jnp.asarray(params[n]) for n in self.param_names}
        env.update(zip(self.input_names, (jnp.asarray(x) for x in inputs), strict=True))
        outs = tuple(jnp.asarray(v) for v in _run_graph(self.graph, env, self.opset))
        return outs[0] if len(outs) == 1 else outs

    @property
    def ops(self) -> dict[str, int]:
        """How many nodes of each op type the graph has (subgraphs included)."""
        counts: dict[str, int] = {}
        _count_ops(self.graph, counts)
        return counts


def _count_ops(graph: Graph, counts: dict[str, int]) -> None:
    for node in graph.nodes:
        counts[node.op] = counts.get(node.op, 0) + 1
        for _, v in node.attrs:
            if isinstance(v, Graph):
                _count_ops(v, counts)


# ---------------------------------------------------------------------------------------------
# Reading a model
# ---------------------------------------------------------------------------------------------

# TensorProto.DataType -> NumPy dtype (bfloat16 from ml_dtypes, which JAX depends on).
_DTYPES: dict[int, Any] = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    4: np.uint16,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
    12: np.uint32,
    13: np.uint64,
    16: jnp.bfloat16,
}


def from_onnx(
    model: str | Path | onnx.ModelProto,
    *,
    static_inputs: Mapping[str, ArrayLike] | None = None,
) -> tuple[OnnxFunction, dict[str, Array]]:
    """Import an ONNX model (a file or a ``ModelProto``) as ``(fn, params)``.

    ``static_inputs`` binds graph inputs to constant values (e.g. a sample rate that an ``If``
    branches on): they leave ``fn.input_names`` and are folded like constants. Raises
    :class:`OnnxImportError` for a missing or unreadable file, an unsupported opset, or ops this
    module does not implement (all of them named at once).
    """
    import onnx  # lazily: importing jaxadv must not need onnx

    if isinstance(model, str | Path):
        path = Path(model)
        if not path.is_file():
            raise OnnxImportError(f"{path}: no such ONNX file")
        try:
            model = onnx.load(str(path))
        except Exception as err:  # protobuf decode errors have no common base class
            raise OnnxImportError(f"{path}: not a readable ONNX model ({err})") from err
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"from_onnx takes a path or an onnx.ModelProto, not {type(model)}")

    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    opset = opsets.get("ai.onnx", 1 if model.ir_version < 3 else 0)
    if opset < MIN_OPSET:
        raise OnnxImportError(
            f"the model uses ONNX opset {opset}; jaxadv.onnx_import supports opset "
            f"{MIN_OPSET} and newer (re-export it, or convert it with onnx.version_converter)"
        )
    unsupported: dict[str, int] = {}
    _find_unsupported(model.graph, unsupported)
    if unsupported:
        listed = ", ".join(f"{op} (x{n})" for op, n in sorted(unsupported.items()))
        raise OnnxImportError(f"the ONNX model uses unsupported ops: {listed}")

    params: dict[str, np.ndarray] = {}
    used = _used_names(model.graph)
    graph = _convert_graph(model.graph, params, used)

    init_names = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in init_names]
    declared = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    bound = dict(static_inputs or {})
    unknown = sorted(set(bound) - set(inputs))
    if unknown:
        raise OnnxImportError(f"static_inputs names {unknown}, not inputs of the model {inputs}")
    extra = []
    for name, value in bound.items():
        dtype = _DTYPES.get(declared.get(name, 0))
        extra.append((name, Const(np.asarray(value, dtype=dtype))))
    graph = graph._replace(
        constants=graph.constants + tuple(extra), inputs=tuple(n for n in inputs if n not in bound)
    )
    fn = OnnxFunction(
        graph=graph,
        input_names=graph.inputs,
        output_names=graph.outputs,
        param_names=tuple(params),
        opset=opset,
    )
    return fn, {k: jnp.asarray(v) for k, v in params.items()}


def _find_unsupported(graph: onnx.GraphProto, found: dict[str, int]) -> None:
    for node in graph.node:
        domain = node.domain or "ai.onnx"
        if domain != "ai.onnx":
            key = f"{domain}::{node.op_type}"
        elif node.op_type not in _OPS and node.op_type != "Constant":
            key = node.op_type
        else:
            key = None
        if key is not None:
            found[key] = found.get(key, 0) + 1
        for a in node.attribute:
            for g in (*([a.g] if a.HasField("g") else []), *a.graphs):
                _find_unsupported(g, found)


def _used_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name read by a node or returned by a graph (subgraphs included)."""
    used = {o.name for o in graph.output}
    for node in graph.node:
        used.update(node.input)
        for a in node.attribute:
            for g in (*([a.g] if a.HasField("g") else []), *a.graphs):
                used |= _used_names(g)
    return used


def _convert_graph(g: onnx.GraphProto, params: dict[str, np.ndarray], used: set[str]) -> Graph:
    from onnx import numpy_helper

    constants: list[tuple[str, Const]] = []
    for init in g.initializer:
        if init.name not in used:
            continue  # exporters leave dead initializers; they would only clutter params
        try:
            a = numpy_helper.to_array(init)
        except Exception as err:
            raise OnnxImportError(
                f"initializer {init.name!r} cannot be read ({err}); load the model from its "
                "file so that external data is found"
            ) from err
        if np.issubdtype(a.dtype, np.floating) or a.dtype == jnp.bfloat16:
            params[init.name] = np.asarray(a, np.float32)
        elif a.dtype.kind in "biu":
            constants.append((init.name, Const(a)))
        else:
            raise OnnxImportError(f"initializer {init.name!r} has unsupported dtype {a.dtype}")
    nodes = []
    for n in g.node:
        attrs = tuple(sorted((a.name, _attr_value(a, params, used)) for a in n.attribute))
        if n.op_type == "Constant":
            constants.append((n.output[0], Const(_constant_value(n, dict(attrs)))))
            continue
        nodes.append(Node(n.op_type, n.name, tuple(n.input), tuple(n.output), attrs))
    return Graph(
        tuple(nodes),
        tuple(constants),
        tuple(i.name for i in g.input),
        tuple(o.name for o in g.output),
    )


def _attr_value(a: onnx.AttributeProto, params: dict[str, np.ndarray], used: set[str]) -> Any:
    from onnx import AttributeProto, numpy_helper

    t = a.type
    if t == AttributeProto.FLOAT:
        return float(a.f)
    if t == AttributeProto.INT:
        return int(a.i)
    if t == AttributeProto.STRING:
        return a.s.decode("utf-8")
    if t == AttributeProto.TENSOR:
        return Const(numpy_helper.to_array(a.t))
    if t == AttributeProto.GRAPH:
        return _convert_graph(a.g, params, used)
    if t == AttributeProto.FLOATS:
        return tuple(float(v) for v in a.floats)
    if t == AttributeProto.INTS:
        return tuple(int(v) for v in a.ints)
    if t == AttributeProto.STRINGS:
        return tuple(s.decode("utf-8") for s in a.strings)
    if t == AttributeProto.TENSORS:
        return tuple(Const(numpy_helper.to_array(v)) for v in a.tensors)
    if t == AttributeProto.GRAPHS:
        return tuple(_convert_graph(v, params, used) for v in a.graphs)
    raise OnnxImportError(f"attribute {a.name!r} has an unsupported type ({t})")


def _constant_value(node: onnx.NodeProto, attrs: dict[str, Any]) -> np.ndarray:
    if "value" in attrs:
        return attrs["value"].array
    for key, dtype in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if key in attrs:
            return np.asarray(attrs[key], dtype)
    raise OnnxImportError(
        f"Constant node {node.name!r}: only tensor, float(s) and int(s) values are supported, "
        f"not {sorted(attrs)}"
    )


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Ctx:
    """What an op sees besides its inputs: the opset and the scope (for If's subgraphs)."""

    opset: int
    env: MutableMapping[str, Any]
    n_outputs: int = 1  # of the node being evaluated (Split without sizes splits into that many)

    def run(self, graph: Graph) -> list[Any]:
        return _run_graph(graph, self.env, self.opset)


def _run_graph(graph: Graph, outer: Mapping[str, Any], opset: int) -> list[Any]:
    """Evaluate ``graph`` on the values of ``outer`` (a subgraph sees its enclosing scope)."""
    env: MutableMapping[str, Any] = ChainMap({}, outer)  # type: ignore[arg-type]
    for name, c in graph.constants:
        env[name] = c.array
    ctx = _Ctx(opset, env)
    for node in graph.nodes:
        label = f"ONNX node {node.name or node.outputs[0]!r} ({node.op})"
        try:
            args = [env[n] if n else None for n in node.inputs]
        except KeyError as err:
            raise OnnxImportError(
                f"{label} reads {err.args[0]!r}, which no earlier "
                "node, input or initializer defines (nodes must be topologically sorted)"
            ) from None
        ctx.n_outputs = len(node.outputs)
        try:
            outs = _OPS[node.op](ctx, args, dict(node.attrs))
        except OnnxImportError as err:
            raise OnnxImportError(f"{label}: {err}") from None
        except Exception as err:
            err.add_note(f"while evaluating {label}")
            raise
        outs = list(outs) if isinstance(outs, list | tuple) else [outs]
        for i, name in enumerate(node.outputs):
            if not name:
                continue
            if i >= len(outs) or outs[i] is None:
                raise OnnxImportError(f"{label}: output {i} ({name!r}) is not supported")
            v = outs[i]
            env[name] = np.asarray(v) if isinstance(v, np.ndarray | np.generic) else v
    return [env[n] for n in graph.outputs]


# ---------------------------------------------------------------------------------------------
# Helpers for the ops
# ---------------------------------------------------------------------------------------------


def _is_static(v: Any) -> bool:
    return isinstance(v, np.ndarray | np.generic)


def _xp(*vals: Any) -> Any:
    """NumPy when every given value is static (constant folding), else jax.numpy."""
    return np if all(_is_static(v) for v in vals if v is not None) else jnp


def _arg(args: Sequence[Any], i: int) -> Any:
    return args[i] if i < len(args) else None


def _static(v: Any, what: str) -> np.ndarray:
    if not _is_static(v):
        raise OnnxImportError(
            f"{what} must be static (computed from constants and shapes), but it depends on a "
            "run-time value; bind the inputs it depends on with from_onnx(static_inputs=...)"
        )
    return np.asarray(v)


def _ints(v: Any, what: str) -> tuple[int, ...] | None:
    return None if v is None else tuple(int(i) for i in _static(v, what).reshape(-1))


def _scalar(v: Any, what: str) -> Any:
    return _static(v, what).reshape(-1)[0].item()


def _axes(axes: Sequence[int], ndim: int) -> tuple[int, ...]:
    return tuple(int(a) % ndim if ndim else 0 for a in axes)


def _canon(dtype: Any) -> Any:
    """The dtype jnp will use (int64 -> int32 without x64), to avoid its truncation warning."""
    return jax.dtypes.canonicalize_dtype(dtype)


def _astype(x: Any, dtype: Any) -> Any:
    if _is_static(x):
        return np.asarray(x).astype(dtype)
    return jnp.asarray(x).astype(_canon(dtype))


_OPS: dict[str, Callable[[_Ctx, list[Any], dict[str, Any]], Any]] = {}


def _op(*names: str) -> Callable[[Callable], Callable]:
    def register(f: Callable) -> Callable:
        for n in names:
            _OPS[n] = f
        return f

    return register


# ---------------------------------------------------------------------------------------------
# Elementwise
# ---------------------------------------------------------------------------------------------


def _unary(np_f: Callable, jnp_f: Callable) -> Callable:
    def op(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
        x = args[0]
        return np.asarray(np_f(x)).astype(x.dtype) if _is_static(x) else jnp_f(x)

    return op


def _np_erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[x.dtype])(x)


for _name, _np_f, _jnp_f in (
    ("Neg", np.negative, jnp.negative),
    ("Abs", np.abs, jnp.abs),
    ("Sqrt", np.sqrt, jnp.sqrt),
    ("Exp", np.exp, jnp.exp),
    ("Log", np.log, jnp.log),
    ("Reciprocal", np.reciprocal, jnp.reciprocal),
    ("Floor", np.floor, jnp.floor),
    ("Ceil", np.ceil, jnp.ceil),
    ("Sin", np.sin, jnp.sin),
    ("Cos", np.cos, jnp.cos),
    ("Erf", _np_erf, jax.scipy.special.erf),
    ("Tanh", np.tanh, jnp.tanh),
    ("Relu", lambda x: np.maximum(x, 0), jax.nn.relu),  # jax.nn.relu: gradient 0 at 0
    ("Sigmoid", lambda x: 1 / (1 + np.exp(-x)), jax.nn.sigmoid),
    ("Softplus", lambda x: np.logaddexp(x, 0), jax.nn.softplus),
    ("Not", np.logical_not, jnp.logical_not),
):
    _OPS[_name] = _unary(_np_f, _jnp_f)


def _binary(name: str) -> Callable:
    def op(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
        a, b = args
        return getattr(_xp(a, b), name)(a, b)

    return op


for _name, _fname in (
    ("Add", "add"),
    ("Sub", "subtract"),
    ("Mul", "multiply"),
    ("Equal", "equal"),
    ("Less", "less"),
    ("LessOrEqual", "less_equal"),
    ("Greater", "greater"),
    ("GreaterOrEqual", "greater_equal"),
    ("And", "logical_and"),
    ("Or", "logical_or"),
    ("Xor", "logical_xor"),
):
    _OPS[_name] = _binary(_fname)


@_op("Div")
def _div(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    a, b = args
    xp = _xp(a, b)
    if np.issubdtype(a.dtype, np.integer):
        # ONNX integer division truncates towards zero (C), NumPy's // floors.
        q = xp.floor_divide(a, b)
        return xp.where((q < 0) & (q * b != a), q + 1, q)
    return xp.divide(a, b)


@_op("Pow")
def _pow(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x, y = args
    if _is_static(x) and _is_static(y):
        return np.power(x, y).astype(x.dtype)
    e = float(y.reshape(-1)[0]) if _is_static(y) and y.size == 1 else None
    if e is not None and e.is_integer() and abs(e) <= 64:
        # x**2 as x*x: exact for negative x and a clean gradient at 0.
        out = lax.integer_pow(jnp.asarray(x), int(e))
        return jnp.broadcast_to(out, jnp.broadcast_shapes(x.shape, y.shape))
    return jnp.power(x, y).astype(x.dtype)  # ONNX: the result has the base's type


@_op("LeakyRelu")
def _leaky_relu(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = args[0]
    alpha = attrs.get("alpha", 0.01)
    return _xp(x).where(x >= 0, x, alpha * x)


@_op("PRelu")
def _prelu(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x, slope = args
    return _xp(x, slope).where(x >= 0, x, slope * x)


@_op("Elu")
def _elu(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = jnp.asarray(args[0])
    return jnp.where(x >= 0, x, attrs.get("alpha", 1.0) * jnp.expm1(jnp.minimum(x, 0)))


@_op("HardSigmoid")
def _hard_sigmoid(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = args[0]
    xp = _xp(x)
    return xp.clip(attrs.get("alpha", 0.2) * x + attrs.get("beta", 0.5), 0, 1).astype(x.dtype)


def _variadic(name: str, mean: bool = False) -> Callable:
    def op(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
        xp = _xp(*args)
        out = functools.reduce(getattr(xp, name), args)
        return out / len(args) if mean else out

    return op


_OPS["Max"] = _variadic("maximum")
_OPS["Min"] = _variadic("minimum")
_OPS["Sum"] = _variadic("add")
_OPS["Mean"] = _variadic("add", mean=True)


@_op("Clip")
def _clip(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = args[0]
    if ctx.opset < 11:
        lo, hi = attrs.get("min"), attrs.get("max")
    else:
        lo, hi = _arg(args, 1), _arg(args, 2)
    xp = _xp(
        x, lo if not isinstance(lo, float) else None, hi if not isinstance(hi, float) else None
    )
    # max then min, as onnxruntime does (min > max gives max)
    if lo is not None:
        x = xp.maximum(x, xp.asarray(lo, x.dtype))
    if hi is not None:
        x = xp.minimum(x, xp.asarray(hi, x.dtype))
    return x


@_op("Where")
def _where(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    c, a, b = args
    return _xp(c, a, b).where(c, a, b)


@_op("Cast")
def _cast(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    to = attrs["to"]
    if to not in _DTYPES:
        raise OnnxImportError(f"Cast to ONNX data type {to} is not supported")
    return _astype(args[0], _DTYPES[to])


@_op("CastLike")
def _cast_like(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    return _astype(args[0], args[1].dtype)


@_op("Identity")
def _identity(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    return args[0]


@_op("Dropout")
def _dropout(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = args[0]
    training = _arg(args, 2)
    if training is not None and _scalar(training, "Dropout training_mode"):
        raise OnnxImportError("Dropout in training mode is not supported (inference only)")
    return [x, np.ones(x.shape, bool)]


# ---------------------------------------------------------------------------------------------
# Linear algebra, normalisation, softmax
# ---------------------------------------------------------------------------------------------


@_op("MatMul")
def _matmul(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    a, b = args
    return _xp(a, b).matmul(a, b)


@_op("Gemm")
def _gemm(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    a, b, c = args[0], args[1], _arg(args, 2)
    if attrs.get("transA", 0):
        a = a.T
    if attrs.get("transB", 0):
        b = b.T
    y = jnp.matmul(a, b)
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if alpha != 1.0:
        y = alpha * y
    if c is not None:
        y = y + (c if beta == 1.0 else beta * c)
    return y


def _channel(v: Any, ndim: int) -> Any:
    """A per-channel vector ``[C]`` shaped to broadcast against ``[N, C, ...]``."""
    return jnp.reshape(v, (1, -1) + (1,) * (ndim - 2))


@_op("BatchNormalization")
def _batch_norm(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x, scale, bias, mean, var = args[:5]
    if attrs.get("training_mode", 0):
        raise OnnxImportError("BatchNormalization in training mode is not supported")
    inv = scale / jnp.sqrt(var + attrs.get("epsilon", 1e-5))
    y = (x - _channel(mean, x.ndim)) * _channel(inv, x.ndim) + _channel(bias, x.ndim)
    return [y, mean, var]  # before opset 14 the optional outputs are the running statistics


@_op("InstanceNormalization")
def _instance_norm(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x, scale, bias = args
    axes = tuple(range(2, x.ndim))
    mean = jnp.mean(x, axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axes, keepdims=True)
    y = (x - mean) * lax.rsqrt(var + attrs.get("epsilon", 1e-5))
    return y * _channel(scale, x.ndim) + _channel(bias, x.ndim)


@_op("LayerNormalization")
def _layer_norm(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x, scale, bias = args[0], args[1], _arg(args, 2)
    axis = attrs.get("axis", -1) % x.ndim
    axes = tuple(range(axis, x.ndim))
    mean = jnp.mean(x, axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axes, keepdims=True)
    inv = lax.rsqrt(var + attrs.get("epsilon", 1e-5))
    y = (x - mean) * inv * scale
    return [y if bias is None else y + bias, mean, inv]


def _softmax_like(f: Callable) -> Callable:
    def op(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
        x = jnp.asarray(args[0])
        if ctx.opset >= 13:
            return f(x, axis=attrs.get("axis", -1))
        # Before opset 13 the input is flattened to 2-D at `axis` and normalised per row.
        axis = attrs.get("axis", 1) % x.ndim
        rows = math.prod(x.shape[:axis])
        return f(x.reshape(rows, -1), axis=-1).reshape(x.shape)

    return op


_OPS["Softmax"] = _softmax_like(jax.nn.softmax)
_OPS["LogSoftmax"] = _softmax_like(jax.nn.log_softmax)


# ---------------------------------------------------------------------------------------------
# Convolution and pooling
# ---------------------------------------------------------------------------------------------


def _spatial(attrs: dict[str, Any], key: str, n: int, default: int) -> tuple[int, ...]:
    v = attrs.get(key)
    return tuple(v) if v else (default,) * n


def _window_pads(
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    attrs: dict[str, Any],
) -> list[tuple[int, int]]:
    """(begin, end) padding of each spatial axis for Conv and the pools (auto_pad included)."""
    n = len(sizes)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto == "VALID":
        return [(0, 0)] * n
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2  # the odd pixel goes to the end (UPPER)
            pads.append((small, big) if auto == "SAME_UPPER" else (big, small))
        return pads
    if auto != "NOTSET":
        raise OnnxImportError(f"auto_pad {auto!r} is not supported")
    p = attrs.get("pads") or (0,) * (2 * n)
    return [(p[i], p[i + n]) for i in range(n)]


def _identity_dims(nd: int) -> lax.ConvDimensionNumbers:
    spec = tuple(range(nd + 2))  # NC<spatial> for the input and output, OI<spatial> for weights
    return lax.ConvDimensionNumbers(spec, spec, spec)


@_op("Conv")
def _conv(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x, w, b = args[0], args[1], _arg(args, 2)
    nd = x.ndim - 2
    kernel = tuple(w.shape[2:])
    strides = _spatial(attrs, "strides", nd, 1)
    dilations = _spatial(attrs, "dilations", nd, 1)
    pads = _window_pads(x.shape[2:], kernel, strides, dilations, attrs)
    y = lax.conv_general_dilated(
        jnp.asarray(x),
        jnp.asarray(w),
        window_strides=strides,
        padding=pads,
        rhs_dilation=dilations,
        dimension_numbers=_identity_dims(nd),
        feature_group_count=attrs.get("group", 1),
    )
    return y if b is None else y + _channel(b, y.ndim)


@_op("ConvTranspose")
def _conv_transpose(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x, w, b = args[0], args[1], _arg(args, 2)
    nd = x.ndim - 2
    g = attrs.get("group", 1)
    kernel = tuple(w.shape[2:])
    strides = _spatial(attrs, "strides", nd, 1)
    dilations = _spatial(attrs, "dilations", nd, 1)
    out_pad = _spatial(attrs, "output_padding", nd, 0)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID"):
        raise OnnxImportError(f"ConvTranspose auto_pad {auto!r} is not supported; use pads")
    pads = _window_pads(x.shape[2:], kernel, strides, dilations, attrs)
    if attrs.get("output_shape"):
        # The padding that gives the requested size, split as the spec says for auto_pad
        # NOTSET/VALID (and onnxruntime does): the larger half at the start.
        pads = []
        for size, k, s, d, op_, out in zip(
            x.shape[2:],
            kernel,
            strides,
            dilations,
            out_pad,
            attrs["output_shape"][-nd:],
            strict=True,
        ):
            total = s * (size - 1) + op_ + (k - 1) * d + 1 - out
            tail = int(total / 2)  # C's truncating division, should the total be negative
            pads.append((total - tail, tail))
    # A transposed convolution is a convolution of the stride-dilated input with the flipped
    # kernel, in and out channels swapped within each group: [C, M/g, k] -> [M, C/g, k].
    c_in, m_g = w.shape[0], w.shape[1]
    wt = jnp.reshape(w, (g, c_in // g, m_g) + kernel)
    wt = jnp.swapaxes(wt, 1, 2).reshape((g * m_g, c_in // g) + kernel)
    wt = jnp.flip(wt, axis=tuple(range(2, nd + 2)))
    padding = [
        ((k - 1) * d - pb, (k - 1) * d - pe + op_)
        for k, d, (pb, pe), op_ in zip(kernel, dilations, pads, out_pad, strict=True)
    ]
    y = lax.conv_general_dilated(
        jnp.asarray(x),
        wt,
        window_strides=(1,) * nd,
        padding=padding,
        lhs_dilation=strides,
        rhs_dilation=dilations,
        dimension_numbers=_identity_dims(nd),
        feature_group_count=g,
    )
    return y if b is None else y + _channel(b, y.ndim)


def _pool_geometry(
    x: Any, attrs: dict[str, Any]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], list[tuple[int, int]], list[int]]:
    """Kernel, strides, dilations, explicit pads and the extra end padding of ceil_mode."""
    kernel = tuple(attrs["kernel_shape"])
    nd = len(kernel)
    strides = _spatial(attrs, "strides", nd, 1)
    dilations = _spatial(attrs, "dilations", nd, 1)
    pads = _window_pads(x.shape[2:], kernel, strides, dilations, attrs)
    extra = [0] * nd
    if attrs.get("ceil_mode", 0):
        for i, (size, k, s, d, (pb, pe)) in enumerate(
            zip(x.shape[2:], kernel, strides, dilations, pads, strict=True)
        ):
            span = size + pb + pe - ((k - 1) * d + 1)
            out = -(-span // s) + 1
            if (out - 1) * s >= size + pb:  # the last window must start inside the input
                out -= 1
            extra[i] = max(0, (out - 1) * s + (k - 1) * d + 1 - (size + pb + pe))
    return kernel, strides, dilations, pads, extra


@_op("MaxPool")
def _max_pool(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = jnp.asarray(args[0])
    if attrs.get("storage_order", 0):
        raise OnnxImportError("MaxPool storage_order=1 is not supported")
    kernel, strides, dilations, pads, extra = _pool_geometry(x, attrs)
    # A concrete NumPy init value, so that lax picks its max-window primitive (which has JVP
    # and transpose rules), not the generic reduce_window (which has none). Padding explicitly
    # with it, then a VALID window, is what MaxPool means: pads never win the max.
    init = np.array(
        -np.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min, x.dtype
    )
    padding = ((0, 0), (0, 0)) + tuple(
        (pb, pe + e) for (pb, pe), e in zip(pads, extra, strict=True)
    )
    y = lax.reduce_window(
        jnp.pad(x, padding, constant_values=init),
        init,
        lax.max,
        (1, 1) + kernel,
        (1, 1) + strides,
        "VALID",
        window_dilation=(1, 1) + dilations,
    )
    return [y, None]


@_op("AveragePool")
def _average_pool(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = jnp.asarray(args[0])
    kernel, strides, dilations, pads, extra = _pool_geometry(x, attrs)
    padding = ((0, 0), (0, 0)) + tuple(
        (pb, pe + e) for (pb, pe), e in zip(pads, extra, strict=True)
    )
    window = dict(
        window_dimensions=(1, 1) + kernel,
        window_strides=(1, 1) + strides,
        padding="VALID",
        window_dilation=(1, 1) + dilations,
    )
    zero = np.array(0, x.dtype)  # concrete: the sum-window primitive, differentiable
    sums = lax.reduce_window(jnp.pad(x, padding), zero, lax.add, **window)
    # The divisor: the input cells of each window, plus the explicit pads if count_include_pad
    # (never the ceil_mode overhang). Static, so computed with NumPy.
    ones = np.ones((1, 1) + x.shape[2:], np.float32)
    if attrs.get("count_include_pad", 0):
        ones = np.pad(ones, ((0, 0), (0, 0)) + tuple(pads), constant_values=1.0)
        ones = np.pad(ones, ((0, 0), (0, 0)) + tuple((0, e) for e in extra))
    else:
        ones = np.pad(ones, padding)
    counts = lax.reduce_window(jnp.asarray(ones), np.float32(0), lax.add, **window)
    return (sums / counts).astype(x.dtype)


@_op("GlobalAveragePool")
def _global_average_pool(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = args[0]
    return jnp.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True)


@_op("GlobalMaxPool")
def _global_max_pool(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = args[0]
    return jnp.max(x, axis=tuple(range(2, x.ndim)), keepdims=True)


# ---------------------------------------------------------------------------------------------
# Reductions
# ---------------------------------------------------------------------------------------------


def _reduce(name: str, axes_input_since: int = 18) -> Callable:
    def op(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
        x = args[0]
        if ctx.opset >= axes_input_since:
            axes = _ints(_arg(args, 1), f"{name} axes")
        else:
            axes = attrs.get("axes")
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return x
            axes = tuple(range(x.ndim))
        axes = _axes(axes, x.ndim)
        keep = bool(attrs.get("keepdims", 1))
        xp = _xp(x)
        if name == "ReduceL1":
            return xp.sum(xp.abs(x), axis=axes, keepdims=keep)
        if name == "ReduceL2":
            return xp.sqrt(xp.sum(x * x, axis=axes, keepdims=keep))
        if name == "ReduceSumSquare":
            return xp.sum(x * x, axis=axes, keepdims=keep)
        if name == "ReduceLogSumExp":
            return jax.scipy.special.logsumexp(x, axis=axes, keepdims=keep)
        f = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max", "ReduceMin": "min"}
        out = getattr(xp, f.get(name, "prod"))(x, axis=axes, keepdims=keep)
        return out.astype(x.dtype)

    return op


for _name in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2"):
    _OPS[_name] = _reduce(_name)
_OPS["ReduceSumSquare"] = _reduce("ReduceSumSquare")
_OPS["ReduceLogSumExp"] = _reduce("ReduceLogSumExp")
_OPS["ReduceSum"] = _reduce("ReduceSum", axes_input_since=13)


def _arg_reduce(name: str) -> Callable:
    def op(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
        x = args[0]
        xp = _xp(x)
        axis = attrs.get("axis", 0) % x.ndim
        if attrs.get("select_last_index", 0):
            n = x.shape[axis]
            idx = n - 1 - getattr(xp, name)(xp.flip(x, axis), axis=axis)
        else:
            idx = getattr(xp, name)(x, axis=axis)
        if attrs.get("keepdims", 1):
            idx = xp.expand_dims(idx, axis)
        return _astype(idx, np.int64)

    return op


_OPS["ArgMax"] = _arg_reduce("argmax")
_OPS["ArgMin"] = _arg_reduce("argmin")


# ---------------------------------------------------------------------------------------------
# Shapes and indexing
# ---------------------------------------------------------------------------------------------


@_op("Shape")
def _shape(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    shape = tuple(args[0].shape)
    start, end = attrs.get("start", 0), attrs.get("end")
    return np.array(shape[start:end], np.int64)  # Python slicing clamps as the spec says


@_op("Size")
def _size(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    return np.array(math.prod(args[0].shape), np.int64)


@_op("ConstantOfShape")
def _constant_of_shape(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    shape = _ints(args[0], "ConstantOfShape shape")
    value = attrs["value"].array.reshape(-1) if "value" in attrs else np.zeros(1, np.float32)
    return np.full(shape, value[0], value.dtype)


@_op("Range")
def _range(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    start, limit, delta = (_static(a, "Range input").reshape(()) for a in args)
    return np.arange(start, limit, delta, dtype=start.dtype)


@_op("Reshape")
def _reshape(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = args[0]
    shape = _ints(args[1], "Reshape shape")
    if not attrs.get("allowzero", 0):
        shape = tuple(x.shape[i] if d == 0 else d for i, d in enumerate(shape))
    return _xp(x).reshape(x, shape)


@_op("Flatten")
def _flatten(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = args[0]
    axis = attrs.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return _xp(x).reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))


@_op("Transpose")
def _transpose(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = args[0]
    perm = attrs.get("perm") or tuple(reversed(range(x.ndim)))
    return _xp(x).transpose(x, perm)


def _axes_arg(ctx: _Ctx, args: list[Any], attrs: dict[str, Any], op: str) -> Any:
    if ctx.opset >= 13:
        return _ints(_arg(args, 1), f"{op} axes")
    return attrs.get("axes")


@_op("Squeeze")
def _squeeze(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = args[0]
    axes = _axes_arg(ctx, args, attrs, "Squeeze")
    if axes is None:
        axes = tuple(i for i, d in enumerate(x.shape) if d == 1)
    return _xp(x).squeeze(x, axis=_axes(axes, x.ndim))


@_op("Unsqueeze")
def _unsqueeze(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = args[0]
    axes = _axes_arg(ctx, args, attrs, "Unsqueeze")
    if axes is None:
        raise OnnxImportError("Unsqueeze needs axes")
    out_rank = x.ndim + len(axes)
    xp = _xp(x)
    for a in sorted(_axes(axes, out_rank)):  # the axes index the output
        x = xp.expand_dims(x, a)
    return x


@_op("Concat")
def _concat(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    xs = [a for a in args if a is not None]
    return _xp(*xs).concatenate(xs, axis=attrs["axis"] % xs[0].ndim)


@_op("Split")
def _split(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = args[0]
    axis = attrs.get("axis", 0) % x.ndim
    sizes = attrs.get("split") if ctx.opset < 13 else _ints(_arg(args, 1), "Split split")
    if not sizes:
        n = attrs.get("num_outputs") or ctx.n_outputs
        dim = x.shape[axis]
        chunk = -(-dim // n)  # opset 18: the last chunk is the smaller one
        sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
    cuts = np.cumsum(sizes)[:-1].tolist()
    return list(_xp(x).split(x, cuts, axis=axis))


@_op("Slice")
def _slice(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = args[0]
    if ctx.opset < 10:
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts = _ints(args[1], "Slice starts")
        ends = _ints(args[2], "Slice ends")
        axes = _ints(_arg(args, 3), "Slice axes")
        steps = _ints(_arg(args, 4), "Slice steps")
    axes = axes or tuple(range(len(starts)))
    steps = steps or (1,) * len(starts)
    index: list[slice] = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        a %= x.ndim
        # Python's slice clamping is the spec's; indices() gives in-range ints, where a
        # negative stop (only with negative steps) means "through index 0".
        start, stop, step = slice(s, e, st).indices(x.shape[a])
        index[a] = slice(start, None if stop < 0 else stop, step)
    return x[tuple(index)]


@_op("Gather")
def _gather(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    data, idx = args
    axis = attrs.get("axis", 0) % data.ndim
    dim = data.shape[axis]
    if _is_static(idx):
        idx = np.where(idx < 0, idx + dim, idx)
        if _is_static(data):
            return np.take(data, idx, axis=axis)
        return jnp.take(data, idx, axis=axis)
    idx = jnp.where(idx < 0, idx + dim, idx)
    return jnp.take(data, idx, axis=axis, mode="clip")


@_op("GatherElements")
def _gather_elements(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    data, idx = args
    axis = attrs.get("axis", 0) % data.ndim
    xp = _xp(data, idx)
    idx = xp.where(idx < 0, idx + data.shape[axis], idx)
    return xp.take_along_axis(data, idx, axis=axis)


@_op("Expand")
def _expand(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = args[0]
    shape = np.broadcast_shapes(x.shape, _ints(args[1], "Expand shape"))
    return _xp(x).broadcast_to(x, shape)


@_op("Tile")
def _tile(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = args[0]
    return _xp(x).tile(x, _ints(args[1], "Tile repeats"))


@_op("Pad")
def _pad(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    x = args[0]
    mode = attrs.get("mode", "constant")
    if ctx.opset < 11:
        pads, value, axes = attrs["pads"], attrs.get("value", 0.0), None
    else:
        pads = _ints(args[1], "Pad pads")
        value = _arg(args, 2)
        axes = _ints(_arg(args, 3), "Pad axes")
    axes = _axes(axes, x.ndim) if axes else tuple(range(x.ndim))
    n = len(axes)
    widths = [(0, 0)] * x.ndim
    for i, a in enumerate(axes):
        widths[a] = (pads[i], pads[i + n])
    xp = _xp(x)
    if mode not in ("constant", "reflect", "edge", "wrap"):  # NumPy's names for ONNX's modes
        raise OnnxImportError(f"Pad mode {mode!r} is not supported")
    kw = {}
    if mode == "constant":
        if value is None:
            value = 0
        elif _is_static(value):
            value = np.asarray(value).reshape(-1)[0].item() if np.size(value) else 0
        kw["constant_values"] = value
    out = xp.pad(x, [(max(b, 0), max(e, 0)) for b, e in widths], mode=mode, **kw)
    # Negative pads crop.
    crop = tuple(slice(-min(b, 0), out.shape[i] + min(e, 0)) for i, (b, e) in enumerate(widths))
    return out[crop] if any(min(b, e) < 0 for b, e in widths) else out


# ---------------------------------------------------------------------------------------------
# LSTM
# ---------------------------------------------------------------------------------------------

_LSTM_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
}


@_op("LSTM")
def _lstm(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    """ONNX LSTM: X ``[T, B, I]`` (layout 1: ``[B, T, I]``), W ``[D, 4H, I]``, R ``[D, 4H, H]``,
    B ``[D, 8H]``, sequence_lens ``[B]``, initial_h/c ``[D, B, H]`` (layout 1: ``[B, D, H]``),
    P ``[D, 3H]``; gates in the order i, o, f, c. Returns Y ``[T, D, B, H]`` (layout 1:
    ``[B, T, D, H]``), Y_h and Y_c like initial_h."""
    x, w, r = (jnp.asarray(a) for a in args[:3])
    b, lens, h0, c0, p = (_arg(args, i) for i in range(3, 8))
    direction = attrs.get("direction", "forward")
    n_dirs = 2 if direction == "bidirectional" else 1
    if direction not in ("forward", "reverse", "bidirectional"):
        raise OnnxImportError(f"LSTM direction {direction!r} is not supported")
    if attrs.get("input_forget", 0):
        raise OnnxImportError("LSTM input_forget=1 is not supported")
    if attrs.get("activation_alpha") or attrs.get("activation_beta"):
        raise OnnxImportError("LSTM activation_alpha/activation_beta are not supported")
    acts = attrs.get("activations") or ("Sigmoid", "Tanh", "Tanh") * n_dirs
    bad = sorted({a for a in acts if a.lower() not in _LSTM_ACTIVATIONS})
    if bad:
        raise OnnxImportError(f"LSTM activations {bad} are not supported (Sigmoid, Tanh, Relu)")
    layout = attrs.get("layout", 0)
    if layout:
        x = jnp.swapaxes(x, 0, 1)
        h0 = None if h0 is None else jnp.swapaxes(h0, 0, 1)
        c0 = None if c0 is None else jnp.swapaxes(c0, 0, 1)
    t_len, batch = x.shape[:2]
    hidden = r.shape[-1]
    zeros = jnp.zeros((n_dirs, batch, hidden), x.dtype)
    h0 = zeros if h0 is None else jnp.asarray(h0)
    c0 = zeros if c0 is None else jnp.asarray(c0)
    b = jnp.zeros((n_dirs, 8 * hidden), x.dtype) if b is None else jnp.asarray(b)
    if lens is not None and _is_static(lens) and np.all(np.asarray(lens) == t_len):
        lens = None  # full-length sequences: no masking needed
    lens = None if lens is None else jnp.asarray(lens)
    clip = attrs.get("clip")
    ys, hs, cs = [], [], []
    for d in range(n_dirs):
        f, g, h = (_LSTM_ACTIVATIONS[a.lower()] for a in acts[3 * d : 3 * d + 3])
        y, h_t, c_t = _lstm_direction(
            x,
            w[d],
            r[d],
            b[d],
            None if p is None else jnp.asarray(p)[d],
            h0[d],
            c0[d],
            lens,
            direction == "reverse" or d == 1,
            clip,
            (f, g, h),
        )
        ys.append(y)
        hs.append(h_t)
        cs.append(c_t)
    y, h_n, c_n = jnp.stack(ys, 1), jnp.stack(hs), jnp.stack(cs)
    if layout:
        y, h_n, c_n = (
            jnp.transpose(y, (2, 0, 1, 3)),
            jnp.swapaxes(h_n, 0, 1),
            jnp.swapaxes(c_n, 0, 1),
        )
    return [y, h_n, c_n]


def _lstm_direction(
    x: Array,
    w: Array,
    r: Array,
    b: Array,
    p: Array | None,
    h0: Array,
    c0: Array,
    lens: Array | None,
    reverse: bool,
    clip: float | None,
    acts: tuple[Callable, Callable, Callable],
) -> tuple[Array, Array, Array]:
    """One direction: x ``[T, B, I]`` -> (Y ``[T, B, H]``, h_T ``[B, H]``, c_T ``[B, H]``)."""
    f, g, h = acts
    t_len, batch = x.shape[:2]
    hidden = r.shape[-1]
    if reverse:
        if lens is None:
            order = jnp.broadcast_to(jnp.arange(t_len)[::-1, None], (t_len, batch))
        else:  # each sequence reversed within its own length; the padding stays in place
            t = jnp.arange(t_len)[:, None]
            order = jnp.where(t < lens[None, :], lens[None, :] - 1 - t, t)
        x = jnp.take_along_axis(x, order[:, :, None], axis=0)
    # The input projection of every step at once; only the recurrence is sequential.
    xw = jnp.einsum("tbi,gi->tbg", x, w) + (b[: 4 * hidden] + b[4 * hidden :])
    pi, po, pf = (None, None, None) if p is None else jnp.split(p, 3)

    def cut(v: Array) -> Array:
        return v if clip is None else jnp.clip(v, -clip, clip)

    def step(carry: tuple[Array, Array], inp: tuple[Array, Array]) -> tuple[Any, Array]:
        h_prev, c_prev = carry
        xt, t = inp
        gi, go, gf, gc = jnp.split(xt + h_prev @ r.T, 4, axis=-1)
        if p is not None:
            gi, gf = gi + pi * c_prev, gf + pf * c_prev
        i_t, f_t, c_hat = f(cut(gi)), f(cut(gf)), g(cut(gc))
        c_t = f_t * c_prev + i_t * c_hat
        if p is not None:
            go = go + po * c_t
        h_t = f(cut(go)) * h(c_t)
        if lens is None:
            return (h_t, c_t), h_t
        valid = (t < lens)[:, None]
        h_t, c_t = jnp.where(valid, h_t, h_prev), jnp.where(valid, c_t, c_prev)
        return (h_t, c_t), jnp.where(valid, h_t, 0.0)

    (h_t, c_t), y = lax.scan(step, (h0, c0), (xw, jnp.arange(t_len)))
    if reverse:
        y = jnp.take_along_axis(y, order[:, :, None], axis=0)  # the reordering is an involution
    return y, h_t, c_t


# ---------------------------------------------------------------------------------------------
# Control flow
# ---------------------------------------------------------------------------------------------


@_op("If")
def _if(ctx: _Ctx, args: list[Any], attrs: dict[str, Any]) -> Any:
    cond = args[0]
    then_g, else_g = attrs["then_branch"], attrs["else_branch"]
    if _is_static(cond):
        return ctx.run(then_g if bool(np.asarray(cond).reshape(-1)[0]) else else_g)

    def branch(g: Graph) -> Callable[[], list[Array]]:
        return lambda: [jnp.asarray(v) for v in ctx.run(g)]

    try:
        return lax.cond(jnp.reshape(cond, ()).astype(bool), branch(then_g), branch(else_g))
    except Exception as err:  # a branch that cannot be traced with these shapes, or mismatched
        raise OnnxImportError(
            "the condition depends on a run-time value, so both branches are traced for "
            f"lax.cond, and that failed ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "bind the inputs that decide it with from_onnx(static_inputs=...)"
        ) from err
