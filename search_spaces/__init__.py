"""Declarative search spaces: choices, validation, encodings; each builds its supernet.

A family is one module that registers itself with :data:`search_spaces.registry.SPACES`;
importing it here is what makes ``--space=<name>`` find it.
"""

from search_spaces import mbv3 as _mbv3  # noqa: F401  (registers mbv3, tiny)
from search_spaces import nb201 as _nb201  # noqa: F401  (registers nb201)
from search_spaces import resnet as _resnet  # noqa: F401  (registers resnet)
from search_spaces import resnet_pool as _resnet_pool  # noqa: F401  (registers resnet20_pool)
from search_spaces import timm_space as _timm_space  # noqa: F401  (registers the timm:<model> prefix)
from search_spaces import torchvision_space as _torchvision_space  # noqa: F401  (the torchvision:<model> prefix)
from search_spaces import vit as _vit  # noqa: F401  (registers vit)
from search_spaces.arch import Arch, InvalidArchitectureError
from search_spaces.base import CostTable, SearchSpace
from search_spaces.kinds import SUPERNET_KINDS, build_supernet, list_supernet_kinds, register_supernet_kind
from search_spaces.registry import (
    SPACES,
    Registry,
    UnknownNameError,
    create_space,
    list_spaces,
    register_space,
)

__all__ = [
    "SPACES",
    "SUPERNET_KINDS",
    "Arch",
    "CostTable",
    "InvalidArchitectureError",
    "Registry",
    "SearchSpace",
    "UnknownNameError",
    "build_supernet",
    "create_space",
    "list_spaces",
    "list_supernet_kinds",
    "register_space",
    "register_supernet_kind",
]
