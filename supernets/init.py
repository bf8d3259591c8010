"""Weight initialisation for networks trained from scratch (MobileNet/timm convention)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def init_weights(model: nn.Module) -> nn.Module:
    """Kaiming-normal (fan-out) convs, unit BN, small-normal classifier; biases zero.

    Used for standalone trainings, so that a network trained alone starts from
    the initialisation its own shapes call for, not from a slice of a larger one.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
