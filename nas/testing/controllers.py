"""What every search controller promises: valid asks of networks not evaluated before, reproducibility,
exact resume, failed and infeasible results accepted.

Subclass :class:`ControllerContract` and provide a ``controller_name`` fixture
(a name registered with :func:`nas.controllers.register_controller`); the checks
run it on the ``tiny`` space against a deterministic stand-in evaluator, so no
supernet is trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from nas.controllers import Controller, Objectives, create_controller
from nas.cost import CostModel
from nas.cost.specs import spec_profile
from search_spaces import Arch, SearchSpace, create_space


def tiny_space() -> SearchSpace:
    return create_space("tiny")


def batches(space: SearchSpace, seed: int, n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, *space.input_shape, generator=gen), torch.randint(0, 10, (8,), generator=gen))
        for _ in range(n)
    ]


def ready_controller(name: str, space: SearchSpace, run_dir: Path, **kwargs: Any) -> Controller:
    """A controller ready to ask: one that learns on a supernet first does so on a (random) supernet of
    ``space``."""
    ctl = create_controller(name, space=space, run_dir=run_dir, **kwargs)
    if ctl.needs_supernet:
        cost = CostModel(space, spec_profile("mobile-big-core", space))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            supernet = space.build_supernet()
        ctl.prepare(supernet, lambda e: batches(space, e), lambda r: batches(space, 100 + r, 2), cost)
    return ctl


def stand_in_objectives(arch: Arch) -> Objectives:
    """Deterministic stand-in evaluator: accuracy grows with size, latency too (a real trade-off)."""
    size = sum(v for k, v in arch.items() if k.endswith((".kernel", ".expand", ".depth")))
    return Objectives(accuracy=0.5 + 0.01 * size, latency_ms=0.1 * size)


def run_controller(
    name: str, space: SearchSpace, run_dir: Path, trials: int = 12, budget: float | None = None
) -> list[str]:
    """A fresh controller (as after a restart: it sees the run directory's finished trials) run to ``trials``
    results."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ctl = ready_controller(name, space, run_dir, seed=3, latency_budget_ms=budget, population=4)
    asked = []
    try:
        while ctl.n_finished() < trials:
            (arch,) = ctl.ask(1)
            space.validate(arch)  # every asked architecture belongs to the space
            ctl.tell([arch], [stand_in_objectives(arch)])
            asked.append(arch.id)
        assert ctl.n_finished() == trials and len(ctl.history()) == trials
    finally:
        ctl.close()
    return asked


class ControllerContract:
    """Checks for the ``controller_name`` fixture a subclass provides (on the ``space`` fixture, ``tiny`` by
    default)."""

    @pytest.fixture
    def controller_name(self) -> str:  # pragma: no cover - provided by the subclass
        raise NotImplementedError("a ControllerContract subclass provides the `controller_name` fixture")

    @pytest.fixture
    def space(self) -> SearchSpace:
        return tiny_space()

    def test_controller_asks_valid_archs_and_is_reproducible(
        self, controller_name: str, space: SearchSpace, tmp_path: Path
    ) -> None:
        first = run_controller(controller_name, space, tmp_path / "a")
        assert len(set(first)) == len(first)  # every ask is a network not evaluated before
        assert run_controller(controller_name, space, tmp_path / "b") == first  # same seed, same asks

    def test_resumed_controller_continues_like_an_uninterrupted_one(
        self, controller_name: str, space: SearchSpace, tmp_path: Path
    ) -> None:
        """Killed after 5 results and restarted (a new controller on the same storage), it asks what it would
        have asked."""
        uninterrupted = run_controller(
            controller_name, space, tmp_path / "a", trials=10
        )  # population 4: past NSGA's first generation
        resumed = run_controller(controller_name, space, tmp_path / "b", trials=5) + run_controller(
            controller_name, space, tmp_path / "b", trials=10
        )
        assert resumed == uninterrupted

    def test_controller_accepts_failed_and_infeasible_results(
        self, controller_name: str, space: SearchSpace, tmp_path: Path
    ) -> None:
        ctl = ready_controller(controller_name, space, tmp_path, seed=0, latency_budget_ms=0.5, population=4)
        (arch,) = ctl.ask(1)
        ctl.tell([arch], [Objectives(accuracy=None, latency_ms=1.0)])  # the evaluation failed
        assert ctl.n_finished() == 0
        for _ in range(5):
            (arch,) = ctl.ask(1)
            ctl.tell([arch], [stand_in_objectives(arch)])  # most of these exceed the 0.5 ms budget
        rows = ctl.history()
        assert len(rows) == 5 and any(not r["feasible"] for r in rows)
        ctl.close()
