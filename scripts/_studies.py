"""Shared by the search-quality studies (bench_ground_truth, bench_recipes): what each space's study trains.

A study fixes the data, the space, the architectures ranked and the standalone
recipe of the ground truth, so that the ground truth accumulates over sessions
(per seed, in ``results/data/ground_truth.json``) and every supernet recipe is
measured against the same yardstick. Changing any of it makes a different
study: ``recipe_id`` (the hash ``nas rank`` keys standalone results by) is
recorded with the data and checked before anything is added to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TRUTH_SEED0 = 100  # ground-truth seeds are 100, 101, ...: never a supernet's seed


@dataclass(frozen=True)
class Study:
    """One space's search-quality study on Fashion-MNIST."""

    name: str
    about: str  # one sentence for the reports
    common: tuple[str, ...]  # CLI settings shared by standalone and supernet training
    standalone_epochs: int
    supernet_epochs: int
    select: Callable[[Any], list[Any]]  # the space -> the architectures ranked, in a fixed order
    default_recipe: str  # the engine's default today: every recipe is compared against it
    recipes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    recal_sizes: tuple[int, ...] = (5, 20, 80)  # BN recalibration batches evaluated on every supernet
    recal_default: int = 20
    truth: str = "ground_truth"  # the results/data file (no .json) and bench_<truth>.py of its ground truth
    supernet_seed0: int = 0  # supernet seeds start here: never a seed of the ground truth's trainings


def _all(space: Any) -> list[Any]:
    return list(space.enumerate())


def _by_its_own_script(space: Any) -> list[Any]:
    raise SystemExit(
        "this study's architectures and ground truth come from its own script (Study.truth): run that"
    )


def _stratified(k: int) -> Callable[[Any], list[Any]]:
    def select(space: Any) -> list[Any]:
        from nas.ranking import stratified_archs

        return stratified_archs(space, k, seed=0)

    return select


SAMPLING = {  # the sampling rules and in-place distillation, same for every space
    "uniform": ("--train.sampler=uniform",),
    "sandwich": ("--train.sampler=sandwich",),
    "fair": ("--train.sampler=fair",),
    "sorted": ("--train.sampler=sorted",),
    "progressive": ("--train.sampler=progressive",),
    "uniform+distill": ("--train.sampler=uniform", "--train.distill=true"),
    "sandwich+distill": ("--train.sampler=sandwich", "--train.distill=true"),
}


def heuristics(base: str, epochs: int) -> dict[str, tuple[str, ...]]:
    """Around one sampling rule: the hyper-parameters and heuristics 'How to Train Your Super-Net' isolates
    that this trainer exposes (learning rate, schedule, epochs, batch-norm affine, weight decay)."""
    b = SAMPLING[base]
    return {
        f"{base} lr 0.05": (*b, "--train.lr=0.05"),
        f"{base} lr 0.2": (*b, "--train.lr=0.2"),
        f"{base} constant lr": (*b, "--train.lr_schedule=constant"),
        f"{base} {epochs // 2} epochs": (*b, f"--epochs={epochs // 2}"),
        f"{base} {epochs * 2} epochs": (*b, f"--epochs={epochs * 2}"),
        f"{base} bn affine off": (*b, "--train.bn_affine=false"),
        f"{base} weight decay 0": (*b, "--train.weight_decay=0"),
    }


RESNET20_POOL = Study(
    name="resnet20_pool",
    about=(
        "all 36 downsampling placements of a CIFAR-style ResNet20 (width 0.5, 28x28 input), 5000 training"
        " images, accuracy on the 6000 validation images"
    ),
    common=(
        "--data=fashion_mnist",
        "--space=resnet20_pool",
        "--train-limit=5000",
        "--data.val_limit=6000",
        "--width-mult=0.5",
        "--trackers=jsonl",
    ),
    standalone_epochs=4,
    supernet_epochs=15,
    select=_all,
    default_recipe="sandwich",
    recipes={
        **SAMPLING,
        **heuristics("uniform", 15),
        "mixture K=1": (
            "--train.sampler=uniform",
            "--supernet=balanced_mixture",
            "--space.supernet_options={k: 1}",
        ),
        "mixture K=2": (
            "--train.sampler=uniform",
            "--supernet=balanced_mixture",
            "--space.supernet_options={k: 2}",
        ),
        "mixture K=4": (
            "--train.sampler=uniform",
            "--supernet=balanced_mixture",
            "--space.supernet_options={k: 4}",
        ),
        "mixture K=8": (
            "--train.sampler=uniform",
            "--supernet=balanced_mixture",
            "--space.supernet_options={k: 8}",
        ),
        "MoS K=4": ("--train.sampler=uniform", "--supernet=mos", "--space.supernet_options={k: 4}"),
    },
)

MBV3 = Study(
    name="mbv3",
    about=(
        "20 mbv3 architectures (width 0.25, stem stride 1, 28x28 input), one per log-MACs stratum between the"
        " smallest and the largest network, 10000 training images, accuracy on the 6000 validation images"
    ),
    common=(
        "--data=fashion_mnist",
        "--space=mbv3",
        "--train-limit=10000",
        "--data.val_limit=6000",
        "--width-mult=0.25",
        "--space.options={stem_stride: 1}",
        "--trackers=jsonl",
    ),
    standalone_epochs=6,
    supernet_epochs=12,
    select=_stratified(20),
    default_recipe="sandwich",
    recipes={**SAMPLING, **heuristics("uniform", 12)},
)

NB201_OPTIONS = "C: 8, N: 1"  # the recipe of results/data/nb201_ground_truth.json (a test checks they agree)
NB201 = Study(
    name="nb201",
    about=(
        "40 nb201 cells (C=8, N=1, 28x28 input), one per stratum of the NATS-Bench CIFAR-10 accuracy, 5000"
        " training images, accuracy on the 6000 validation images (ground truth:"
        " `results/nb201_ground_truth.md`)"
    ),
    common=(
        "--data=fashion_mnist",
        "--data.resolution=28",
        "--space=nb201",
        "--train-limit=5000",
        "--batch-size=64",
        "--train.lr=0.1",
        "--width-mult=1",
        f"--space.options={{{NB201_OPTIONS}}}",
        "--trackers=jsonl",
    ),
    standalone_epochs=4,
    supernet_epochs=15,
    select=_by_its_own_script,
    default_recipe="sandwich",
    recipes={
        **SAMPLING,
        **{  # TangleNAS's entanglement (1x1 at the centre of the 3x3) against separate 1x1 weights
            f"{r} separate 1x1": (*SAMPLING[r], f"--space.options={{{NB201_OPTIONS}, entangled: false}}")
            for r in ("uniform", "sandwich", "fair")
        },
        **heuristics("uniform", 15),
    },
    truth="nb201_ground_truth",
    supernet_seed0=1000,  # its ground truth's seeds are 0, 1, ... (and seed the validation split)
)

STUDIES: dict[str, Study] = {s.name: s for s in (RESNET20_POOL, MBV3, NB201)}


def study(name: str) -> Study:
    if name not in STUDIES:
        raise SystemExit(f"--space={name!r} is not a study: use one of {', '.join(STUDIES)}")
    return STUDIES[name]


def open_study_config(s: Study) -> Any:
    """The study's resolved config (standalone recipe), its data and space, without a run directory."""
    from nas.run.config import build_config
    from nas.run.context import build_space, load_config_data

    cfg = build_config(None, list(s.common))
    data = load_config_data(cfg)
    return cfg, data, build_space(cfg, data)
