"""Single-Path NAS training: weights and thresholds learn together under a latency target.

The plan trains the one network the thresholds choose (no sampling) with
``CE + latency_weight * log(E[latency] / target)``, where ``E[latency]`` is the
cost model's differentiable expected latency of the gates' distribution (with
hard gates: the predicted latency of the chosen network; the gradient comes from
the sigmoid relaxation). After training, the architecture is read off the
thresholds; the search evaluates it first, next to whatever the controller asks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nas.cost.expected import expected_latency
from nas.cost.model import CostModel
from nas.cost.store import device_model
from nas.evaluation import evaluate_arch
from nas.run.context import RunContext
from nas.training.plans import STEP_PLANS, StepPlan
from search_spaces import Arch


@STEP_PLANS.register("single_path")
@dataclass
class SinglePathPlan(StepPlan):
    """Step plan for ``--supernet single_path`` (see the module docstring)."""

    needs_latency_budget = True

    ctx: RunContext
    cost: CostModel
    target_ms: float
    weight: float

    @classmethod
    def for_run(cls, ctx: RunContext) -> "SinglePathPlan":
        """The budget's device model (calibrated once, pinned in the run directory) and the run's latency
        weight."""
        budget = ctx.cfg.search.latency_budget_ms
        if budget is None:
            raise ValueError(
                "--supernet single_path trains towards a latency target: give --latency-budget-ms"
            )
        cost = device_model(ctx, ctx.cfg.search.devices[0], primary=True)
        return cls(ctx, cost, budget, ctx.cfg.train.latency_weight)

    def archs(self, step: int, total_steps: int, rng: np.random.Generator) -> list[Arch | None]:
        return [None]

    def activate(self, model: nn.Module, arch: Arch | None) -> None:
        model.use_thresholds()

    def auxiliary_loss(self, model: nn.Module) -> torch.Tensor:
        gates = (
            model.last_indicators if model.last_indicators is not None else model.indicators()
        )  # set by this step's forward
        probs = self.ctx.space.single_path_probabilities(gates)
        probs = {k: v.double() for k, v in probs.items()}
        lat = expected_latency(self.cost, probs, validate=False)
        return self.weight * torch.log(lat / self.target_ms).float()

    def evaluate(self, ctx: RunContext, model: nn.Module) -> dict[str, float]:
        arch = read_arch(ctx, model)
        out = {
            "val_acc_chosen": evaluate_arch(ctx, model, arch),
            "latency_pred_ms_chosen": float(self.cost.predict([arch])[0]),
        }
        model.use_thresholds()
        return out


def read_arch(ctx: RunContext, model: nn.Module) -> Arch:
    """The architecture a single-path supernet's thresholds choose."""
    return ctx.space.arch_from_spec(model.read_spec())
