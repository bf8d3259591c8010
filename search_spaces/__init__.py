"""Declarative search spaces: choices, validation, encodings; each builds its supernet."""

from search_spaces.arch import Arch, InvalidArchitectureError
from search_spaces.base import CostTable, SearchSpace
from search_spaces.registry import create_space, list_spaces, register_space
from search_spaces.kinds import build_supernet, list_supernet_kinds, register_supernet_kind
from search_spaces import mbv3 as _mbv3  # noqa: F401  (registers mbv3, tiny)
from search_spaces import resnet_pool as _resnet_pool  # noqa: F401  (registers resnet20_pool)
from search_spaces import vit as _vit  # noqa: F401  (registers vit)
from search_spaces import resnet as _resnet  # noqa: F401  (registers resnet)

__all__ = ["Arch", "CostTable", "InvalidArchitectureError", "SearchSpace", "build_supernet", "create_space", "list_spaces", "list_supernet_kinds", "register_space", "register_supernet_kind"]
