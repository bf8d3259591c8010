"""Single-Path NAS training: weights and thresholds learn together under a latency budget.

The plan trains the one network the thresholds choose (no sampling) with
``CE + latency_weight * relu(log(E[latency] / target))``, where ``E[latency]`` is
the cost model's differentiable expected latency of the gates' distribution (with
hard gates: the predicted latency of the chosen network; the gradient comes from
the sigmoid relaxation) and ``target`` is the budget less :data:`TARGET_MARGIN`.

Why a hinge: training starts at the largest network (zero thresholds) and the
cross-entropy favours every extension, so the only job of the latency term is to
switch extensions off until the chosen network fits, and then to stop. The
plain ``log(E / budget)`` term of Single-Path NAS has a gradient that does not
depend on the budget at all (d/dE log(E/B) = 1/E), so every budget trained the
same network; the hinge is zero below the target, so the budget decides where
shrinking stops. (A Lagrange multiplier would also do it, at the price of its own
learning rate and of oscillations around the budget.) The thresholds get no weight
decay: decay pulls them to zero, i.e. towards "every extension on".

After training, the architecture is read off the thresholds; the search
evaluates it first, next to whatever the controller asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.cost.expected import expected_latency
from nas.cost.model import CostModel
from nas.cost.store import device_model
from nas.evaluation import evaluate_arch
from nas.run.config import ConfigError
from nas.run.context import RunContext
from nas.training.plans import STEP_PLANS, StepPlan
from search_spaces import Arch

TARGET_MARGIN = 0.03
"""The hinge aims this far below the budget, so the gates' last flips around the target stay within it."""


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
    def for_run(cls, ctx: RunContext, costs: Sequence[CostModel] = ()) -> "SinglePathPlan":
        """The budget's device model (the first of ``costs``, else built and pinned now) and the run's latency
        weight."""
        budget = ctx.cfg.search.latency_budget_ms
        if budget is None:
            raise ConfigError(
                "--supernet single_path trains towards a latency target: give --latency-budget-ms"
            )
        cost = costs[0] if costs else device_model(ctx, ctx.cfg.search.devices[0], primary=True)
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
        return self.weight * F.relu(torch.log(lat / (self.target_ms * (1.0 - TARGET_MARGIN)))).float()

    def no_weight_decay(self, model: nn.Module) -> set[str]:
        threshold_ids = {id(t) for t in model.thresholds()}
        return {name for name, p in model.named_parameters() if id(p) in threshold_ids}

    def evaluate(self, ctx: RunContext, model: nn.Module) -> dict[str, float]:
        self.project(model)
        arch = read_arch(ctx, model)
        out = {
            "val_acc_chosen": evaluate_arch(ctx, model, arch),
            "latency_pred_ms_chosen": float(self.cost.predict([arch])[0]),
        }
        model.use_thresholds()
        return out

    def project(self, model: nn.Module) -> int:
        """Switch off the weakest extensions until the chosen network is within the budget; returns how many.

        The hinge brings the chosen network to the target during training, but hard gates move in jumps, so
        the network an epoch ends with can sit just above the budget; this makes every epoch's choice (and the
        one the search evaluates first) one that meets it.
        """
        switched = 0
        while float(self.cost.predict([read_arch(self.ctx, model)])[0]) > self.target_ms:
            if not model.switch_off_weakest():
                break  # the smallest network: the budget check before training says whether it can fit
            switched += 1
        return switched


def read_arch(ctx: RunContext, model: nn.Module) -> Arch:
    """The architecture a single-path supernet's thresholds choose."""
    return ctx.space.arch_from_spec(model.read_spec())
