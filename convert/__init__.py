"""Compatibility shim: the converter is now the installed package :mod:`jaxadv.convert`.

``python -m convert`` (from the repository root), ``import convert`` and ``from convert.core
import ...`` keep working here; use ``jaxadv-convert`` or ``python -m jaxadv.convert`` instead.
"""

import importlib
import sys

from jaxadv.convert import *  # noqa: F403
from jaxadv.convert import __all__  # noqa: F401

for _name in ("architectures", "core", "keras_h5", "mapping", "standardisation"):
    globals()[_name] = sys.modules[f"{__name__}.{_name}"] = importlib.import_module(
        f"jaxadv.convert.{_name}"
    )
