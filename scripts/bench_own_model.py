"""Bring your own model: timm models trained on Fashion-MNIST, made spaces, searched for half their MACs.

    python scripts/bench_own_model.py [--root runs/bench_own_model] [--models resnet,mobilenetv2] ...

Per model (a small timm ResNet18-D and a timm MobileNetV2):

1. the timm model itself is trained (``--original-epochs``): the user's checkpoint;
2. it becomes a space (``timm:<model>`` with ``checkpoint:``) whose supernet is trained twice for
   ``--supernet-epochs``, with and without importance ordering (``reorder``), distilling from the
   original (the default with a checkpoint): the smallest, median-MACs and largest (= original)
   architectures are evaluated at step 0 and after training, and the original's accuracy is compared
   with the checkpoint's;
3. the ordered supernet is searched under ``--max-macs=50%`` (of the original), the most accurate network
   found is exported (also as a timm model, the ``original`` format), fine-tuned (``--finetune-epochs``),
   and the same architecture is trained from scratch for as long as the original was.

Every step runs the real commands (``nas train/search/export/finetune``) and is cached under ``--root``, so
a rerun continues where it stopped. Writes results/data/own_model.json, then results/own_model.md from it
alone (``render``, also called by scripts/make_results.py). Needs Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from _nas import nas  # scripts/ is on sys.path when a script runs
from _results import data_path, machine_block, provenance, save_raw, write_markdown

NAME = "own_model"
MARKDOWN = "own_model.md"
MODELS: dict[str, tuple[str, dict[str, Any]]] = {  # key -> (timm model, model_kwargs)
    "resnet": ("resnet18d", {"stem_width": 8, "channels": [16, 32, 64, 128]}),
    "mobilenetv2": ("mobilenetv2_050", {}),
}
SETTINGS = (
    "root",
    "models",
    "train_limit",
    "val_limit",
    "resolution",
    "original_epochs",
    "original_lr",
    "supernet_epochs",
    "supernet_lr",
    "finetune_epochs",
    "trials",
    "bn_recal_batches",
    "seed",
    "threads",
)
LABELS = ("smallest", "median", "largest")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="runs/bench_own_model")
    ap.add_argument("--models", default="resnet,mobilenetv2", help=f"comma-separated, of {sorted(MODELS)}")
    ap.add_argument("--train-limit", type=int, default=6000)
    ap.add_argument("--val-limit", type=int, default=1000)
    ap.add_argument("--resolution", type=int, default=28)
    ap.add_argument("--original-epochs", type=int, default=8)
    ap.add_argument("--original-lr", type=float, default=0.1)
    ap.add_argument("--supernet-epochs", type=int, default=3)
    ap.add_argument("--supernet-lr", type=float, default=0.01)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--bn-recal-batches", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads here and in every `nas` call (1: on a shared machine, more threads only wait)",
    )
    ap.add_argument("--out", default="results/own_model.md")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the `nas` subprocesses
    import torch

    torch.set_num_threads(args.threads)
    raw = measure(args)
    save_raw(data_path(args.out, NAME), raw)
    out = Path(args.out)
    render(raw, out.parent, md_name=out.name)
    print(out.read_text())


def _cached(path: Path, make: Any) -> dict[str, Any]:
    """``path``'s JSON, made by ``make()`` the first time (atomically: a killed step is redone)."""
    from nas.run.files import atomic_write_json

    if not path.exists():
        atomic_write_json(path, make())
    return json.loads(path.read_text())


def train_original(
    args: argparse.Namespace, model_name: str, kwargs: dict[str, Any], out: Path
) -> dict[str, Any]:
    """Train the timm model itself on the benchmark's data splits; save its state dict (the checkpoint)."""
    import timm
    import torch
    import torch.nn.functional as F

    from nas.data import load_data, make_loader
    from nas.evaluation import accuracy

    data = load_data(
        "fashion_mnist",
        resolution=args.resolution,
        seed=args.seed,
        train_limit=args.train_limit,
        val_limit=args.val_limit,
    )
    torch.manual_seed(args.seed)
    model = timm.create_model(model_name, pretrained=False, num_classes=10, in_chans=1, **kwargs)
    decay = [p for p in model.parameters() if p.dim() > 1]
    rest = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": 3e-5}, {"params": rest, "weight_decay": 0.0}],
        lr=args.original_lr,
        momentum=0.9,
        nesterov=True,
    )
    steps = args.original_epochs * (len(data.train) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.original_lr, total_steps=steps, pct_start=0.1)
    started = time.perf_counter()
    for epoch in range(args.original_epochs):
        model.train()
        for x, y in make_loader(data.train, 64, shuffle=True, seed=args.seed * 1000 + epoch, drop_last=True):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y, label_smoothing=0.1).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # MobileNetV2 diverges at lr 0.1 without
            opt.step()
            sched.step()
    seconds = time.perf_counter() - started
    torch.save(model.state_dict(), out)
    dev = torch.device("cpu")
    return {
        "model": model_name,
        "model_kwargs": kwargs,
        "epochs": args.original_epochs,
        "seconds": seconds,
        "params": sum(p.numel() for p in model.parameters()),
        "val_accuracy": accuracy(model, make_loader(data.val, 256, shuffle=False), dev),
        "test_accuracy": accuracy(model, make_loader(data.test, 256, shuffle=False), dev),
    }


def _common(
    args: argparse.Namespace, model_name: str, kwargs: dict[str, Any], ckpt: Path, reorder: bool
) -> list[str]:
    options = json.dumps({"checkpoint": str(ckpt.resolve()), "model_kwargs": kwargs, "reorder": reorder})
    return [
        "--data=fashion_mnist",
        f"--train-limit={args.train_limit}",
        f"--data.val_limit={args.val_limit}",
        f"--data.resolution={args.resolution}",
        f"--space=timm:{model_name}",
        f"--space.options={options}",
        "--width-mult=1.0",
        f"--seed={args.seed}",
        "--search.devices=[laptop-cpu]",  # a spec-derived latency model: nothing is timed on this machine
        f"--train.bn_recal_batches={args.bn_recal_batches}",
        "--trackers=jsonl",
        "--quiet",
    ]


def evaluate_run(run_dir: Path) -> dict[str, Any]:
    """Validation accuracy of the smallest, median-MACs and largest architectures and the original's test
    accuracy, before and after training; MACs and parameters."""
    from nas.cost.metrics import network_metrics
    from nas.evaluation import evaluate_arch
    from nas.run.context import open_run
    from nas.training.checkpoint import load_supernet

    with open_run(run_dir, progress=False, quiet=True) as ctx:
        space = ctx.space
        rng = np.random.default_rng(0)
        sample = [space.sample(rng) for _ in range(2000)]
        macs = network_metrics(space, sample)["macs"]
        median = sample[int(np.argsort(macs)[len(sample) // 2])]
        archs = {"smallest": space.smallest(), "median": median, "largest": space.largest()}
        ref = network_metrics(space, [space.reference_arch(), *archs.values()])
        out: dict[str, Any] = {
            "original_is_largest": space.reference_arch() == space.largest(),
            "original_macs": float(ref["macs"][0]),
            "original_params": float(ref["params"][0]),
            "macs": {k: float(v) for k, v in zip(archs, ref["macs"][1:])},
            "archs": {k: a.to_dict() for k, a in archs.items()},
        }
        for when, net in (("step0", ctx.build_supernet()), ("trained", load_supernet(ctx))):
            out[when] = {label: {"val": evaluate_arch(ctx, net, a)} for label, a in archs.items()}
            # the original on the full test split: is it still as accurate as its checkpoint?
            out[when]["original"] = {"test": evaluate_arch(ctx, net, space.reference_arch(), "test")}
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run (or find) every step for every model; their data."""
    root = Path(args.root)
    started = time.perf_counter()
    models = {}
    for key in args.models.split(","):
        model_name, kwargs = MODELS[key]
        base = root / key
        base.mkdir(parents=True, exist_ok=True)
        ckpt = base / f"{model_name}.pth"
        original = _cached(
            base / "original.json",
            lambda: train_original(args, model_name, kwargs, ckpt),  # noqa: B023
        )
        print(f"{key}: original trained ({original['test_accuracy']:.4f} test)", flush=True)
        if original["test_accuracy"] < 0.2:  # chance is 0.1: a diverged original makes every later step void
            raise SystemExit(
                f"{key}: the original {model_name} did not learn (test accuracy"
                f" {original['test_accuracy']:.4f}); lower --original-lr, delete {base} and run again"
            )
        runs = {}
        for label, reorder in (("ordered", True), ("unordered", False)):
            run_dir = base / label
            common = _common(args, model_name, kwargs, ckpt, reorder)
            train = [f"--epochs={args.supernet_epochs}", f"--train.lr={args.supernet_lr}"]
            nas("train", "--run-dir", str(run_dir), *common, *train)
            runs[label] = _cached(run_dir / "bench_eval.json", lambda d=run_dir: evaluate_run(d))
            print(f"{key}: supernet {label} trained and evaluated", flush=True)
        run_dir = base / "ordered"
        common = _common(args, model_name, kwargs, ckpt, True)
        budget = "--max-macs=50%"
        if not (run_dir / "export" / "meta.json").exists():
            nas("search", "--run-dir", str(run_dir), *common, f"--trials={args.trials}", budget)
            nas("export", "--run-dir", str(run_dir), *common, budget, "--format=torch,original")
        meta = json.loads((run_dir / "export" / "meta.json").read_text())
        finetune = {}
        for init, epochs, lr in (
            ("inherited", args.finetune_epochs, args.supernet_lr),
            ("scratch", args.original_epochs, args.original_lr),
        ):
            nas(
                "finetune",
                "--run-dir",
                str(run_dir),
                f"--init={init}",
                f"--epochs={epochs}",
                f"--train.lr={lr}",
                "--quiet",
            )
            res = json.loads((run_dir / "finetune" / init / "result.json").read_text())
            finetune[init] = {
                k: res[k]
                for k in (
                    "val_accuracy_before",
                    "val_accuracy_after",
                    "test_accuracy_before",
                    "test_accuracy_after",
                    "epochs",
                    "seconds",
                )
            }
        print(f"{key}: searched, exported, fine-tuned", flush=True)
        history = (run_dir / "search" / "history.csv").read_text().splitlines()
        models[key] = {
            "model": model_name,
            "model_kwargs": kwargs,
            "original": original,
            "runs": runs,
            "search": {
                "trials": len(history) - 1,
                "arch": meta["arch"],
                "macs": meta["macs"],
                "params": meta["params"],
                "val_accuracy": meta["val_accuracy"],
                "test_accuracy": meta["test_accuracy"],
                "formats": {
                    f: {"ok": r["ok"], "max_abs_diff": r.get("max_abs_diff")}
                    for f, r in meta["formats"].items()
                },
                "original_format": {
                    k: meta["formats"].get("original", {}).get(k)
                    for k in ("model_class", "is_original", "ok")
                },
            },
            "finetune": finetune,
        }
    timing = root / "bench_seconds.json"
    total = (
        (json.loads(timing.read_text())["seconds"] if timing.exists() else 0.0)
        + time.perf_counter()
        - started
    )
    from nas.run.files import atomic_write_json

    atomic_write_json(timing, {"seconds": total})
    return {
        **provenance(NAME, {k: getattr(args, k) for k in SETTINGS}),
        "built_from": str(root),
        "wall_seconds": total,
        "models": models,
    }


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def _intro(raw: dict[str, Any]) -> list[str]:
    a = argparse.Namespace(**raw["settings"])
    command = (
        f"python scripts/bench_own_model.py --models {a.models} --train-limit {a.train_limit} --val-limit"
        f" {a.val_limit} --resolution {a.resolution} --original-epochs {a.original_epochs} --original-lr"
        f" {a.original_lr} --supernet-epochs {a.supernet_epochs} --supernet-lr {a.supernet_lr}"
        f" --finetune-epochs {a.finetune_epochs} --trials {a.trials} --bn-recal-batches {a.bn_recal_batches}"
    )
    return [
        "# Bring your own model: a timm ResNet and MobileNetV2 as search spaces (Fashion-MNIST)",
        "",
        (
            f"Each timm model is first trained here ({a.original_epochs} epochs, one-cycle SGD, peak lr"
            f" {a.original_lr}) on {a.train_limit} Fashion-MNIST training images at {a.resolution} px:"
            " that is the user's checkpoint. It then becomes a space (`timm:<model>` with `checkpoint:`),"
            f" whose supernet is trained for {a.supernet_epochs} epochs (lr {a.supernet_lr}, sandwich"
            " sampling, distilling from the original, the default with a checkpoint), once with importance"
            " ordering of every elastic layer's channels (the default) and once without. Subnetwork"
            " accuracies are on"
            f" {a.val_limit} held-out validation images, the original's and the searched network's on the"
            " full test split (10,000 images); every subnetwork's batch norm is recalibrated on"
            f" {a.bn_recal_batches} training batches first."
        ),
        "",
        (
            f"Reproduce: `{command}` (wall time, all calls for this root together:"
            f" {raw['wall_seconds'] / 60:.0f} min on this machine)."
        ),
        "",
        machine_block(raw["machine"]),
    ]


def _ordering(m: dict[str, Any]) -> list[str]:
    ordered, unordered = m["runs"]["ordered"], m["runs"]["unordered"]
    orig_macs = ordered["original_macs"]
    lines = [
        "### Importance ordering: subnetworks at step 0 and after supernet training (validation accuracy, %)",
        "",
        "| architecture | MACs (% of the original) | step 0, unordered | step 0, ordered | trained, unordered"
        " | trained, ordered |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label in LABELS:
        macs = ordered["macs"][label]
        name = f"{label} (= the original)" if label == "largest" and ordered["original_is_largest"] else label
        accs = [r[when][label]["val"] for when in ("step0", "trained") for r in (unordered, ordered)]
        lines.append(
            f"| {name} | {macs / 1e6:.3g} M ({100 * macs / orig_macs:.0f} %) | "
            + " | ".join(_pct(v) for v in accs)
            + " |"
        )
    return lines + [""]


def _kept(m: dict[str, Any]) -> list[str]:
    o, runs = m["original"], m["runs"]
    parts = []
    for label in ("ordered", "unordered"):
        after = runs[label]["trained"]["original"]["test"]
        parts.append(f"{_pct(after)} % {label} ({100 * (after - o['test_accuracy']):+.2f} points)")
    after = runs["ordered"]["trained"]["original"]["test"] - o["test_accuracy"]
    verdict = "met" if after >= -0.005 else f"missed by {100 * (-0.005 - after):.2f} points"
    return [
        (
            f"**Keeping what the original knew** (test accuracy): the checkpoint"
            f" {_pct(o['test_accuracy'])} %; the original architecture after supernet training {parts[0]},"
            f" {parts[1]}; target at most 0.5 points below the checkpoint (ordered): {verdict}."
        ),
        "",
    ]


def _search(m: dict[str, Any]) -> list[str]:
    o, s, ft = m["original"], m["search"], m["finetune"]
    orig_macs = m["runs"]["ordered"]["original_macs"]
    fmt = s["original_format"]
    diff = s["formats"].get("original", {}).get("max_abs_diff")
    return [
        "### Searched for half the original's MACs, fine-tuned, and the same network from scratch (test, %)",
        "",
        "| network | MACs (% of the original) | parameters | test accuracy |",
        "| --- | --- | --- | --- |",
        f"| the original (the checkpoint) | {orig_macs / 1e6:.3g} M (100 %) | {o['params'] / 1e6:.3g} M |"
        f" {_pct(o['test_accuracy'])} |",
        f"| found (`--max-macs=50%`, {s['trials']} trials), inherited weights | {s['macs'] / 1e6:.3g} M"
        f" ({100 * s['macs'] / orig_macs:.0f} %) | {s['params'] / 1e6:.3g} M | {_pct(s['test_accuracy'])} |",
        f"| found, fine-tuned {ft['inherited']['epochs']} epochs | | |"
        f" {_pct(ft['inherited']['test_accuracy_after'])} |",
        f"| found architecture from scratch, {ft['scratch']['epochs']} epochs (as long as the original) | | |"
        f" {_pct(ft['scratch']['test_accuracy_after'])} |",
        "",
        (
            f"Exported back to timm (`original` format): `{fmt['model_class']}`, checked in a separate"
            f" interpreter: {'ok' if fmt['ok'] else 'FAILED'} (max abs logit difference {diff})."
            f" Architecture: `{json.dumps(s['arch'])}`."
        ),
        "",
    ]


def render(raw: dict[str, Any], out_dir: Path, md_name: str = MARKDOWN, figures: bool = True) -> list[Path]:
    """own_model.md from the data alone (no figure)."""
    lines = _intro(raw)
    for key, m in raw["models"].items():
        o, kwargs = m["original"], m["model_kwargs"]
        lines += [
            f"## {key}: timm `{m['model']}`" + (f" with `{json.dumps(kwargs)}`" if kwargs else ""),
            "",
            (
                f"The checkpoint: {_pct(o['test_accuracy'])} % test ({_pct(o['val_accuracy'])} % val),"
                f" {o['params'] / 1e6:.3g} M parameters, {m['runs']['ordered']['original_macs'] / 1e6:.3g} M"
                f" MACs; trained in {o['seconds'] / 60:.1f} min."
            ),
            "",
            *_ordering(m),
            *_kept(m),
            *_search(m),
        ]
    return [write_markdown(out_dir / md_name, lines)]


if __name__ == "__main__":
    main()
