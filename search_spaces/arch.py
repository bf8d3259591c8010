"""An architecture is data: a frozen, hashable mapping of choice names to values."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Iterator

from search_spaces.errors import UserError


class InvalidArchitectureError(UserError, ValueError):
    """An architecture that does not belong to a search space (names the key and the allowed values)."""


class Arch(Mapping[str, Any]):
    """Immutable choice-name -> value mapping with a stable id (hash of its canonical JSON)."""

    __slots__ = ("_items", "_hash", "_id")

    def __init__(self, values: Mapping[str, Any]):
        self._items = tuple(sorted((str(k), _plain(v)) for k, v in values.items()))
        self._hash = hash(self._items)
        self._id = hashlib.sha1(self.to_json().encode()).hexdigest()[:12]

    # Mapping protocol
    def __getitem__(self, key: str) -> Any:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Arch):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self == Arch(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Arch({self.id}, {dict(self._items)})"

    @property
    def id(self) -> str:
        """Stable 12-hex-digit id: the same choices give the same id in any process."""
        return self._id

    def to_dict(self) -> dict[str, Any]:
        return dict(self._items)

    def to_json(self) -> str:
        return json.dumps(dict(self._items), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Arch":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise InvalidArchitectureError(
                f"architecture JSON must be an object of choice -> value, got {type(data).__name__}"
            )
        return cls(data)


def _plain(value: Any) -> Any:
    """JSON-stable scalar: whole floats become ints so 4 and 4.0 hash alike."""
    if hasattr(value, "item"):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (bool, int, float, str)):
        return value
    raise InvalidArchitectureError(f"choice values must be numbers or strings, got {value!r}")
