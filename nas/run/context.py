"""A run's shared state: config, run directory, data, search space, device, process and trackers.

Every command (train, search, export) opens the same run directory through
:func:`open_run`, which locks it, records the resolved config and refuses a
config whose data or space differ from the ones the directory was started with.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from nas.data import DataBundle, load_data, make_loader
from nas.run.config import (
    RUN,
    ConfigError,
    NASConfig,
    build_config,
    flatten,
    keys_with,
    load_yaml,
    parse_override,
    resolve_defaults,
    set_key,
)
from nas.run.files import LOCK_NAME, RunLock, atomic_write_text, prepare_run_dir, remove_stale_temp_files
from nas.run.tracking import Trackers, make_trackers
from search_spaces import SearchSpace, build_supernet, create_space
from search_spaces.errors import UserError

CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job; world_size 1 means no process group is used."""

    rank: int
    world_size: int
    local_rank: int
    is_main: bool


SINGLE = DistInfo(rank=0, world_size=1, local_rank=0, is_main=True)
"""A run in one process (the marker every single-process caller passes)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for ``cuda`` without a GPU is an error, not a silent CPU
    run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' requested but no CUDA GPU is visible; use --device=cpu or --device=auto"
        )
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ConfigError(f"device={name!r} is not allowed: device takes auto, cpu, cuda or cuda:N")
    return torch.device(name)


@dataclass
class RunContext:
    cfg: NASConfig
    run_dir: Path
    device: torch.device
    data: DataBundle
    space: SearchSpace
    trackers: Trackers
    progress: bool = True
    quiet: bool = False
    _stack: ExitStack = field(default_factory=ExitStack, repr=False)

    def say(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint depends on: loading it under another space or data set would be wrong."""
        fp: dict[str, Any] = {
            "space": self.space.describe()["name"],
            "space_cfg": repr(self.space.cfg),
            "data": self.data.name,
        }
        sp = self.cfg.space
        if (
            sp.supernet != "entangled" or sp.supernet_options
        ):  # absent for the default: older checkpoints stay loadable
            fp.update(supernet=sp.supernet, supernet_options=dict(sp.supernet_options))
        return fp

    def build_supernet(self) -> nn.Module:
        """A fresh supernet of the configured kind (``space.supernet``), its weights seeded by the run's seed
        alone; options the kind refuses are a :class:`ConfigError` naming them.

        The caller's global torch RNG is left as it was.
        """
        sp = self.cfg.space
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            try:
                return build_supernet(self.space, sp.supernet, seed=self.cfg.seed, **sp.supernet_options)
            except (TypeError, ValueError) as exc:  # a kind refuses options (or a space) it cannot build
                if isinstance(exc, UserError):
                    raise
                raise ConfigError(
                    f"space.supernet={sp.supernet!r} with space.supernet_options={dict(sp.supernet_options)}:"
                    f" {exc}"
                ) from None

    def loader(self, split: str, shuffle: bool = False, epoch: int = 0) -> DataLoader:
        """Deterministic loader: the order depends only on (seed, epoch), so resume replays it exactly."""
        ds = {"train": self.data.train, "val": self.data.val, "test": self.data.test}[split]
        return make_loader(
            ds,
            batch_size=self.cfg.data.batch_size,
            shuffle=shuffle,
            seed=self.cfg.seed * 100_003 + epoch,
            num_workers=self.cfg.data.workers,
            drop_last=shuffle and len(ds) > self.cfg.data.batch_size,
        )

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "RunContext":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _identity(cfg: NASConfig) -> dict[str, Any]:
    """The settings a run directory is bound to (the keys declared with the ``run`` role)."""
    flat = flatten(cfg)
    return {k: flat[k] for k in keys_with(RUN)}


def resolve_config(
    run_dir: Path | None, base: Mapping[str, Any] | None, overrides: Sequence[str]
) -> NASConfig:
    """Defaults <- the run directory's saved config <- config file <- ``key=value`` overrides.

    Re-running a command on a run directory therefore needs no repeated flags, and
    flags that would change what the supernet was trained on are refused.
    """
    saved_path = run_dir / CONFIG_FILE if run_dir is not None else None
    saved = load_yaml(saved_path) if saved_path is not None and saved_path.exists() else {}
    cfg = build_config(saved)
    for k, v in (base or {}).items():
        set_key(cfg, str(k), v)
    for item in overrides:
        set_key(cfg, *parse_override(item))
    resolve_defaults(cfg)
    if saved:
        before, after = _identity(resolve_defaults(build_config(saved))), _identity(cfg)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        if changed:
            raise ConfigError(
                f"run directory {run_dir} was started with other settings for {', '.join(changed)} "
                f"(saved in {saved_path}); use a new --run-dir or drop those settings"
            )
    return cfg


def load_config_data(cfg: NASConfig) -> DataBundle:
    d = cfg.data
    return load_data(
        d.name,
        data_dir=d.data_dir,
        resolution=d.resolution,
        seed=cfg.seed,
        train_limit=d.train_limit,
        val_limit=d.val_limit,
        download=d.download,
    )


def build_space(cfg: NASConfig, data: DataBundle | None = None) -> SearchSpace:
    """The configured search space, shaped for the data set (classes, channels, resolution)."""
    data = data if data is not None else load_config_data(cfg)
    options = {
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        "resolution": data.resolution,
        "width_mult": cfg.space.width_mult,
    }
    options.update(cfg.space.options)
    try:
        return create_space(cfg.space.name, **options)
    except (
        TypeError,
        ValueError,
    ) as exc:  # the space's factory refuses an option (unknown keyword, bad value)
        if isinstance(exc, UserError):
            raise
        raise ConfigError(
            f"space.name={cfg.space.name!r} with space.options={dict(cfg.space.options)}: {exc}"
        ) from None


def open_run(
    run_dir: str | Path,
    base: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
    quiet: bool = False,
    dist: DistInfo | None = None,
    search_only: bool = False,
    validate: Callable[[NASConfig], None] | None = None,
    preflight: Callable[[RunContext], None] | None = None,
) -> RunContext:
    """Lock ``run_dir``, resolve and check the config, load data and build the space, then save the config.

    Nothing in the run directory is written until every check has passed: the
    command's ``validate`` (on the resolved config, before the directory is even
    created), the lock, data, space, and the command's ``preflight`` (which sees
    the context before the config is saved). A refused command leaves the
    directory as it was, and one that did not exist is not left behind.
    Under torchrun only rank 0 locks the directory, writes the config and tracks;
    the other ranks read the same settings and stay silent. A search-only command
    on a shared storage (``search.storage``) takes the lock shared: several search
    workers may use the directory at once, a training run may not.
    """
    dist = dist or SINGLE
    run_dir = Path(run_dir).expanduser().resolve()
    missing = _missing_ancestors(run_dir)
    stack = ExitStack()
    try:
        cfg = resolve_config(run_dir, base, overrides)
        if validate is not None:
            validate(cfg)
        if dist.is_main:
            run_dir = prepare_run_dir(run_dir)
            lock = stack.enter_context(
                RunLock(run_dir, shared=search_only and cfg.search.storage is not None)
            )
            if not lock.shared:  # a killed run's half-written temp files; nobody else can be writing now
                remove_stale_temp_files(run_dir)
        device = resolve_device(cfg.device)
        if device.type == "cuda" and dist.world_size > 1:
            device = torch.device("cuda", dist.local_rank)
        data = load_config_data(cfg)
        space = build_space(cfg, data)
        ctx = RunContext(
            cfg,
            run_dir,
            device,
            data,
            space,
            Trackers([]),
            progress=progress,
            quiet=quiet if dist.is_main else True,
            _stack=stack,
        )
        if preflight is not None:
            preflight(ctx)
        if dist.is_main:
            text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
            saved = run_dir / CONFIG_FILE
            if (
                not saved.exists() or saved.read_text(encoding="utf-8") != text
            ):  # unchanged settings: file untouched
                atomic_write_text(saved, text)
            ctx.trackers = stack.enter_context(
                make_trackers(
                    run_dir,
                    cfg.trackers,
                    config=cfg.to_dict(),
                    wandb_mode=cfg.wandb_mode,
                    project=cfg.wandb_project,
                )
            )
    except BaseException:
        stack.close()
        if dist.is_main:
            _remove_if_untouched(missing)
        raise
    return ctx


def _missing_ancestors(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first (what a refused command must not leave
    behind)."""
    out = []
    while not path.exists() and path != path.parent:
        out.append(path)
        path = path.parent
    return out


def _remove_if_untouched(created: list[Path]) -> None:
    """Remove directories this command created, if they hold nothing but the lock file."""
    for d in created:
        try:
            entries = os.listdir(d)
        except OSError:
            continue
        if entries not in ([], [LOCK_NAME]):
            return
        try:
            if entries:
                (d / LOCK_NAME).unlink()
            d.rmdir()
        except OSError:
            return
