"""Supernet checkpoints: where they live, what they hold, and loading them back safely.

A checkpoint is one ``torch.save`` dict (format :data:`CHECKPOINT_FORMAT`): model,
optimizer, schedule, AMP scaler, EMA weights, every RNG state, the position
inside the epoch and the run's fingerprint (space and data it was trained on).
It is written atomically by the trainer; loading checks the format and the
fingerprint, so a corrupt or foreign file stops the run with one line and is
never overwritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.run.context import RunContext
from search_spaces.errors import UserError

CHECKPOINT_FORMAT = 2


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used for this run (corrupt, foreign or incompatible)."""


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "supernet_last.pt"


def load_checkpoint(path: Path, expected_fingerprint: dict[str, Any]) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {exc}); move it away to start"
            " over"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a supernet checkpoint of this engine version (format {CHECKPOINT_FORMAT})"
        )
    if state.get("fingerprint") != expected_fingerprint:
        raise CheckpointError(
            f"checkpoint {path} was trained with a different space or data set "
            f"({state.get('fingerprint')} vs {expected_fingerprint}); use another --run-dir"
        )
    return state


def load_supernet(ctx: RunContext) -> nn.Module:
    """The trained supernet of a run directory (EMA weights when training kept them)."""
    path = checkpoint_path(ctx.run_dir)
    if not path.exists():
        raise CheckpointError(
            f"no trained supernet in {ctx.run_dir} (expected {path}); run `nas train --run-dir {ctx.run_dir}`"
            " first"
        )
    state = load_checkpoint(path, ctx.fingerprint())
    if state["epoch"] < state["epochs"]:
        raise CheckpointError(
            f"supernet training in {ctx.run_dir} stopped at epoch {state['epoch']}/{state['epochs']}; "
            f"re-run `nas train --run-dir {ctx.run_dir}` to finish it"
        )
    net = ctx.build_supernet()
    net.load_state_dict(state["model"])
    if state.get("ema") is not None:
        apply_ema(net, state["ema"])
    return net.to(ctx.device)


@torch.no_grad()
def apply_ema(model: nn.Module, ema: dict[str, torch.Tensor]) -> None:
    """Copy the averaged weights a checkpoint (or a trainer) kept into ``model``'s parameters."""
    for name, p in model.named_parameters():
        p.copy_(ema[name])
