"""Generator weights: safetensors files that describe themselves, never pickle (docs/design.md, "Weights files").

One job per module:

- ``metadata``: what a file declares (``WeightsInfo``), encoded as JSON strings and checked back;
- ``header``: a safetensors file's header via ``safetensors.safe_open``, and one line on why a file is refused;
- ``shapes``: the tensors a generator config has, and what a mismatch looks like;
- ``format``: writing, describing and loading a generator (also a training checkpoint's);
- ``locate``: which file ``--weights`` (or its absence) stands for;
- ``keys``: the ``G/`` and ``D/`` prefixes of a training checkpoint's tensors;
- ``describe``: one line about a file for people;
- ``convert``: the reference code's pickled ``.pth`` generators turned into fgfem files.

The names below are what the rest of fgfem imports, as ``from fgfem.weights import ...``.
"""

from fgfem.weights.convert import PICKLE_WARNING, REFERENCE_KEY_MAP, convert_reference_checkpoint
from fgfem.weights.describe import describe_weights, summarise_training
from fgfem.weights.format import is_training_checkpoint, load_generator, read_weights_info, save_generator
from fgfem.weights.locate import RUN_EXPORT, locate_weights, resolve_weights
from fgfem.weights.metadata import DEFAULT_CROP_TEMPLATE, FORMAT, REQUIRED_METADATA, STORAGE_DTYPES, WeightsInfo
from fgfem.weights.shapes import expected_shapes

__all__ = [
    "DEFAULT_CROP_TEMPLATE",
    "FORMAT",
    "PICKLE_WARNING",
    "REFERENCE_KEY_MAP",
    "REQUIRED_METADATA",
    "RUN_EXPORT",
    "STORAGE_DTYPES",
    "WeightsInfo",
    "convert_reference_checkpoint",
    "describe_weights",
    "expected_shapes",
    "is_training_checkpoint",
    "load_generator",
    "locate_weights",
    "read_weights_info",
    "resolve_weights",
    "save_generator",
    "summarise_training",
]
