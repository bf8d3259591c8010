"""Training loop for supernets (sampled subnetworks per step) and for standalone networks.

One loop serves both, so a standalone training in the ranking report follows
exactly the recipe the supernet was trained with. A checkpoint holds model,
optimizer, schedule, AMP scaler, EMA weights, every RNG state and the position
inside the epoch; it is written atomically at the end of every epoch (and every
``checkpoint_every_steps`` steps), so a run killed at any point and started again
with the same command continues from the last checkpoint. On CPU with
``train.deterministic`` the result equals an uninterrupted run bit for bit.

Distributed (torchrun): every rank seeds its sampling generator identically and so
trains the same subnetworks each step on its shard of the global batch; gradients
are averaged with one coalesced all-reduce (see ``nas.training.distributed``); only rank 0
logs and writes checkpoints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from nas.cost.model import CostModel
from nas.run.config import LR_SCHEDULES, OPTIMIZERS, ConfigError
from nas.run.context import SINGLE, DistInfo, RunContext
from nas.run.files import atomic_torch_save
from nas.training.augment import augment_batch
from nas.training.checkpoint import CHECKPOINT_FORMAT, checkpoint_path, load_checkpoint
from nas.training.distributed import (
    allreduce_gradients,
    barrier,
    enable_sync_bn,
    local_batch_norm,
    shard_batch,
)
from nas.training.plans import StepPlan, plan_for
from search_spaces.errors import UserError


class TrainingDiverged(UserError, FloatingPointError):
    """The loss or the weights stopped being finite; the message names where and the last good checkpoint."""


def build_optimizer(
    model: nn.Module, cfg: Any, no_decay_names: Collection[str] = ()
) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW; no weight decay on 1-D tensors (BN parameters, biases, as is standard for
    MobileNets) nor on the parameters named in ``no_decay_names`` (e.g. single-path thresholds)."""
    named = list(model.named_parameters())
    decay = [p for n, p in named if p.ndim > 1 and n not in no_decay_names]
    no_decay = [p for n, p in named if p.ndim <= 1 or n in no_decay_names]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ConfigError(f"train.optimizer={cfg.optimizer!r} is not allowed: use one of {', '.join(OPTIMIZERS)}")


def lr_factor(total_steps: int, warmup_steps: int, schedule: str = "cosine") -> Callable[[int], float]:
    """The learning rate's multiplier at each step: linear warm-up, then ``schedule`` (cosine or constant)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def freeze_bn_affine(model: nn.Module) -> None:
    """Batch-norm scale 1 and shift 0, not learned (``train.bn_affine=false``)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            with torch.no_grad():
                m.weight.fill_(1.0)
                m.bias.zero_()
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, scaled by T^2 (Hinton et al.)."""
    t = temperature
    return (
        F.kl_div(
            F.log_softmax(student / t, dim=1),
            F.log_softmax(teacher / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        * t
        * t
    )


@dataclass
class Position:
    epoch: int = 0  # epochs fully finished
    step_in_epoch: int = 0  # optimizer steps finished inside the current epoch
    loss_sum: float = 0.0
    steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """The loop: sample -> forward/backward per subnet -> (all-reduce) -> clip -> step -> EMA ->
    checkpoint."""

    def __init__(
        self,
        ctx: RunContext,
        model: nn.Module,
        plan: StepPlan,
        ckpt: Path | None,
        seed: int,
        dist: DistInfo = SINGLE,
        desc: str = "epoch",
        evaluate_last_only: bool = False,
    ):
        self.evaluate_last_only = evaluate_last_only  # standalone ground truths: only the end result counts
        self.ctx, self.cfg, self.plan, self.ckpt, self.dist, self.desc = (
            ctx,
            ctx.cfg.train,
            plan,
            ckpt,
            dist,
            desc,
        )
        t = self.cfg
        if t.deterministic:
            torch.use_deterministic_algorithms(True)
        self.seed = seed
        self.model = model.to(ctx.device)
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = t.bn_momentum
        if not t.bn_affine:
            freeze_bn_affine(self.model)
        if dist.world_size > 1:
            enable_sync_bn(self.model)
        self.forward = torch.compile(self.model) if t.compile else self.model
        self.rng = np.random.default_rng(seed)
        # the same seed on every rank: each draws the global batch's augmentation and applies its shard's part
        self.aug_gen = torch.Generator().manual_seed(seed + 1)
        self.opt = build_optimizer(self.model, t, plan.no_weight_decay(self.model))
        micro_batches = len(ctx.loader("train", shuffle=True, epoch=0))
        if micro_batches < t.accumulate:
            raise ConfigError(
                f"train.accumulate={t.accumulate} is not allowed: an epoch has only {micro_batches} batches"
                f" of data.batch_size={ctx.cfg.data.batch_size}; use at most {micro_batches}"
            )
        self.steps_per_epoch = micro_batches // t.accumulate
        self.total_steps = t.epochs * self.steps_per_epoch
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt,
            lr_factor(self.total_steps, int(t.warmup_epochs * self.steps_per_epoch), t.lr_schedule),
        )
        cuda = ctx.device.type == "cuda"
        if t.amp == "fp16" and not cuda:
            raise ConfigError("train.amp=fp16 needs a CUDA device; use bf16 on CPU")
        self.scaler = torch.amp.GradScaler("cuda", enabled=t.amp == "fp16")
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp)
        self._named_params = list(self.model.named_parameters())  # built once, not every step
        self.ema = {n: p.detach().clone() for n, p in self._named_params} if t.ema_decay else None
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
        self.pos = Position()
        self._saved_at: tuple[int, int] | None = (
            None  # (epochs done, steps into the next) of the last checkpoint
        )

    # --- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.ctx.fingerprint(),
            "epoch": self.pos.epoch,
            "epochs": self.cfg.epochs,
            "position": vars(self.pos),
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema,
            "sampler_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "augment_rng": self.aug_gen.get_state(),
            "history": self.pos.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.ema = state["ema"]
        self.rng.bit_generator.state = state["sampler_rng"]
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.aug_gen.set_state(state["augment_rng"])
        self.pos = Position(**state["position"])
        self._saved_at = (self.pos.epoch, self.pos.step_in_epoch)

    def save(self) -> None:
        """Checkpoint atomically; weights that are no longer finite are refused, so the last checkpoint stays
        a good one."""
        if (
            self.ckpt is not None
        ):  # every rank checks (the weights are identical), so none is left waiting at the barrier
            finite = (
                torch.stack([torch.isfinite(p).all() for _, p in self._named_params]).all().item()
            )  # one device sync
            if not finite:
                bad = next(n for n, p in self._named_params if not torch.isfinite(p).all())
                raise TrainingDiverged(
                    f"weights became non-finite ({bad}) by {self._where(done=True)}; last good checkpoint:"
                    f" {self._last_good()} (lower --train.lr or set train.grad_clip)"
                )
        if self.ckpt is not None and self.dist.is_main:
            atomic_torch_save(self.state_dict(), self.ckpt)
            self._saved_at = (self.pos.epoch, self.pos.step_in_epoch)
        barrier(self.dist)

    def _where(self, done: bool = False) -> str:
        """``epoch E step S`` (1-based) of the step being trained, or of the last finished one (``done``)."""
        epoch, step = self.pos.epoch + 1, self.pos.step_in_epoch + (0 if done else 1)
        if done and step == 0:  # just after an epoch ended
            epoch, step = self.pos.epoch, self.steps_per_epoch
        return f"epoch {epoch} step {step}/{self.steps_per_epoch}"

    def _last_good(self) -> str:
        """The checkpoint a user can go back to, with the position it holds."""
        if self.ckpt is None or self._saved_at is None or not self.ckpt.exists():
            return "none (no checkpoint was written yet)"
        epoch, step = self._saved_at
        at = f"after epoch {epoch}" if step == 0 else f"epoch {epoch + 1} step {step}/{self.steps_per_epoch}"
        return f"{self.ckpt} ({at})"

    # --- one optimizer step ----------------------------------------------------------------------
    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.autocast_dtype)

    def train_step(self, batches: list[tuple[torch.Tensor, torch.Tensor]], step: int) -> float:
        t, dev = self.cfg, self.ctx.device
        self.opt.zero_grad(set_to_none=True)
        total = 0.0
        for x, y in batches:
            n_global, first = x.shape[0], 0  # this rank holds images [first, first + shard) of the batch
            if self.dist.world_size > 1:
                x, y = shard_batch(x, y, self.dist)
                first = self.dist.rank * x.shape[0]
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            # the global batch's augmentation is drawn on every rank (same generator), each applies its part
            x = augment_batch(x, t.augment, self.aug_gen, offset=first, total=n_global)
            if t.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            archs = self.plan.archs(step, self.total_steps, self.rng)
            teacher_arch = self.plan.teacher() if t.distill else None
            soft = None
            if teacher_arch is not None and archs[0] != teacher_arch:  # rule did not train the largest first
                self.plan.activate(self.model, teacher_arch)
                with torch.no_grad(), self._autocast():
                    soft = self.forward(x).float()
            scale = 1.0 / (len(archs) * len(batches))
            for arch in archs:
                self.plan.activate(self.model, arch)
                with self._autocast():
                    logits = self.forward(x)
                ce = self.loss_fn(logits.float(), y)
                if soft is not None and arch != teacher_arch:
                    a = t.distill_alpha
                    loss = a * distillation_loss(logits.float(), soft, t.distill_temperature) + (1 - a) * ce
                else:
                    loss = ce
                aux = self.plan.auxiliary_loss(
                    self.model
                )  # e.g. single-path: latency penalty on the thresholds
                if aux is not None:
                    loss = loss + aux
                if teacher_arch is not None and arch == teacher_arch:
                    soft = logits.detach().float()
                self.scaler.scale(loss * scale).backward()
                total += loss.item() * scale
                self.plan.after_backward(self.model, x, y, self.loss_fn, step)  # e.g. a mixture's routing
        if not math.isfinite(total):
            raise TrainingDiverged(
                f"loss became {total} at {self._where()}; last good checkpoint: {self._last_good()} (lower"
                " --train.lr or set train.grad_clip)"
            )
        if self.dist.world_size > 1:
            allreduce_gradients(self.model.parameters(), self.dist)
        if t.grad_clip:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        if self.ema is not None:
            self._update_ema()
        return total

    @torch.no_grad()
    def _update_ema(self) -> None:
        trained = [
            (n, p) for n, p in self._named_params if p.grad is not None
        ]  # only params trained this step move
        torch._foreach_lerp_(
            [self.ema[n] for n, _ in trained], [p.detach() for _, p in trained], 1 - self.cfg.ema_decay
        )

    # --- the loop ------------------------------------------------------------------------------
    def fit(self, resume_state: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train to ``train.epochs``; ``resume_state`` is the checkpoint already loaded (and checked) by the
        caller.

        Torch's global RNG (dropout and the like) runs seeded by the trainer's seed, or
        from the checkpoint's state, inside this call only: the caller's RNG is left as it was.
        """
        devices = [self.ctx.device] if self.ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            return self._fit(resume_state)

    def _fit(self, resume_state: dict[str, Any] | None) -> dict[str, Any]:
        t, ctx = self.cfg, self.ctx
        if resume_state is None and self.ckpt is not None and self.ckpt.exists():
            resume_state = load_checkpoint(self.ckpt, ctx.fingerprint())
        if resume_state is not None:
            self.load_state_dict(resume_state)
            if self.pos.epoch >= t.epochs:
                ctx.say(f"already trained ({self.pos.epoch} epochs) in {self.ckpt}")
                return self.pos.history[-1] if self.pos.history else {}
            where = f"epoch {self.pos.epoch + 1}/{t.epochs}" + (
                f", step {self.pos.step_in_epoch}" if self.pos.step_in_epoch else ""
            )
            ctx.say(f"resuming training at {where}")
        log = ctx.trackers.log if self.dist.is_main else (lambda *a, **k: None)
        while self.pos.epoch < t.epochs:
            epoch, t0 = self.pos.epoch, time.perf_counter()
            self.model.train()
            loader = iter(ctx.loader("train", shuffle=True, epoch=epoch))
            skip = self.pos.step_in_epoch * t.accumulate
            loader = islice(loader, skip, None)  # resume inside an epoch: the order is fixed by (seed, epoch)
            bar = tqdm(
                total=self.steps_per_epoch,
                initial=self.pos.step_in_epoch,
                desc=f"{self.desc} {epoch + 1}/{t.epochs}",
                leave=False,
                disable=None if ctx.progress and self.dist.is_main else True,
            )
            while self.pos.step_in_epoch < self.steps_per_epoch:
                batches = list(islice(loader, t.accumulate))
                step = epoch * self.steps_per_epoch + self.pos.step_in_epoch
                loss = self.train_step(batches, step)
                self.pos.step_in_epoch += 1
                self.pos.loss_sum += loss
                self.pos.steps += 1
                if (step + 1) % 10 == 0:
                    log("train_step", step + 1, {"loss": loss, "lr": self.sched.get_last_lr()[0]})
                bar.update(1)
                bar.set_postfix(loss=f"{self.pos.loss_sum / self.pos.steps:.3f}")
                if (
                    t.checkpoint_every_steps
                    and self.pos.step_in_epoch % t.checkpoint_every_steps == 0
                    and self.pos.step_in_epoch < self.steps_per_epoch
                ):
                    self.save()
            bar.close()
            metrics = {
                "epoch": epoch + 1,
                "train_loss": self.pos.loss_sum / max(self.pos.steps, 1),
                "epoch_seconds": time.perf_counter() - t0,
            }
            if not self.evaluate_last_only or epoch + 1 == t.epochs:
                with local_batch_norm(self.model):  # every rank evaluates the same data: no cross-rank stats
                    metrics.update(self.plan.evaluate(ctx, self.model))
            self.pos.history.append(metrics)
            self.pos = Position(epoch=epoch + 1, history=self.pos.history)
            log("epoch", epoch + 1, metrics)
            if self.dist.is_main:
                accs = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith("val_acc"))
                ctx.say(
                    f"{self.desc} {epoch + 1}/{t.epochs}: loss {metrics['train_loss']:.3f}, {accs}"
                    f" ({metrics['epoch_seconds']:.1f}s)"
                )
            self.save()
        return self.pos.history[-1]


def supernet_trainer(ctx: RunContext, dist: DistInfo = SINGLE, costs: Sequence[CostModel] = ()) -> Trainer:
    """The run's supernet, step plan and trainer, built and checked; nothing trained, nothing written.

    What a training command checks before it saves anything: bad supernet options, a plan that cannot train
    (single-path without a budget), ``train.accumulate`` beyond an epoch's batches, fp16 on a CPU.
    """
    net = ctx.build_supernet()  # seeded by the run's seed: the initial weights are part of what it reproduces
    return Trainer(ctx, net, plan_for(ctx, costs), checkpoint_path(ctx.run_dir), seed=ctx.cfg.seed, dist=dist)


def train_supernet(
    ctx: RunContext,
    dist: DistInfo = SINGLE,
    resume_state: dict[str, Any] | None = None,
    trainer: Trainer | None = None,
) -> dict[str, Any]:
    """Train (or resume training) the run's supernet; returns the last epoch's metrics.

    ``resume_state``: the run's checkpoint, when the caller has already loaded it to check it; ``trainer``:
    the one the caller's checks built (:func:`supernet_trainer`).
    """
    trainer = trainer if trainer is not None else supernet_trainer(ctx, dist)
    return trainer.fit(resume_state)
