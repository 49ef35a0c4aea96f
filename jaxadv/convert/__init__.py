"""Conversion of the original Keras checkpoints into jaxadv checkpoints.

Command line: ``jaxadv-convert MODEL.h5 OUT_DIR`` or ``python -m jaxadv.convert MODEL.h5 OUT_DIR``
(from any folder once jaxadv is installed). Needs h5py (a jaxadv dependency), never TensorFlow;
``import jaxadv`` does not import this package. See ``jaxadv/convert/README.md`` for where each
original checkpoint comes from.
"""

from jaxadv.convert.core import convert_file, load_keras
from jaxadv.convert.keras_h5 import ConversionError, read_keras_h5
from jaxadv.convert.standardisation import fit_standardisation, keras_featurewise_stats

__all__ = [
    "ConversionError",
    "convert_file",
    "fit_standardisation",
    "keras_featurewise_stats",
    "load_keras",
    "read_keras_h5",
]
