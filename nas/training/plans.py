"""Step plans: what one training step trains, chosen by the supernet's kind.

The trainer asks its plan, every step, which architectures to train
(:meth:`StepPlan.archs`), how to make one active, which is the distillation
teacher, what extra loss to add, and how to evaluate after an epoch. A supernet
kind whose training differs (single-path trains the network its thresholds pick,
under a latency term) registers its own plan in :data:`STEP_PLANS` under the
kind's name; every other kind trains sampled subnetworks with :class:`SupernetPlan`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from nas.cost.model import CostModel
from nas.evaluation import accuracy, evaluate_arch, recalibrate_bn
from nas.run.context import RunContext
from nas.training.sampling import get_rule
from search_spaces import Arch
from search_spaces.registry import Registry


class StepPlan:
    """What a training step trains. Required: :meth:`archs`, :meth:`activate`, :meth:`evaluate`; the rest are
    hooks."""

    needs_latency_budget = False
    """Whether training needs ``search.latency_budget_ms`` (checked before anything is written)."""

    @classmethod
    def for_run(cls, ctx: RunContext, costs: Sequence[CostModel] = ()) -> "StepPlan":
        """The plan that trains the run's supernet (plans registered for a supernet kind implement it).

        ``costs``: the run's device models (one per ``search.devices``), for plans that train under a
        latency budget (:attr:`needs_latency_budget`); built, not yet pinned, by the command's checks.
        """
        raise NotImplementedError(f"{cls.__name__} does not train a run's supernet")

    def archs(self, step: int, total_steps: int, rng: np.random.Generator) -> list[Arch | None]:
        """Architectures the step trains, in order (``None``: the model as it is); drawn from ``rng`` only."""
        raise NotImplementedError

    def activate(self, model: nn.Module, arch: Arch | None) -> None:
        """Make ``arch`` the network the next forward pass runs."""
        raise NotImplementedError

    def evaluate(self, ctx: RunContext, model: nn.Module) -> dict[str, float]:
        """Metrics logged after each epoch (keys starting ``val_acc`` are printed)."""
        raise NotImplementedError

    def teacher(self) -> Arch | None:
        """The architecture whose outputs teach the others under ``train.distill`` (None: no distillation)."""
        return None

    def auxiliary_loss(self, model: nn.Module) -> torch.Tensor | None:
        """A term added to every architecture's loss after its forward pass (None: nothing to add)."""
        return None

    def no_weight_decay(self, model: nn.Module) -> set[str]:
        """Names of parameters the optimizer must not decay (1-D tensors never are); default none."""
        return set()

    def after_backward(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        loss_fn: Callable[..., torch.Tensor],
        step: int,
    ) -> None:
        """Called after each architecture's backward pass on its batch ``(x, y)``; the default does
        nothing."""


@dataclass
class SupernetPlan(StepPlan):
    """Sampled subnetworks each step (``train.sampler``), the space's reference as teacher; any supernet kind.

    The reference is the largest architecture, or the original model's for a space converted from one
    (``SearchSpace.reference_arch``): with a checkpoint, what the original knew is what teaches the others.
    """

    ctx: RunContext
    rule: Callable[..., list[Arch]] = field(init=False)

    @classmethod
    def for_run(cls, ctx: RunContext, costs: Sequence[CostModel] = ()) -> "SupernetPlan":
        return cls(ctx)

    def __post_init__(self) -> None:
        self.rule = get_rule(self.ctx.cfg.train.sampler)
        self._largest = self.ctx.space.largest()
        self._teacher = self.ctx.space.reference_arch()

    def archs(self, step: int, total_steps: int, rng: np.random.Generator) -> list[Arch | None]:
        t = self.ctx.cfg.train
        return list(self.rule(self.ctx.space, rng, step, total_steps, t.num_random, **t.sampler_options))

    def activate(self, model: nn.Module, arch: Arch | None) -> None:
        model.set_active(self.ctx.space.to_spec(arch))

    def after_backward(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        loss_fn: Callable[..., torch.Tensor],
        step: int,
    ) -> None:
        """The supernet's own hook (a mixture learns which weight set each configuration goes to)."""
        model.route_update(x, y, loss_fn, step)

    def teacher(self) -> Arch | None:
        return self._teacher

    def evaluate(self, ctx: RunContext, model: nn.Module) -> dict[str, float]:
        out = {
            f"val_acc_{label}": evaluate_arch(ctx, model, arch)
            for label, arch in (("largest", ctx.space.largest()), ("smallest", ctx.space.smallest()))
        }
        self.activate(model, self._largest)
        return out


@dataclass
class FixedPlan(StepPlan):
    """A standalone network: the same network every step, no teacher."""

    def archs(self, step: int, total_steps: int, rng: np.random.Generator) -> list[Arch | None]:
        return [None]

    def activate(self, model: nn.Module, arch: Arch | None) -> None:
        pass

    def evaluate(self, ctx: RunContext, model: nn.Module) -> dict[str, float]:
        recalibrate_bn(
            model, ctx.loader("train", shuffle=True, epoch=-1), ctx.cfg.train.bn_recal_batches, ctx.device
        )
        return {"val_acc": accuracy(model, ctx.loader("val"), ctx.device)}


STEP_PLANS: Registry[type[StepPlan]] = Registry("step plan")
"""Supernet kind -> its step plan class; kinds not listed train with :class:`SupernetPlan`."""


def plan_class(kind: str) -> type[StepPlan]:
    """The step plan class that trains supernets of kind ``kind``."""
    return STEP_PLANS.get(kind) if kind in STEP_PLANS else SupernetPlan


def plan_for(ctx: RunContext, costs: Sequence[CostModel] = ()) -> StepPlan:
    """The step plan of the run's supernet kind (``space.supernet``)."""
    return plan_class(ctx.cfg.space.supernet).for_run(ctx, costs)
