"""Search-space base class: declarative choices, validation, encodings, cost lowering."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
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


@dataclass(frozen=True)
class MetricTable:
    """What each op of :meth:`SearchSpace.cost_table` contributes to its network's size, ``[S, O]`` each.

    A network's parameters and MACs are the sums over its slots' ops; its peak activations (elements of the
    largest input plus output of any one layer, batch 1) the maximum over them.
    """

    params: np.ndarray
    macs: np.ndarray
    activations: np.ndarray


class SearchSpace(ABC):
    """A set of architectures defined by named, ordered choices.

    Subclasses define ``choices`` and how an architecture becomes their supernet's
    spec; everything else (validation, sampling, encodings) is generic.
    """

    name: str = "?"
    # the network configuration (widths, activations, ...) when the space has one; part of its identity
    cfg: Any = None

    def __init__(self, choices: Mapping[str, Sequence[Any]]):
        self.choices: dict[str, tuple[Any, ...]] = {k: tuple(v) for k, v in choices.items()}
        self.keys: tuple[str, ...] = tuple(self.choices)
        self._index = {k: {v: i for i, v in enumerate(vals)} for k, vals in self.choices.items()}

    # --- architectures ------------------------------------------------------------------
    def validate(self, values: Mapping[str, Any]) -> None:
        """Raise :class:`InvalidArchitectureError` naming the first offending key."""
        self._check_keys(values, "an architecture", InvalidArchitectureError)
        for k in self.keys:
            v = values[k]
            if v not in self._index[k] or isinstance(v, bool):
                raise InvalidArchitectureError(
                    f"{k}={v!r} is not allowed in space {self.name!r}; allowed values:"
                    f" {list(self.choices[k])}"
                )

    def _check_keys(self, values: Any, what: str, error: type[Exception]) -> None:
        """``values`` must be a mapping with exactly this space's choice names (errors name the first key
        off)."""
        if not isinstance(values, Mapping):
            raise error(
                f"{what} for space {self.name!r} must be a mapping of choice -> value, got"
                f" {type(values).__name__}"
            )
        unknown = sorted(set(values) - set(self.choices))
        if unknown:
            raise error(f"space {self.name!r} has no choice {unknown[0]!r}; choices are {list(self.keys)}")
        missing = [k for k in self.keys if k not in values]
        if missing:
            raise error(
                f"{what} for space {self.name!r} is missing choice {missing[0]!r} (allowed values"
                f" {list(self.choices[missing[0]])})"
            )

    def arch(self, values: Mapping[str, Any]) -> Arch:
        """Validated, canonical :class:`Arch` (choices that have no effect are normalised)."""
        self.validate(values)
        return Arch(self.canonicalize(dict(values)))

    def parse_arch(self, text: str) -> Arch:
        """An architecture written as text (a CSV cell, a JSON line): its JSON object by default.

        A space with a string form of its own (a cell string, a block string)
        overrides this to accept that form too, so files users bring name
        architectures the way the space's own literature does.
        """
        import json

        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise InvalidArchitectureError(
                f"{text!r} is not an architecture of space {self.name!r}:"
                f" not a JSON object of choice -> value ({exc})"
            ) from None
        return self.arch(data)

    def format_arch(self, arch: Mapping[str, Any]) -> str:
        """``arch``'s network as text :meth:`parse_arch` reads back: its canonical JSON by default, the
        space's own string form where it has one (what messages and reports show)."""
        return self.arch(arch).to_json()

    def canonicalize(self, values: dict[str, Any]) -> dict[str, Any]:
        """Normalise choices that do not change the network (e.g. blocks beyond a stage's depth)."""
        return values

    def used_keys(self, arch: Mapping[str, Any]) -> tuple[str, ...]:
        """The choice keys whose value changes ``arch``'s network, in ``self.keys`` order.

        Changing a used key's value gives another network (another canonical
        :class:`Arch`); changing any other key's value gives the same one (it is
        what :meth:`canonicalize` normalises). ``arch`` is an architecture of the
        space, canonical or not. The default, for spaces whose :meth:`canonicalize`
        is the identity, is every key; a space that normalises choices returns the
        others (controllers mutate and credit only these).
        """
        return self.keys

    def sample(self, rng: np.random.Generator) -> Arch:
        return self.arch({k: v[rng.integers(len(v))] for k, v in self.choices.items()})

    def enumerate(self) -> list[Arch]:
        """Every distinct architecture (after canonicalisation), in a fixed order; small spaces only."""
        from itertools import product

        seen: dict[str, Arch] = {}
        for values in product(*self.choices.values()):
            a = self.arch(dict(zip(self.keys, values)))
            seen.setdefault(a.id, a)
        return list(seen.values())

    def smallest(self) -> Arch:
        return self.arch({k: min(v) for k, v in self.choices.items()})

    def reference_arch(self) -> Arch:
        """What a relative budget ("60%") is a share of: the largest architecture, or (for a space converted
        from a user's model) that model's own architecture."""
        return self.largest()

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

    def _checked_codes(self, codes: np.ndarray) -> np.ndarray:
        """``codes`` as an int array ``[B, len(keys)]`` (what :meth:`lower` takes), else a ValueError."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != len(self.keys):
            raise ValueError(f"codes must have shape [B, {len(self.keys)}], got {codes.shape}")
        return codes

    def decode(self, code: Sequence[int]) -> Arch:
        code = np.asarray(code)
        if code.shape != (len(self.keys),):
            raise InvalidArchitectureError(
                f"encoding for space {self.name!r} must have length {len(self.keys)}, got shape {code.shape}"
            )
        values = {}
        for k, i in zip(self.keys, code):
            if not 0 <= i < len(self.choices[k]):
                raise InvalidArchitectureError(
                    f"index {int(i)} out of range for {k!r} ({len(self.choices[k])} values)"
                )
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

    def arch_from_spec(self, spec: Any) -> Arch:
        """The architecture whose :meth:`to_spec` is ``spec`` (the inverse; a single-path supernet's choice is
        a spec).

        Spaces whose supernets can choose an architecture themselves implement it;
        the default says the space has none.
        """
        raise NotImplementedError(
            f"search space {self.name!r} ({type(self).__name__}) cannot turn a supernet spec back into an"
            " architecture"
        )

    def build_static(self, arch: Mapping[str, Any], supernet: nn.Module | None = None) -> nn.Module:
        """Standalone network for ``arch``: with ``supernet``'s weights, else freshly initialised."""
        spec = self.to_spec(self.arch(arch))
        source = supernet if supernet is not None else self.build_supernet()
        return source.extract(spec)

    def op_modules(self) -> list[tuple[int, int, nn.Module, tuple[int, ...]]]:
        """``(slot, op, module, input_shape)`` for every op the cost table lists, to time one by one.

        Spaces that return ``[]`` (the default) are calibrated with the analytical
        model only; those that list their ops get a measured lookup table.
        """
        return []

    def fixed_modules(self) -> list[tuple[int, int, list[tuple[nn.Module, tuple[int, ...]]]]]:
        """``(slot, op, [(module, input_shape), ...])`` for the ops :meth:`op_modules` does not list (the
        parts
        every network of the op runs: stem, head), each as the plain modules that compute it.

        With :meth:`op_modules` they cover every layer of every network, which is what
        :meth:`metric_table` counts.
        """
        raise NotImplementedError(
            f"search space {self.name!r} ({type(self).__name__}) does not list its fixed parts"
        )

    def metric_table(self) -> MetricTable:
        """Parameters, MACs and peak activations of every op, counted on the plain modules that compute it."""
        cached = self.__dict__.get("_metric_table")
        if cached is not None:
            return cached
        from supernets.profiling import forward_metrics

        n_slots, n_ops = self.cost_table().features.shape[:2]
        params, macs, acts = (
            np.zeros((n_slots, n_ops)),
            np.zeros((n_slots, n_ops)),
            np.zeros((n_slots, n_ops)),
        )
        parts = [(s, o, [(m, shape)]) for s, o, m, shape in self.op_modules()] + self.fixed_modules()
        measured: dict[tuple[int, tuple[int, ...]], tuple[float, float, float]] = {}
        for slot, op, modules in parts:
            for module, shape in modules:
                key = (id(module), tuple(shape))
                if key not in measured:  # one module object may stand for several slots (a ViT layer)
                    measured[key] = forward_metrics(module, shape)
                p, m, a = measured[key]
                params[slot, op] += p
                macs[slot, op] += m
                acts[slot, op] = max(acts[slot, op], a)
        table = MetricTable(params, macs, acts)
        self.__dict__["_metric_table"] = table
        return table

    def op_descriptions(self) -> list[list[str]]:
        """Human-readable name of each op of each slot (for latency-table files users fill in)."""
        shape = self.cost_table().features.shape
        return [[f"op {o}" for o in range(shape[1])] for _ in range(shape[0])]

    def build_standalone(self, arch: Mapping[str, Any], seed: int = 0) -> nn.Module:
        """A network for ``arch`` with fresh weights of its own shapes, for training from scratch.

        Seeded by ``seed`` alone; the caller's global torch RNG is left as it was.
        """
        from supernets.init import init_weights

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return init_weights(self.build_static(arch))

    # --- probabilities over architectures (differentiable cost) -----------------------------
    def op_probabilities(self, probs: Mapping[str, torch.Tensor], validate: bool = True) -> torch.Tensor:
        """Probability of each op at each slot of :meth:`cost_table`, ``[S, O]`` (differentiable).

        ``probs`` holds one probability vector per choice key (length = number of
        values of that key, in ``self.choices`` order); choices are independent
        categoricals. Row ``s`` is the distribution of ``lower(codes)[:, s]`` when
        the codes are drawn from ``probs``, so ``(P * table).sum()`` is the expected
        value of any linear per-(slot, op) cost. Spaces may also accept a leading
        batch dimension (``[B, n]`` per key -> ``[B, S, O]``). ``validate=False``
        skips the value checks (they read the tensors back, a device sync).
        """
        raise NotImplementedError(
            f"search space {self.name!r} ({type(self).__name__}) does not implement op_probabilities, "
            "so it has no differentiable expected cost"
        )

    def mixed_forward(
        self, supernet: nn.Module, x: torch.Tensor, probs: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """Logits of the ``probs``-weighted mixture of all architectures in one pass (gradient-based search).

        Spaces whose supernet entangles every choice (nested slices) implement it
        at the cost of the largest subnetwork; one-hot ``probs`` must give exactly
        that architecture's logits. Called with the supernet at its largest choice.
        """
        raise NotImplementedError(
            f"search space {self.name!r} ({type(self).__name__}) has no mixed (weight-entangled) forward, so"
            " gradient-based controllers (darts, gdas) cannot search it; use an mbv3-family space (mbv3,"
            " tiny, timm:...) or another controller"
        )

    def probability_tensors(
        self, probs: Mapping[str, Any], validate: bool = True
    ) -> tuple[dict[str, torch.Tensor], tuple[int, ...]]:
        """Checked per-choice probability tensors (common floating dtype and device) and their batch shape.

        Every key of the space must be present and no other; the last dimension of
        ``probs[k]`` must be ``len(self.choices[k])`` and leading (batch) dimensions
        must agree across keys. With ``validate`` the values must also be finite,
        non-negative and sum to 1 along the last dimension (within a tolerance
        scaled to the dtype). Non-tensors and integer tensors become float64.
        Raises ``ValueError`` naming the offending key.
        """
        self._check_keys(probs, "probabilities", ValueError)
        tensors: dict[str, torch.Tensor] = {}
        for k in self.keys:
            t = (
                probs[k]
                if isinstance(probs[k], torch.Tensor)
                else torch.as_tensor(np.asarray(probs[k], dtype=np.float64))
            )
            if not (t.is_floating_point() or t.is_complex()):
                t = t.to(torch.float64)
            if t.is_complex():
                raise ValueError(f"probabilities of {k!r} must be real, got dtype {t.dtype}")
            n = len(self.choices[k])
            if t.ndim < 1 or t.shape[-1] != n:
                raise ValueError(
                    f"probabilities of {k!r} must have length {n} (one per value {list(self.choices[k])}) in"
                    f" the last dimension, got shape {tuple(t.shape)}"
                )
            tensors[k] = t
        first = self.keys[0]
        batch = tuple(tensors[first].shape[:-1])
        devices = {t.device for t in tensors.values()}
        for k, t in tensors.items():
            if tuple(t.shape[:-1]) != batch:
                raise ValueError(
                    f"probabilities of {k!r} have batch shape {tuple(t.shape[:-1])}, but {first!r} has"
                    f" {batch}; all keys need the same leading dimensions"
                )
        if len(devices) > 1:
            raise ValueError(
                f"probabilities of space {self.name!r} are on several devices"
                f" {sorted(str(d) for d in devices)}; put them on one"
            )
        dtype = tensors[first].dtype
        for t in tensors.values():
            dtype = torch.promote_types(dtype, t.dtype)
        tensors = {k: t.to(dtype) for k, t in tensors.items()}
        if validate:
            eps = torch.finfo(dtype).eps
            with torch.no_grad():
                for k, t in tensors.items():
                    if not bool(torch.isfinite(t).all()):
                        raise ValueError(
                            f"probabilities of {k!r} must be finite, got {t.detach().cpu().tolist()}"
                        )
                    if bool((t < 0).any()):
                        raise ValueError(
                            f"probabilities of {k!r} must be >= 0, got {t.detach().cpu().tolist()}"
                        )
                    tol = max(1e-5, 8 * t.shape[-1] * eps)
                    err = float((t.sum(-1) - 1).abs().max()) if t.numel() else 0.0
                    if err > tol:
                        raise ValueError(
                            f"probabilities of {k!r} must sum to 1 over the last dimension (off by {err:.3g},"
                            f" tolerance {tol:.3g})"
                        )
        return tensors, batch

    def uniform_probabilities(
        self,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        requires_grad: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Uniform probability vector per choice (fresh leaf tensors)."""
        return {
            k: torch.full((len(v),), 1.0 / len(v), dtype=dtype, device=device, requires_grad=requires_grad)
            for k, v in self.choices.items()
        }

    def one_hot_probabilities(
        self,
        arch: Mapping[str, Any],
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Point mass on ``arch``: one one-hot vector per choice (validates ``arch``)."""
        code = self.encode(arch)
        out = {}
        for k, i in zip(self.keys, code):
            t = torch.zeros(len(self.choices[k]), dtype=dtype, device=device)
            t[int(i)] = 1.0
            out[k] = t
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "choices": {k: list(v) for k, v in self.choices.items()},
            "num_architectures": self.num_architectures(),
        }
