"""jaxadv: adversarial attacks on sound event classifiers, in JAX.

A reimplementation of Subramanian et al. (2019), "Adversarial attacks in sound event
classification" (arXiv:1907.02477): the five attacked models with their original front-ends,
weight conversion from the original Keras checkpoints, and the attacks as compiled, batched
optimisation loops. Importing this package does no I/O and pulls in no TensorFlow or PyTorch.
"""

from jaxadv import config as config
from jaxadv import frontend as frontend

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: ``import jaxadv`` stays light (no JAX tracing at import)
    if name in ("wrap", "Wrapped", "WrappedModel"):
        from jaxadv import adapter

        return getattr(adapter, name)
    if name == "from_onnx":
        from jaxadv import onnx_import

        return onnx_import.from_onnx
    raise AttributeError(f"module 'jaxadv' has no attribute {name!r}")
