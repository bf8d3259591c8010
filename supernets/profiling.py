"""Count the cost features of a module's forward pass (compute, memory traffic, op count).

The cost model predicts latency as a device-specific combination of these
features, so they are counted by running the real static layers once on a dummy
input rather than by re-deriving shapes by hand (which drifts from the code).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

FEATURES = ("dense_macs", "depthwise_macs", "memory_bytes", "ops")
"""Feature order of :func:`forward_features`:

- dense_macs: multiply-accumulates of dense/pointwise convs and linear layers
- depthwise_macs: multiply-accumulates of grouped (depthwise) convs, which run far below peak
- memory_bytes: float32 bytes read and written by every leaf op (inputs, outputs, weights)
- ops: number of leaf ops executed (per-op dispatch overhead dominates small layers)
"""

_BYTES = 4


def _leaf(module: nn.Module) -> bool:
    return len(list(module.children())) == 0 and not isinstance(module, (nn.Identity, nn.Dropout))


def add_features(shape: tuple[int, ...]) -> np.ndarray:
    """Features of adding one batch-1 tensor of ``shape`` into another (a cell's node accumulating an edge's
    output): no MACs, reads two tensors and writes one, one op. Hooks on modules never see it, so a space
    whose networks add tensors counts it itself."""
    feats = np.zeros(len(FEATURES))
    feats[2] = 3 * int(np.prod(shape)) * _BYTES
    feats[3] = 1
    return feats


@torch.no_grad()
def forward_features(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Features of one forward pass of ``module`` on a batch-1 input, and its output shape."""
    feats = np.zeros(len(FEATURES))

    def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        n_in, n_out = x.numel(), output.numel()
        n_w = sum(p.numel() for p in mod.parameters(recurse=False))
        if isinstance(mod, nn.Conv2d):
            macs = output.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
            feats[1 if mod.groups > 1 else 0] += macs
        elif isinstance(mod, nn.Linear):
            feats[0] += output.numel() * mod.in_features
        feats[2] += (n_in + n_out + n_w) * _BYTES
        feats[3] += 1

    handles = [m.register_forward_hook(hook) for m in module.modules() if _leaf(m)]
    was_training = module.training
    try:
        module.eval()
        out = module(torch.zeros(1, *input_shape))
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return feats, tuple(out.shape[1:])


@torch.no_grad()
def forward_metrics(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, float, float]:
    """``(parameters, MACs, peak activations)`` of one batch-1 forward pass of ``module``.

    Peak activations is the largest number of input plus output elements of any single leaf op: what must be
    live at once while that op runs (the activation memory a deployed network needs, up to its runtime's
    reuse).
    """
    macs = peak = 0.0

    def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs, peak
        if isinstance(mod, nn.Conv2d):
            macs += output.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            macs += output.numel() * mod.in_features
        peak = max(peak, float(inputs[0].numel() + output.numel()))

    handles = [m.register_forward_hook(hook) for m in module.modules() if _leaf(m)]
    was_training = module.training
    try:
        module.eval()
        module(torch.zeros(1, *input_shape))
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return float(sum(p.numel() for p in module.parameters())), float(macs), peak
