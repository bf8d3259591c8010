"""Fine-tuning (``nas finetune``): train the exported subnetwork on its own, from its inherited weights or
from scratch.

The search picks an architecture by its accuracy with weights shared with every
other subnetwork; the network a user deploys is usually trained further alone.
This command takes ``<run>/export/`` (``arch.json``, ``model.pt``), builds the
plain network (no supernet), and trains it with the run's data and ``train.*``
recipe through the same :class:`nas.training.trainer.Trainer` and
:class:`nas.training.plans.FixedPlan` that ``nas rank`` uses for standalone training, so
checkpoints, exact resume, AMP, EMA and the tracking backends are the run's own.

``--init inherited`` starts from the exported weights (and their batch-norm
statistics); ``--init scratch`` from fresh weights of the network's own shapes
(as ``nas rank`` trains). Each writes to ``<run>/finetune/<init>/``:

- ``config.yaml``: the fine-tuning recipe and the export it started from; a
  re-run reads it (no flags to repeat) and refuses settings that differ from it;
- ``checkpoint.pt``: written atomically after every epoch; a re-run resumes it;
- ``arch.json``, ``space.json``, ``model.pt`` (+ any ``--format``) and
  ``meta.json``: the same layout as an export, so ``nas.load_subnet`` loads it;
- ``result.json``: accuracy before and after on val and test, epochs, seconds.

Epoch and step events go to the run's trackers under ``finetune/<init>/...`` so
they never mix with the supernet's ``epoch`` curves.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from nas.evaluation import accuracy, recalibrate_bn
from nas.export.exporter import ExportError, failed_formats
from nas.export.formats import SPACE_FILE, ExportJob, load_subnet, resolve_formats, write_formats
from nas.run.config import (
    RECIPE,
    RUNTIME,
    ConfigError,
    NASConfig,
    build_config,
    flatten,
    keys_with,
    load_yaml,
    parse_override,
    set_key,
)
from nas.run.context import (
    CONFIG_FILE,
    RunContext,
    build_space,
    load_config_data,
    resolve_config,
    resolve_device,
)
from nas.run.files import RunDirError, RunLock, atomic_write_json, atomic_write_text, read_json
from nas.run.tracking import Trackers, make_trackers
from nas.training.checkpoint import apply_ema
from nas.training.plans import FixedPlan
from nas.training.trainer import Trainer

INITS = ("inherited", "scratch")
FINETUNE_DIR = "finetune"
CHECKPOINT_FILE = "checkpoint.pt"
RESULT_FILE = "result.json"
EXPORT_FILES = ("arch.json", "model.pt", SPACE_FILE, "meta.json")


class FinetuneTrackers(Trackers):
    """The run's trackers with every event kind under ``prefix/`` (e.g. ``finetune/scratch/epoch``).

    The Trainer logs ``epoch`` and ``train_step`` like supernet training does; the
    prefix keeps fine-tuning curves out of the supernet's in JSONL, TensorBoard
    (``finetune/scratch/epoch/val_acc``) and wandb (own step axis per kind).
    """

    def __init__(self, inner: Trackers, prefix: str) -> None:
        super().__init__(inner)
        self.prefix = prefix

    def log(self, kind: str, step: int, values: Mapping[str, Any]) -> None:
        super().log(f"{self.prefix}/{kind}", step, values)

    def close(self) -> None:
        """Nothing to do: the wrapped :class:`Trackers` owns the backends and closes them."""


@dataclass
class FinetuneContext(RunContext):
    """A run context whose checkpoint fingerprint also names the architecture and the initialisation."""

    identity: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "finetune": dict(self.identity)}


def finetune_dir(run_dir: Path, init: str) -> Path:
    """``<run>/finetune/<init>/``: one folder per initialisation, so both can coexist."""
    if init not in INITS:
        raise ConfigError(f"--init must be one of {', '.join(INITS)}, got {init!r}")
    return Path(run_dir) / FINETUNE_DIR / init


def require_export(run_dir: Path) -> Path:
    """The run's complete export folder, or an :class:`ExportError` saying which command makes it."""
    export = Path(run_dir) / "export"
    missing = [f for f in EXPORT_FILES if not (export / f).is_file()]
    if {"arch.json", "model.pt"} & set(missing):
        raise ExportError(
            f"no exported network in {run_dir} (expected export/arch.json and export/model.pt); run `nas"
            f" export --run-dir {run_dir}` first"
        )
    if (
        missing
    ):  # meta.json is written last: without it the export was interrupted or is from an older version
        raise ExportError(
            f"the export in {export} is incomplete (missing {', '.join(missing)}); run `nas export --run-dir"
            f" {run_dir}` again"
        )
    if not (Path(run_dir) / CONFIG_FILE).is_file():
        raise RunDirError(
            f"{run_dir} has an export but no {CONFIG_FILE}; nas finetune needs the run directory the export"
            " was made in"
        )
    return export


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and values (not of the file, whose bytes may vary)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def recipe(cfg: NASConfig) -> dict[str, Any]:
    """What shapes a fine-tuning (the settings with the ``recipe`` role); changing it needs a new folder."""
    flat = flatten(cfg)
    return {k: flat[k] for k in keys_with(RECIPE)}


def _may_change(key: str) -> bool:
    """Settings of the run fine-tuning may set: any ``train.*``, the recipe, and where and how it runs."""
    return key.startswith("train.") or key in keys_with(RECIPE) or key in keys_with(RUNTIME)


def resolve_finetune_config(
    run_dir: Path,
    out_dir: Path,
    base: Mapping[str, Any] | None,
    overrides: Sequence[str],
    validate: Callable[[NASConfig], None] | None = None,
) -> tuple[NASConfig, dict[str, Any] | None]:
    """The run's config <- this folder's saved recipe <- ``--config`` <- ``key=value``; and the saved record
    (or None).

    Refuses settings that would train something else than the run's network on the
    run's data (seed, data, space, ...) and, once the folder holds a checkpoint, a
    recipe that differs from the one it was started with, naming the keys. Before
    its first checkpoint a folder binds nothing: a start that failed at once (say,
    a too large ``train.accumulate``) can be retried with other settings.
    """
    run_cfg = resolve_config(run_dir, None, [])  # exactly the run's settings
    saved_path = out_dir / CONFIG_FILE
    saved = load_yaml(saved_path) if saved_path.exists() and (out_dir / CHECKPOINT_FILE).exists() else None
    cfg = copy.deepcopy(run_cfg)
    if saved is not None:
        try:
            for key, value in saved["recipe"].items():
                set_key(cfg, key, value)
        except (KeyError, TypeError, AttributeError):
            raise ConfigError(
                f"{saved_path} is not a fine-tuning record of this engine; move {out_dir} away to start over"
            ) from None
    for k, v in (base or {}).items():
        set_key(cfg, str(k), v)
    for item in overrides:
        set_key(cfg, *parse_override(item))
    before, after = flatten(run_cfg), flatten(cfg)
    foreign = sorted(k for k in before if before[k] != after[k] and not _may_change(k))
    if foreign:
        raise ConfigError(
            f"nas finetune trains {run_dir}'s exported network on the run's data: it cannot change"
            f" {', '.join(foreign)} (only train.* settings, --epochs, data.batch_size, device and trackers)"
        )
    if validate is not None:
        validate(cfg)
    if saved is not None:
        old, new = recipe(build_config({})) | saved["recipe"], recipe(cfg)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            raise ConfigError(
                f"fine-tuning in {out_dir} was started with other settings for {', '.join(changed)} "
                f"(saved in {saved_path}); drop those settings, or remove {out_dir} to start over"
            )
    return cfg, saved


def _check_source(out_dir: Path, saved: Mapping[str, Any] | None, source: Mapping[str, Any]) -> None:
    """An existing folder must continue from the export it started from (a re-export may hold another
    network)."""
    if saved is None:
        return
    old = saved.get("source", {})
    keys = ["arch_id", "weights_sha256"] if source["init"] == "inherited" else ["arch_id"]
    changed = [k for k in keys if old.get(k) != source.get(k)]
    if changed:
        what = (
            f"architecture {old.get('arch_id')} -> {source['arch_id']}"
            if "arch_id" in changed
            else "the exported weights"
        )
        raise ConfigError(
            f"the export changed since fine-tuning in {out_dir} started ({what}); remove {out_dir} to"
            " fine-tune the new export"
        )


def initial_network(space: Any, export_dir: Path, init: str, seed: int) -> nn.Module:
    """The network training starts from: the export as saved (weights and BN statistics), or freshly
    initialised.

    ``scratch`` uses the space's ``build_standalone`` (Kaiming init for the
    network's own shapes, seeded), the network ``nas rank`` trains alone.
    """
    if init == "inherited":
        return load_subnet(export_dir)
    if init == "scratch":
        arch = space.arch(json.loads((export_dir / "arch.json").read_text()))
        return space.build_standalone(arch, seed=seed)
    raise ConfigError(f"--init must be one of {', '.join(INITS)}, got {init!r}")


def _accuracies(model: nn.Module, ctx: RunContext) -> dict[str, float]:
    return {
        "val": accuracy(model, ctx.loader("val"), ctx.device),
        "test": accuracy(model, ctx.loader("test"), ctx.device),
    }


def _done(out_dir: Path, formats: list[str]) -> dict[str, Any] | None:
    """The finished result when ``out_dir`` is complete and holds every requested format, else None."""
    if not all((out_dir / f).is_file() for f in (RESULT_FILE, "meta.json", CHECKPOINT_FILE)):
        return None
    meta = read_json(out_dir / "meta.json")
    ok = {f for f, r in meta.get("formats", {}).items() if r.get("ok")}
    return read_json(out_dir / RESULT_FILE) if set(formats) <= ok else None


def _write_model(
    ctx: RunContext, net: nn.Module, export_dir: Path, out_dir: Path, formats: list[str]
) -> dict[str, dict[str, Any]]:
    """Write the trained network like ``nas export`` does (same files, each format verified on a val
    batch)."""
    static = net.to("cpu", memory_format=torch.contiguous_format).eval()
    arch_text = (export_dir / "arch.json").read_text()
    arch = ctx.space.arch(json.loads(arch_text))
    x, y = next(iter(ctx.loader("val")))
    with torch.no_grad():
        logits = static(x)
    (out_dir / "meta.json").unlink(
        missing_ok=True
    )  # its presence means a complete output; this one is not yet
    atomic_write_text(out_dir / "arch.json", arch_text)
    job = ExportJob(
        net=static,
        out_dir=out_dir,
        space=ctx.space,
        spec=ctx.space.to_spec(arch),
        x=x,
        y=y,
        logits=logits,
        space_json=read_json(export_dir / SPACE_FILE),
    )
    return write_formats(job, formats)


def run_finetune(
    run_dir: str | Path,
    init: str = "inherited",
    base: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    formats: Sequence[str] = ("torch",),
    progress: bool = True,
    quiet: bool = False,
    validate: Callable[[NASConfig], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune (or resume, or just report) the run's exported network; returns ``result.json``'s content.

    ``validate`` checks the resolved settings before anything is written (the command's checks).

    ``formats`` are written besides ``torch`` (always written: ``nas.load_subnet``
    reads it); ``["all"]`` means every format that applies to the space. A finished
    folder whose files include every requested format is reported without training;
    one that lacks a format gets it written from its last checkpoint.
    """
    run_dir = Path(run_dir).expanduser().resolve()
    export_dir = require_export(run_dir)
    out_dir = finetune_dir(run_dir, init)
    with ExitStack() as stack:
        stack.enter_context(
            RunLock(run_dir)
        )  # a second process gets "another process (pid N) is using run directory ..."
        cfg, saved = resolve_finetune_config(run_dir, out_dir, base, overrides, validate)
        exported = torch.load(export_dir / "model.pt", map_location="cpu", weights_only=True)
        arch_id = json.loads((export_dir / "meta.json").read_text()).get("arch_id")
        source = {
            "init": init,
            "export": str(export_dir),
            "arch_id": arch_id,
            "weights_sha256": weights_digest(exported),
        }
        _check_source(out_dir, saved, source)

        def say(msg: str) -> None:
            if not quiet:
                print(msg, file=sys.stderr, flush=True)

        device = resolve_device(cfg.device)
        data = load_config_data(cfg)
        space = build_space(cfg, data)
        all_formats = [str(f).strip().lower() for f in formats] == ["all"]
        wanted = resolve_formats(
            None if all_formats else ["torch", *formats], space
        )  # an unknown format is refused before any training
        done = _done(out_dir, wanted)
        if done is not None:
            say(f"fine-tuning ({init}) already finished in {out_dir}; remove it to train again")
            return {**done, "already_done": True}
        out_dir.mkdir(parents=True, exist_ok=True)
        if (
            saved is None
        ):  # a fresh start: results left by an earlier recipe (checkpoint removed) no longer apply
            for name in (RESULT_FILE, "meta.json"):
                (out_dir / name).unlink(missing_ok=True)
        atomic_write_text(
            out_dir / CONFIG_FILE,
            yaml.safe_dump({"init": init, "source": source, "recipe": recipe(cfg)}, sort_keys=False),
        )
        trackers = stack.enter_context(
            make_trackers(
                run_dir,
                cfg.trackers,
                config={f"finetune_{init}": recipe(cfg)},
                wandb_mode=cfg.wandb_mode,
                project=cfg.wandb_project,
            )
        )
        prefix = f"{FINETUNE_DIR}/{init}"
        ctx = FinetuneContext(
            cfg,
            run_dir,
            device,
            data,
            space,
            FinetuneTrackers(trackers, prefix),
            progress=progress,
            quiet=quiet,
            identity={"arch_id": arch_id, "init": init},
        )
        net = initial_network(space, export_dir, init, cfg.seed)
        before = _accuracies(net.to(device), ctx)
        say(
            f"fine-tuning {arch_id} ({init}) for {cfg.train.epochs} epochs in {out_dir}: val acc"
            f" {before['val']:.4f}, test acc {before['test']:.4f} before"
        )
        trainer = Trainer(
            ctx, net, FixedPlan(), ckpt=out_dir / CHECKPOINT_FILE, seed=cfg.seed, desc=f"finetune {init}"
        )
        trainer.fit()
        model = trainer.model
        if (
            trainer.ema is not None
        ):  # the recipe keeps averaged weights: they are the result (BN re-estimated for them)
            apply_ema(model, trainer.ema)
            recalibrate_bn(
                model, ctx.loader("train", shuffle=True, epoch=-1), cfg.train.bn_recal_batches, device
            )
        after = _accuracies(model, ctx)
        history = trainer.pos.history
        export_meta = read_json(export_dir / "meta.json")
        result: dict[str, Any] = {
            "init": init,
            "arch_id": arch_id,
            "epochs": cfg.train.epochs,
            "seconds": round(
                sum(h.get("epoch_seconds", 0.0) for h in history), 3
            ),  # training time, summed over resumed sessions
            "val_accuracy_before": before["val"],
            "test_accuracy_before": before["test"],
            "val_accuracy_after": after["val"],
            "test_accuracy_after": after["test"],
            "export_val_accuracy": export_meta.get("val_accuracy"),
            "export_test_accuracy": export_meta.get("test_accuracy"),
            "ema": trainer.ema is not None,
            "history": history,
            "recipe": recipe(cfg),
            "model_dir": str(out_dir),
        }
        results = _write_model(ctx, model, export_dir, out_dir, wanted)
        meta = {
            **{
                k: export_meta[k]
                for k in ("arch", "arch_id", "space", "input_shape", "num_classes", "data")
                if k in export_meta
            },
            "init": init,
            "finetuned_from": str(export_dir),
            "params": sum(p.numel() for p in model.parameters()),
            "val_accuracy": after["val"],
            "test_accuracy": after["test"],
            "epochs": cfg.train.epochs,
            "formats": results,
            "files": {"arch": "arch.json", **{fmt: res["file"] for fmt, res in results.items() if res["ok"]}},
            "torch_version": torch.__version__,
            "finetuned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_json(out_dir / "meta.json", meta)
        atomic_write_json(
            out_dir / RESULT_FILE, result
        )  # last: its presence means the fine-tuning is complete
        values = {
            k: result[k]
            for k in (
                "val_accuracy_before",
                "test_accuracy_before",
                "val_accuracy_after",
                "test_accuracy_after",
                "seconds",
            )
        }
        ctx.trackers.log("result", cfg.train.epochs, values)
        trackers.summary({f"{prefix}/{k}": v for k, v in values.items()})
        failed = failed_formats(meta)
        if failed:
            raise ExportError(
                f"format(s) failed: {'; '.join(f'{f}: {e}' for f, e in failed.items())} (the others are in"
                f" {out_dir}; see meta.json)"
            )
        return result


__all__ = [
    "INITS",
    "FinetuneTrackers",
    "finetune_dir",
    "initial_network",
    "recipe",
    "require_export",
    "resolve_finetune_config",
    "run_finetune",
]
