"""Supernet training: sampled subnetworks per step, cosine schedule, per-epoch checkpoints, resume.

A checkpoint is written atomically after every epoch; re-running the same
command with the same run directory continues from the last finished epoch.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from nas.context import RunContext
from nas.evaluation import accuracy, recalibrate_bn
from nas.rundir import atomic_torch_save
from nas.sampling import get_rule

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used for this run (corrupt, foreign or incompatible)."""


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "supernet_last.pt"


def build_optimizer(model: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    # No weight decay on BN parameters and biases (1-D tensors), as is standard for MobileNets.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use sgd or adamw")


def cosine_with_warmup(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def load_checkpoint(path: Path, expected_fingerprint: dict[str, Any]) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {exc}); move it away to start over") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a supernet checkpoint of this engine (format {CHECKPOINT_FORMAT})")
    if state.get("fingerprint") != expected_fingerprint:
        raise CheckpointError(
            f"checkpoint {path} was trained with a different space or data set "
            f"({state.get('fingerprint')} vs {expected_fingerprint}); use another --run-dir"
        )
    return state


def load_supernet(ctx: RunContext) -> nn.Module:
    """The trained supernet of a run directory (for search and export)."""
    path = checkpoint_path(ctx.run_dir)
    if not path.exists():
        raise CheckpointError(f"no trained supernet in {ctx.run_dir} (expected {path}); run `nas train --run-dir {ctx.run_dir}` first")
    state = load_checkpoint(path, ctx.fingerprint())
    if state["epoch"] < state["epochs"]:
        raise CheckpointError(
            f"supernet training in {ctx.run_dir} stopped at epoch {state['epoch']}/{state['epochs']}; "
            f"re-run `nas train --run-dir {ctx.run_dir}` to finish it"
        )
    net = ctx.space.build_supernet()
    net.load_state_dict(state["model"])
    return net.to(ctx.device)


def train_supernet(ctx: RunContext) -> dict[str, Any]:
    """Train (or resume training) the run's supernet; returns final metrics."""
    cfg, tcfg = ctx.cfg, ctx.cfg.train
    torch.manual_seed(cfg.seed)
    net = ctx.space.build_supernet().to(ctx.device)
    rule = get_rule(tcfg.sampler)
    rng = np.random.default_rng(cfg.seed)
    opt = build_optimizer(net, tcfg)
    steps_per_epoch = len(ctx.loader("train", shuffle=True, epoch=0))
    total = tcfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(total, int(tcfg.warmup_epochs * steps_per_epoch)))
    start_epoch, history = 0, []
    ckpt = checkpoint_path(ctx.run_dir)
    if ckpt.exists():
        state = load_checkpoint(ckpt, ctx.fingerprint())
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["sampler_rng"]
        torch.set_rng_state(state["torch_rng"])
        start_epoch, history = state["epoch"], state["history"]
        if start_epoch >= tcfg.epochs:
            ctx.say(f"supernet already trained ({start_epoch} epochs) in {ckpt}")
            return history[-1] if history else {}
        ctx.say(f"resuming supernet training at epoch {start_epoch + 1}/{tcfg.epochs}")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=tcfg.label_smoothing)
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, tcfg.epochs):
        net.train()
        t0, loss_sum, n = time.perf_counter(), 0.0, 0
        bar = tqdm(ctx.loader("train", shuffle=True, epoch=epoch), desc=f"epoch {epoch + 1}/{tcfg.epochs}", leave=False, disable=None if ctx.progress else True)
        for x, y in bar:
            x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
            archs = rule(ctx.space, rng, tcfg.num_random)
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            for arch in archs:
                net.set_active(ctx.space.to_spec(arch))
                loss = loss_fn(net(x), y) / len(archs)
                loss.backward()
                step_loss += loss.item()
            if not math.isfinite(step_loss):
                raise FloatingPointError(
                    f"loss became {step_loss} at epoch {epoch + 1} step {step}; last good checkpoint: "
                    f"{ckpt if ckpt.exists() else 'none'} (lower --train.lr or enable train.grad_clip)"
                )
            if tcfg.grad_clip:
                nn.utils.clip_grad_norm_(net.parameters(), tcfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            loss_sum, n = loss_sum + step_loss, n + 1
            if step % 10 == 0:
                ctx.trackers.log("train_step", step, {"loss": step_loss, "lr": sched.get_last_lr()[0]})
            bar.set_postfix(loss=f"{loss_sum / n:.3f}")
        metrics = {"epoch": epoch + 1, "train_loss": loss_sum / max(n, 1), "epoch_seconds": time.perf_counter() - t0}
        for label, arch in (("largest", ctx.space.largest()), ("smallest", ctx.space.smallest())):
            metrics[f"val_acc_{label}"] = evaluate_arch(ctx, net, arch)
        history.append(metrics)
        ctx.trackers.log("epoch", epoch + 1, metrics)
        ctx.say(
            f"epoch {epoch + 1}/{tcfg.epochs}: loss {metrics['train_loss']:.3f}, val acc largest {metrics['val_acc_largest']:.3f} "
            f"smallest {metrics['val_acc_smallest']:.3f} ({metrics['epoch_seconds']:.1f}s)"
        )
        net.set_active(ctx.space.to_spec(ctx.space.largest()))
        atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "fingerprint": ctx.fingerprint(),
                "epoch": epoch + 1,
                "epochs": tcfg.epochs,
                "model": net.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "sampler_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "history": history,
            },
            ckpt,
        )
    return history[-1]


def evaluate_arch(ctx: RunContext, net: nn.Module, arch: Any, split: str = "val") -> float:
    """Accuracy of ``arch`` with inherited weights, after BN recalibration on training batches."""
    net.set_active(ctx.space.to_spec(arch))
    recalibrate_bn(net, ctx.loader("train", shuffle=True, epoch=-1), ctx.cfg.train.bn_recal_batches, ctx.device)
    return accuracy(net, ctx.loader(split, shuffle=False), ctx.device)
