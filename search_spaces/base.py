"""Search-space base class: declarative choices, validation, encodings, cost lowering."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from search_spaces.arch import Arch, InvalidArchitectureError


@dataclass(frozen=True)
class CostTable:
    """What the cost model needs from a space, independent of any device.

    ``features[s, o, f]`` is feature ``f`` (names in ``feature_names``) of op ``o``
    at slot ``s``; :meth:`SearchSpace.lower` maps architectures to one op id per slot.
    Slots with fewer ops than ``features.shape[1]`` are zero-padded.
    """

    features: np.ndarray  # float64 [S, O, F]
    feature_names: tuple[str, ...]
    slot_names: tuple[str, ...]


class SearchSpace(ABC):
    """A set of architectures defined by named, ordered choices.

    Subclasses define ``choices`` and how an architecture becomes their supernet's
    spec; everything else (validation, sampling, encodings) is generic.
    """

    name: str = "?"

    def __init__(self, choices: Mapping[str, Sequence[Any]]):
        self.choices: dict[str, tuple[Any, ...]] = {k: tuple(v) for k, v in choices.items()}
        self.keys: tuple[str, ...] = tuple(self.choices)
        self._index = {k: {v: i for i, v in enumerate(vals)} for k, vals in self.choices.items()}

    # --- architectures ------------------------------------------------------------------
    def validate(self, values: Mapping[str, Any]) -> None:
        """Raise :class:`InvalidArchitectureError` naming the first offending key."""
        if not isinstance(values, Mapping):
            raise InvalidArchitectureError(f"an architecture of space {self.name!r} must be a mapping of choice -> value, got {type(values).__name__}")
        unknown = sorted(set(values) - set(self.choices))
        if unknown:
            raise InvalidArchitectureError(f"space {self.name!r} has no choice {unknown[0]!r}; choices are {list(self.keys)}")
        missing = [k for k in self.keys if k not in values]
        if missing:
            raise InvalidArchitectureError(f"architecture for space {self.name!r} is missing choice {missing[0]!r} (allowed values {list(self.choices[missing[0]])})")
        for k in self.keys:
            v = values[k]
            if v not in self._index[k] or isinstance(v, bool):
                raise InvalidArchitectureError(f"{k}={v!r} is not allowed in space {self.name!r}; allowed values: {list(self.choices[k])}")

    def arch(self, values: Mapping[str, Any]) -> Arch:
        """Validated, canonical :class:`Arch` (choices that have no effect are normalised)."""
        self.validate(values)
        return Arch(self.canonicalize(dict(values)))

    def canonicalize(self, values: dict[str, Any]) -> dict[str, Any]:
        """Normalise choices that do not change the network (e.g. blocks beyond a stage's depth)."""
        return values

    def sample(self, rng: np.random.Generator) -> Arch:
        return self.arch({k: v[rng.integers(len(v))] for k, v in self.choices.items()})

    def smallest(self) -> Arch:
        return self.arch({k: min(v) for k, v in self.choices.items()})

    def largest(self) -> Arch:
        return self.arch({k: max(v) for k, v in self.choices.items()})

    # --- encodings ------------------------------------------------------------------------
    def encode(self, arch: Mapping[str, Any]) -> np.ndarray:
        """Fixed-length int vector: the index of each choice's value, in ``self.keys`` order."""
        self.validate(arch)
        return np.array([self._index[k][arch[k]] for k in self.keys], dtype=np.int64)

    def encode_batch(self, archs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if not archs:
            return np.zeros((0, len(self.keys)), dtype=np.int64)
        return np.stack([self.encode(a) for a in archs])

    def decode(self, code: Sequence[int]) -> Arch:
        code = np.asarray(code)
        if code.shape != (len(self.keys),):
            raise InvalidArchitectureError(f"encoding for space {self.name!r} must have length {len(self.keys)}, got shape {code.shape}")
        values = {}
        for k, i in zip(self.keys, code):
            if not 0 <= i < len(self.choices[k]):
                raise InvalidArchitectureError(f"index {int(i)} out of range for {k!r} ({len(self.choices[k])} values)")
            values[k] = self.choices[k][int(i)]
        return self.arch(values)

    # --- what subclasses provide ------------------------------------------------------------
    @abstractmethod
    def num_architectures(self) -> int:
        """Number of distinct networks (after canonicalisation)."""

    @abstractmethod
    def build_supernet(self) -> nn.Module:
        """Fresh supernet holding every architecture of the space."""

    @abstractmethod
    def to_spec(self, arch: Mapping[str, Any]) -> Any:
        """Translate an architecture to the supernet's own typed spec."""

    @abstractmethod
    def cost_table(self) -> CostTable:
        """Per-slot, per-op cost features for the cost model."""

    @abstractmethod
    def lower(self, codes: np.ndarray) -> np.ndarray:
        """Op id per slot, int32 ``[B, S]``, for encoded architectures ``[B, len(keys)]`` (vectorised)."""

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one input image."""

    def build_static(self, arch: Mapping[str, Any], supernet: nn.Module | None = None) -> nn.Module:
        """Standalone network for ``arch``: with ``supernet``'s weights, else freshly initialised."""
        spec = self.to_spec(self.arch(arch))
        source = supernet if supernet is not None else self.build_supernet()
        return source.extract(spec)

    def build_standalone(self, arch: Mapping[str, Any], seed: int = 0) -> nn.Module:
        """A network for ``arch`` with fresh weights of its own shapes, for training from scratch."""
        import torch

        from supernets.init import init_weights

        torch.manual_seed(seed)
        return init_weights(self.build_static(arch))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "choices": {k: list(v) for k, v in self.choices.items()}, "num_architectures": self.num_architectures()}
