"""Gradient-based controllers on weight-entangled supernets: DARTS and GDAS, TangleNAS style.

One logit vector per choice key is the architecture. Each step (first-order
DARTS, alternating):

1. *architecture step* on a validation batch: ``CE(mixed(x; p)) + latency term``,
   where ``mixed`` is the space's one-pass mixture of every subnetwork
   (``SearchSpace.mixed_forward``: masked nested kernels/channels, weighted
   depths, so memory stays that of the largest subnetwork) and the latency term
   is ``w * relu(log(E[latency] / budget))`` from the cost model's
   differentiable expected latency (no term without a budget);
2. *weight step* on a training batch with the architecture fixed.

``darts`` uses the softmax probabilities; ``gdas`` a straight-through Gumbel
one-hot sample per key (one subnetwork per step, gradient through the softmax),
with the temperature annealed from ``tau_max`` to ``tau_min``.

The weight steps run on a *copy* of the trained supernet, so every controller
evaluates and exports with the same trained weights. Discretisation is the
argmax of each key, evaluated first whenever the study does not hold it yet
(also a study with trials: a resumed search, or one whose distribution was
learned again); the remaining trials sample the learned distribution
(architectures not evaluated yet first), so the search also yields an
accuracy-latency front. The learned distribution is stored in
``search/<controller>_distribution.json``: a resumed search does not repeat the
gradient phase.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
import torch.nn.functional as F
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from torch import nn
from tqdm.auto import tqdm

from nas.controllers.base import register_controller
from nas.controllers.optuna_controller import OptunaController, _storage_and_name, study_arch_id
from nas.controllers.space_sampler import SpaceSampler
from nas.cost.expected import expected_latency
from nas.cost.model import CostModel
from nas.run.files import atomic_write_json
from search_spaces import Arch, SearchSpace

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class ArchitectureLogits(nn.Module):
    """One trainable logit vector per choice key (zeros: the uniform distribution)."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.keys = list(space.keys)
        self.logits = nn.ParameterList(
            [nn.Parameter(torch.zeros(len(space.choices[k]), dtype=torch.float64)) for k in self.keys]
        )

    def probabilities(self) -> dict[str, torch.Tensor]:
        return {k: torch.softmax(v, 0) for k, v in zip(self.keys, self.logits)}

    def gumbel_one_hot(self, tau: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Straight-through Gumbel-softmax: one-hot forward, softmax(logits + g) / tau gradient (GDAS)."""
        out = {}
        for k, v in zip(self.keys, self.logits):
            u = torch.rand(v.shape, generator=gen, dtype=v.dtype).clamp_(1e-12, 1 - 1e-12).to(v.device)
            soft = torch.softmax((v - torch.log(-torch.log(u))) / tau, 0)
            hard = F.one_hot(soft.argmax(), len(v)).to(soft.dtype)
            out[k] = hard + soft - soft.detach()
        return out


class DistributionSampler(SpaceSampler):
    """Asks the argmax architecture while the study does not hold it, then samples the learned
    distribution (unseen architectures first)."""

    def __init__(self, space: SearchSpace, seed: int, name: str):
        super().__init__(space, seed)
        self.name = name
        self.probs: dict[str, np.ndarray] | None = None

    def argmax(self) -> Arch:
        assert self.probs is not None
        return self.space.arch(
            {k: self.space.choices[k][int(np.argmax(self.probs[k]))] for k in self.space.keys}
        )

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if self.probs is None:
            raise RuntimeError(
                f"controller {self.name!r} has no architecture distribution yet: call prepare() with the"
                " supernet before ask()"
            )
        held = study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
        )
        seen = {study_arch_id(self.space, t) for t in held if t.number != trial.number}
        argmax = self.argmax()
        if argmax.id not in seen:  # not evaluated (nor being evaluated) yet: it comes first
            return dict(argmax)
        rng = self.rng(trial)
        for _ in range(32):  # duplicates are free (cached) but waste a trial: prefer a new architecture
            arch = self.space.arch(
                {k: v[int(rng.choice(len(v), p=self.probs[k]))] for k, v in self.space.choices.items()}
            )
            if arch.id not in seen:
                break
        return dict(arch)


class GradientController(OptunaController):
    """DARTS / GDAS: a gradient phase on the supernet (:meth:`prepare`), then ask/tell over its result."""

    needs_supernet = True

    def __init__(
        self,
        method: str,
        space: SearchSpace,
        seed: int,
        latency_budget_ms: float | None,
        run_dir: Any,
        storage: str | None,
        study_name: str | None,
        n_devices: int,
        settings: dict[str, float],
    ):
        self.method, self.settings = method, settings
        self.sampler = DistributionSampler(space, seed, method)
        super().__init__(
            space,
            seed,
            latency_budget_ms,
            *_storage_and_name(run_dir, storage, study_name),
            sampler=self.sampler,
            n_devices=n_devices,
            name=method,
        )
        self.state_path = Path(run_dir) / "search" / f"{method}_distribution.json"
        self.log: list[dict[str, float]] = []

    def _identity(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "seed": self.seed,
            "latency_budget_ms": self.latency_budget_ms,
            **self.settings,
        }

    def prepare(
        self,
        supernet: nn.Module,
        train_batches: Callable[[int], Batches],
        val_batches: Callable[[int], Batches],
        cost: CostModel,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        progress: bool = False,
    ) -> dict[str, Any]:
        """Learn the architecture distribution (or load it from a previous run of the same settings)."""
        if type(self.space).mixed_forward is SearchSpace.mixed_forward:
            raise ValueError(
                f"controller {self.method!r} needs a space whose supernet mixes every choice in one pass"
                f" (mbv3, tiny, timm:...); space {self.space.name!r} has none: use another controller (e.g."
                " nsga2, evolution)"
            )
        if self.state_path.exists():
            state = json.loads(self.state_path.read_text())
            if state.get("identity") == self._identity():
                self._set_probs(state["probabilities"])
                return state
        dev = torch.device(device)
        with torch.random.fork_rng(
            devices=[dev] if dev.type == "cuda" else []
        ):  # seeded here, the caller's RNG untouched
            torch.manual_seed(self.seed)
            state = self._search(supernet, train_batches, val_batches, cost, dev, channels_last, progress)
        atomic_write_json(self.state_path, state)
        self._set_probs(state["probabilities"])
        return state

    def _set_probs(self, probs: dict[str, list[float]]) -> None:
        self.sampler.probs = {k: np.asarray(v, dtype=np.float64) / np.sum(v) for k, v in probs.items()}

    def _search(
        self,
        supernet: nn.Module,
        train_batches: Callable[[int], Batches],
        val_batches: Callable[[int], Batches],
        cost: CostModel,
        device: torch.device,
        channels_last: bool,
        progress: bool,
    ) -> dict[str, Any]:
        s = self.settings
        net = copy.deepcopy(supernet).to(device).train()
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        net.set_active(net.largest_spec())
        alphas = ArchitectureLogits(self.space).to(device)
        w_opt = torch.optim.SGD(net.parameters(), lr=s["weight_lr"], momentum=0.9, weight_decay=4e-5)
        a_opt = torch.optim.Adam(alphas.parameters(), lr=s["arch_lr"], betas=(0.5, 0.999))
        gen = torch.Generator().manual_seed(self.seed)
        epochs = int(s["epochs"])
        try:
            total = epochs * len(train_batches(0))  # type: ignore[arg-type]
            total = min(total, int(s["max_steps"])) if s["max_steps"] else total
        except TypeError:  # an iterable without a length: no progress total, constant temperature
            total = None
        step, budget, t0 = 0, self.latency_budget_ms, time.perf_counter()
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        bar = tqdm(total=total, desc=f"{self.method} search", leave=False, disable=None if progress else True)
        val_round = 0
        val_iter = iter(val_batches(val_round))
        for epoch in range(epochs):
            for xt, yt in train_batches(epoch):
                if s["max_steps"] and step >= s["max_steps"]:
                    break
                try:
                    xv, yv = next(val_iter)
                except StopIteration:  # the validation split is usually smaller: cycle it
                    val_round += 1
                    val_iter = iter(val_batches(val_round))
                    xv, yv = next(val_iter)
                xt, yt = xt.to(device, memory_format=fmt), yt.to(device)
                xv, yv = xv.to(device, memory_format=fmt), yv.to(device)
                tau = s["tau_max"] * (s["tau_min"] / s["tau_max"]) ** (step / max(1, (total or 1) - 1))
                probs = alphas.probabilities() if self.method == "darts" else alphas.gumbel_one_hot(tau, gen)
                # 1. architecture step (validation batch)
                ce = F.cross_entropy(self.space.mixed_forward(net, xv, probs), yv)
                lat = expected_latency(cost, alphas.probabilities(), validate=False)
                penalty = (
                    s["latency_weight"] * F.relu(torch.log(lat / budget))
                    if budget is not None
                    else lat.new_zeros(())
                )
                a_opt.zero_grad(set_to_none=True)
                (ce + penalty.to(ce.dtype)).backward()
                net.zero_grad(set_to_none=True)  # the architecture step must not move the weights
                a_opt.step()
                # 2. weight step (training batch), architecture fixed
                with torch.no_grad():
                    fixed = (
                        alphas.probabilities() if self.method == "darts" else alphas.gumbel_one_hot(tau, gen)
                    )
                loss = F.cross_entropy(self.space.mixed_forward(net, xt, fixed), yt)
                w_opt.zero_grad(set_to_none=True)
                loss.backward()
                w_opt.step()
                step += 1
                if step % 10 == 0 or step == 1:
                    self.log.append(
                        {
                            "step": step,
                            "val_ce": ce.item(),
                            "train_ce": loss.item(),
                            "expected_latency_ms": lat.item(),
                            "tau": tau,
                        }
                    )
                bar.update(1)
                bar.set_postfix(ce=f"{ce.item():.3f}", lat=f"{lat.item():.2f}ms")
        bar.close()
        with torch.no_grad():
            probs = {k: v.cpu().tolist() for k, v in alphas.probabilities().items()}
            final_latency = float(expected_latency(cost, alphas.probabilities(), validate=False))
        self._set_probs(probs)
        chosen = self.sampler.argmax()
        return {
            "identity": self._identity(),
            "steps": step,
            "seconds": time.perf_counter() - t0,
            "expected_latency_ms": final_latency,
            "argmax_arch": dict(chosen),
            "argmax_latency_ms": float(cost.predict([chosen])[0]),
            "probabilities": probs,
            "log": self.log,
        }


def _settings(
    epochs: float,
    arch_lr: float,
    weight_lr: float,
    latency_weight: float,
    tau_max: float,
    tau_min: float,
    max_steps: int = 0,
) -> dict[str, float]:
    if epochs < 1 or not math.isfinite(epochs) or int(epochs) != epochs:
        raise ValueError(f"gradient search needs a whole number of epochs >= 1, got {epochs}")
    for name, v in (("arch_lr", arch_lr), ("weight_lr", weight_lr), ("latency_weight", latency_weight)):
        if not (v >= 0 and math.isfinite(v)):
            raise ValueError(f"gradient search option {name} must be finite and >= 0, got {v}")
    if not 0 < tau_min <= tau_max:
        raise ValueError(f"gradient search needs 0 < tau_min <= tau_max, got {tau_min}, {tau_max}")
    if max_steps < 0 or int(max_steps) != max_steps:
        raise ValueError(
            f"gradient search option max_steps must be a whole number >= 0 (0 = no limit), got {max_steps}"
        )
    return {
        "epochs": int(epochs),
        "max_steps": int(max_steps),
        "arch_lr": arch_lr,
        "weight_lr": weight_lr,
        "latency_weight": latency_weight,
        "tau_max": tau_max,
        "tau_min": tau_min,
    }


@register_controller("darts")
def darts(
    space: SearchSpace,
    seed: int,
    latency_budget_ms: float | None,
    run_dir: Any,
    population: int = 10,
    storage: str | None = None,
    study_name: str | None = None,
    n_devices: int = 1,
    epochs: int = 2,
    arch_lr: float = 0.05,
    weight_lr: float = 0.005,
    latency_weight: float = 1.0,
    max_steps: int = 0,
) -> GradientController:
    """First-order DARTS on the weight-entangled supernet (TangleNAS mixture), latency-penalised; argmax
    first."""
    return GradientController(
        "darts",
        space,
        seed,
        latency_budget_ms,
        run_dir,
        storage,
        study_name,
        n_devices,
        _settings(epochs, arch_lr, weight_lr, latency_weight, 1.0, 1.0, max_steps),
    )


@register_controller("gdas")
def gdas(
    space: SearchSpace,
    seed: int,
    latency_budget_ms: float | None,
    run_dir: Any,
    population: int = 10,
    storage: str | None = None,
    study_name: str | None = None,
    n_devices: int = 1,
    epochs: int = 2,
    arch_lr: float = 0.05,
    weight_lr: float = 0.005,
    latency_weight: float = 1.0,
    tau_max: float = 5.0,
    tau_min: float = 0.5,
    max_steps: int = 0,
) -> GradientController:
    """GDAS: straight-through Gumbel one-hot samples (one subnetwork per step), annealed temperature; argmax
    first."""
    return GradientController(
        "gdas",
        space,
        seed,
        latency_budget_ms,
        run_dir,
        storage,
        study_name,
        n_devices,
        _settings(epochs, arch_lr, weight_lr, latency_weight, tau_max, tau_min, max_steps),
    )
