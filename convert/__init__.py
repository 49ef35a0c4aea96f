"""Conversion of the original Keras checkpoints into jaxadv checkpoints (``python -m convert``).

Kept outside the installed ``jaxadv`` package: it needs h5py (never TensorFlow) and is run from
the repository root. See ``convert/README.md`` for where each original checkpoint comes from.
"""

from convert.core import convert_file, load_keras
from convert.keras_h5 import ConversionError, read_keras_h5
from convert.standardisation import fit_standardisation, keras_featurewise_stats

__all__ = [
    "ConversionError",
    "convert_file",
    "fit_standardisation",
    "keras_featurewise_stats",
    "load_keras",
    "read_keras_h5",
]
