"""Declarative search spaces: choices, validation, encodings; each builds its supernet."""

from search_spaces.arch import Arch, InvalidArchitectureError
from search_spaces.base import CostTable, SearchSpace
from search_spaces.registry import create_space, list_spaces, register_space
from search_spaces import mbv3 as _mbv3  # noqa: F401  (registers mbv3, tiny)

__all__ = ["Arch", "CostTable", "InvalidArchitectureError", "SearchSpace", "create_space", "list_spaces", "register_space"]
