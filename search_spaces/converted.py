"""What every space converted from a user's model shares: the original as one architecture, its checkpoint,
its family.

A converted space (``timm:<model>``, ``torchvision:<model>``) is built around a
model of another library. Three things follow from that and live here:

- the model's own architecture (:attr:`ConvertedSpace.original_arch`) is what a
  relative budget (``"60%"``) is a share of (:meth:`reference_arch`);
- a local checkpoint of that model initialises the supernet so that this
  architecture computes exactly what the model computes, after which every
  elastic layer's channels are sorted by importance
  (:func:`supernets.importance.reorder_by_importance`, function-preserving);
- a found network goes back to the model's family (:meth:`to_original_state`,
  :meth:`original_layout`): the library's own model with a subset of its blocks
  and narrower layers.

Layers are matched by *order*: our static networks register their convolutions,
norms and linear layers in forward order, as timm and torchvision do, so the
``n``-th such layer of one is the ``n``-th of the other (kinds and strides
checked, shapes checked when copying).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from search_spaces.arch import Arch
from search_spaces.base import CostTable, SearchSpace
from search_spaces.errors import UserError
from supernets.extract import slice_like
from supernets.importance import reorder_by_importance
from supernets.profiling import FEATURES, forward_features

LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.LayerNorm)
DEFAULT_RATIOS = (0.5, 0.75, 1.0)


class ConversionError(UserError, ValueError):
    """A model, block or checkpoint the converter cannot map (the message names the module and construct)."""


@dataclass(frozen=True)
class Where:
    """What a message points at: the model, and a module path inside it (``where / "se"`` goes deeper)."""

    model: str
    path: str = ""

    def __truediv__(self, child: object) -> Where:
        return Where(self.model, f"{self.path}.{child}" if self.path else str(child))

    def __str__(self) -> str:
        return f"{self.model}: module {self.path!r}" if self.path else self.model


def ordered_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's convolutions, batch norms, linear and layer norms, in registration (forward) order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LAYERS)]


def _kind(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        return "depthwise conv" if m.groups > 1 and m.groups == m.in_channels else "conv"
    return next(t.__name__ for t in LAYERS if isinstance(m, t))


def map_by_order(ours: nn.Module, theirs: nn.Module, what: str) -> dict[str, str]:
    """Tensor name in ``ours`` -> tensor name in ``theirs``, pairing their layers in order.

    Raises :class:`ConversionError` naming the first layer pair whose kind or
    stride differs, or a layer count that differs.
    """
    a, b = ordered_layers(ours), ordered_layers(theirs)
    if len(a) != len(b):
        raise ConversionError(
            f"{what}: {len(b)} convolution/norm/linear layers, the converted network {len(a)}; its structure"
            " is not the one the converter reads"
        )
    out = {}
    for (na, ma), (nb, mb) in zip(a, b):
        if _kind(ma) != _kind(mb) or (isinstance(ma, nn.Conv2d) and ma.stride != mb.stride):
            raise ConversionError(
                f"{what}: module {nb!r} ({type(mb).__name__}, {_kind(mb)}) does not correspond to the"
                f" converted network's {na!r} ({_kind(ma)})"
            )
        local = [k for k, _ in ma.named_parameters(recurse=False)] + [
            k for k, _ in ma.named_buffers(recurse=False)
        ]
        for k in local:
            out[f"{na}.{k}" if na else k] = f"{nb}.{k}" if nb else k
    return out


def adapt_tensor(
    name: str, have: torch.Tensor, want: torch.Size, first_conv: bool, classifier: bool
) -> torch.Tensor | None:
    """``have`` (a checkpoint tensor) shaped for ``want``.

    A 3-channel stem is summed for 1-channel data (as timm's ``adapt_input_conv``), a classifier of another
    class count is skipped (None); anything else must match.
    """
    if have.shape == want:
        return have
    if first_conv and have.dim() == 4 and want[1] == 1 and have.shape[1] == 3 and have.shape[0] == want[0]:
        return have.sum(dim=1, keepdim=True)
    if classifier:
        return None
    raise ConversionError(
        f"checkpoint tensor {name!r} has shape {tuple(have.shape)}, the model {tuple(want)}: is it a"
        " checkpoint of this model (and of its model_kwargs)?"
    )


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """A local state dict (a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped)."""
    p = Path(path)
    if not p.is_file():
        raise ConversionError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ConversionError(f"checkpoint {path} is not a torch state dict ({type(exc).__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"checkpoint {path} is not a state dict (a mapping of names to tensors)")
    return dict(state)


def check_ratios(ratios: Any, what: str) -> tuple[float, ...]:
    """Ratios of the model's own size: each in (0, 1] (choices are never larger than the model)."""
    try:
        values = tuple(sorted({float(r) for r in ratios}))
    except (TypeError, ValueError):
        raise ConversionError(f"{what} must be a list of numbers in (0, 1], got {ratios!r}") from None
    if not values or values[0] <= 0 or values[-1] > 1:
        raise ConversionError(
            f"{what}={list(ratios)} is not allowed: ratios are shares of the model's own size, in (0, 1]"
            " (a space is never larger than its model)"
        )
    return values


class ConvertedSpace(SearchSpace):
    """A space built around a timm or torchvision model (list it first when combining with a concrete space).

    Subclasses set :attr:`original_arch` and the model's identity
    (:attr:`library`, :attr:`model_name`, :attr:`model_kwargs`) and implement
    :meth:`original_layout`; they may override :meth:`to_original_state` /
    :meth:`from_original_state` where layers do not pair one to one.
    """

    original_arch: Arch
    library: str = "timm"  # "timm" | "torchvision"
    model_name: str = ""
    model_kwargs: dict[str, Any]
    checkpoint: str | None = None
    reorder: bool = True

    def reference_arch(self) -> Arch:
        """The original model's architecture: a ``"60%"`` budget is 60% of what the original costs."""
        return self.original_arch

    # --- the original model ---------------------------------------------------------------------
    def cost_table_from_modules(self, slots: int, n_ops: int, names: tuple[str, ...]) -> CostTable:
        """The cost table measured from :meth:`op_modules` and :meth:`fixed_modules` (their features summed
        per slot and op): exact for a converted space, whose ops are the model's own layers."""
        feats = np.zeros((slots, n_ops, len(FEATURES)))
        for slot, op, module, shape in self.op_modules():
            feats[slot, op], _ = forward_features(module, shape)
        for slot, op, parts in self.fixed_modules():
            for module, shape in parts:
                feats[slot, op] += forward_features(module, shape)[0]
        return CostTable(feats, FEATURES, names)

    def create_original(self, **overrides: Any) -> nn.Module:
        """The original model with random weights (``pretrained=False``: nothing is downloaded)."""
        kwargs = {**self.model_kwargs, **overrides}
        if self.library == "timm":
            import timm

            return timm.create_model(self.model_name, pretrained=False, **kwargs)
        import torchvision

        return torchvision.models.get_model(self.model_name, weights=None, **kwargs)

    def original_kwargs(self) -> dict[str, Any]:
        """Constructor arguments that shape the exported model like the data (classes, input channels)."""
        out: dict[str, Any] = {"num_classes": self.cfg.num_classes, **self.model_kwargs}
        if self.library == "timm":
            out["in_chans"] = self.cfg.in_channels
        return out

    def original_layout(self, arch: Arch) -> dict[str, Any]:
        """How the family's model holds ``arch``: ``keep`` (Sequential path -> indices of the children kept)
        and ``heads`` (attention module path -> number of heads)."""
        raise NotImplementedError

    def to_original_state(self, static: nn.Module, model: nn.Module) -> dict[str, torch.Tensor]:
        """``static``'s tensors under the names of ``model`` (the family's model holding the same layers)."""
        names = map_by_order(static, model, f"{self.library} model {self.model_name!r}")
        state = static.state_dict()
        return {theirs: state[ours].detach().clone() for ours, theirs in names.items()}

    def from_original_state(
        self, state: Mapping[str, torch.Tensor], static: nn.Module, model: nn.Module
    ) -> None:
        """Fill ``static`` (the original architecture) from the original model's state dict ``state``."""
        what = f"{self.library} model {self.model_name!r}"
        names = map_by_order(static, model, what)
        _fill(static, state, names, what)

    # --- the checkpoint -------------------------------------------------------------------------
    def init_from_checkpoint(self, net: nn.Module) -> dict[str, Any]:
        """Load :attr:`checkpoint` into ``net`` at the original architecture, then sort its channels."""
        if self.checkpoint is None:
            return {}
        state = read_checkpoint(self.checkpoint)
        model = self.create_original(num_classes=self.cfg.num_classes)
        spec = self.to_spec(self.original_arch)
        static = net.extract(spec)
        self.from_original_state(state, static, model)
        write_into(net, static)
        report: dict[str, Any] = {"checkpoint": self.checkpoint}
        if self.reorder:
            report.update(reorder_by_importance(net, spec))
        return report


def _fill(static: nn.Module, state: Mapping[str, torch.Tensor], names: Mapping[str, str], what: str) -> None:
    """Copy ``state[theirs]`` into ``static[ours]`` for every pair; every checkpoint tensor must be used."""
    ours_state = static.state_dict()
    layers = ordered_layers(static)
    first = layers[0][0]
    last = next(n for n, m in reversed(layers) if isinstance(m, nn.Linear))
    used = set()
    for ours, theirs in names.items():
        if theirs not in state:
            raise ConversionError(
                f"checkpoint of {what} has no tensor {theirs!r}: is it a checkpoint of this model?"
            )
        used.add(theirs)
        module = ours.rsplit(".", 1)[0]
        t = adapt_tensor(theirs, state[theirs], ours_state[ours].shape, module == first, module == last)
        if t is not None:
            with torch.no_grad():
                ours_state[ours].copy_(t)
    extra = sorted(set(state) - used)
    if extra:
        raise ConversionError(
            f"checkpoint tensor {extra[0]!r} has no place in {what} ({len(extra)} such tensors): is it a"
            " checkpoint of this model?"
        )


@torch.no_grad()
def write_into(net: nn.Module, static: nn.Module) -> None:
    """Write ``static``'s tensors into the same-named tensors of supernet ``net`` (prefixes, centred)."""
    target = net.state_dict()
    for name, t in static.state_dict().items():
        dst = target[name]
        if t.dim() == 0:
            dst.copy_(t)
        else:
            slice_like(dst, t.shape).copy_(t)


__all__ = [
    "DEFAULT_RATIOS",
    "ConversionError",
    "ConvertedSpace",
    "Where",
    "adapt_tensor",
    "check_ratios",
    "map_by_order",
    "ordered_layers",
    "read_checkpoint",
    "write_into",
]
