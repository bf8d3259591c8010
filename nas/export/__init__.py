"""Export of a found subnetwork: extraction and verification (``exporter``), the formats (``formats``, one
registry; ``timm_format`` adds timm, ``original_format`` a converted space's original family,
``runtime_formats`` the on-device runtimes), and :func:`load_subnet` to load the torch format back.

Importing the package registers every format.
"""

from nas.export import formats as _formats  # noqa: F401  (torch, torchscript, torch_export, onnx)
from nas.export import original_format as _original_format  # noqa: F401  (registers original)
from nas.export import runtime_formats as _runtime_formats  # noqa: F401  (openvino, executorch, litert)
from nas.export import timm_format as _timm_format  # noqa: F401  (registers timm)
