"""Run configuration: dataclasses with commented defaults, YAML files and ``--key=value`` overrides.

Every key is checked: an unknown key or a value of the wrong type is a
:class:`ConfigError` naming the key, never a silent default.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A configuration key or value that cannot be used (the message names it)."""


@dataclass
class DataConfig:
    name: str = "digits"  # digits | fashion_mnist | cifar10 | cifar100 | imagefolder
    data_dir: str | None = None  # where the files are; Fashion-MNIST is also found in /usr/share/datasets
    resolution: int | None = None  # None: the data set's natural size (digits are upsampled to 32)
    train_limit: int | None = None  # keep this many training images (quick CPU benchmarks)
    val_limit: int | None = None  # validation images kept (default: all; max(1000, train_limit/5) with train_limit)
    download: bool = False  # torchvision download for CIFAR, only when asked
    batch_size: int = 64
    workers: int = 0  # DataLoader workers; in-memory data sets need none


@dataclass
class SpaceConfig:
    name: str = "mbv3"
    width_mult: float = 0.5  # 0.5 keeps the digits quick-start under 5 minutes on 2 CPU cores
    options: dict[str, Any] = field(default_factory=dict)  # any other keyword of the space's factory
    supernet: str = "entangled"  # entangled | balanced_mixture (see `nas spaces`): how architectures share weights
    supernet_options: dict[str, Any] = field(default_factory=dict)  # e.g. balanced_mixture: {k: 4}


@dataclass
class TrainConfig:
    epochs: int = 8
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1  # peak learning rate after warm-up (scaled for batch 64)
    momentum: float = 0.9
    weight_decay: float = 3e-5
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.1
    sampler: str = "sandwich"  # uniform | sandwich | fair | sorted | progressive (see nas/sampling.py)
    num_random: int = 2  # random subnets per step, for the rules that take them
    sampler_options: dict[str, Any] = field(default_factory=dict)  # rule-specific (e.g. progressive: schedule)
    distill: bool = False  # in-place distillation: the largest subnet's soft targets teach the others
    distill_temperature: float = 1.0
    distill_alpha: float = 1.0  # weight of the distillation term vs. cross-entropy for non-largest subnets
    ema_decay: float | None = None  # keep an exponential moving average of the weights (search/export use it)
    grad_clip: float | None = 5.0
    accumulate: int = 1  # micro-batches per optimizer step (gradient accumulation)
    bn_momentum: float | None = 0.1  # running-stat momentum during training; 0 = never track, None = cumulative
    bn_recal_batches: int = 10  # batches used to recompute BN statistics before evaluating a subnet
    amp: str = "none"  # none | bf16 | fp16 (fp16 uses a gradient scaler; CUDA only)
    channels_last: bool = False  # NHWC memory format (faster convolutions on recent GPUs)
    compile: bool = False  # torch.compile the supernet (recompiles per new active shape: long runs only)
    augment: str = "none"  # none | crop | crop_flip: batch-wise augmentation on the training device
    latency_weight: float = 0.1  # single_path supernets: loss = CE + latency_weight * log(E[latency] / search.latency_budget_ms)
    checkpoint_every_steps: int = 0  # also checkpoint inside an epoch every N steps (0: end of epoch only)
    deterministic: bool = False  # torch.use_deterministic_algorithms (bit-exact resume; slower on GPU)


@dataclass
class SearchConfig:
    controller: str = "nsga2"
    controller_options: dict[str, Any] = field(default_factory=dict)  # the controller's own settings, e.g. darts: {epochs: 3}
    trials: int = 40
    latency_budget_ms: float | None = None  # constraint on predicted latency; None = unconstrained
    population: int = 10  # NSGA-II population size
    calibration_archs: int = 40  # architectures timed to fit the cpu cost profile (first run only)
    profile: str | None = None  # device profile JSON for the first device; None = calibrate this machine (cached)
    devices: list[str] = field(default_factory=lambda: ["cpu"])  # latency objectives: cpu, spec names, profile paths; budget = first
    storage: str | None = None  # Optuna RDB URL shared by several workers (postgresql://user@host/db); None = <run_dir>/study.db
    study: str | None = None  # study name in that storage (None: "search"); workers with the same storage and study share one search
    heartbeat_s: float = 10.0  # shared storage: a worker's running trial is failed (and retried) after 3 heartbeats without news


@dataclass
class ExportConfig:
    trial: int | None = None  # Optuna trial number to export; None = best under the budget
    latency_repeats: int = 50  # timed runs for the measured latency (median)
    formats: list[str] | None = None  # torch | torchscript | torch_export (.pt2) | onnx | timm (MBConv spaces); None = all that apply


@dataclass
class NASConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    trackers: list[str] = field(default_factory=lambda: ["jsonl", "tensorboard", "wandb"])
    wandb_project: str = "nas-engine"
    wandb_mode: str | None = None  # None: online only when wandb is configured, else offline
    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Short flags users type most often -> dotted config keys.
ALIASES = {
    "space": "space.name",
    "supernet": "space.supernet",
    "data": "data.name",
    "data-dir": "data.data_dir",
    "epochs": "train.epochs",
    "trials": "search.trials",
    "storage": "search.storage",
    "study": "search.study",
    "controller": "search.controller",
    "latency-budget-ms": "search.latency_budget_ms",
    "width-mult": "space.width_mult",
    "batch-size": "data.batch_size",
    "train-limit": "data.train_limit",
    "trial": "export.trial",
    "format": "export.formats",
    "download": "data.download",
    "device": "device",
    "seed": "seed",
}


def build_config(base: Mapping[str, Any] | None = None, overrides: Sequence[str] = ()) -> NASConfig:
    """Defaults <- ``base`` mapping (e.g. from YAML) <- ``key=value`` overrides."""
    cfg = NASConfig()
    if base:
        for k, v in base.items():
            set_key(cfg, str(k), v)
    for item in overrides:
        key, value = parse_override(item)
        set_key(cfg, key, value)
    return cfg


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.epochs=5"`` -> ("train.epochs", 5); the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. train.epochs=5)")
    key, raw = item.split("=", 1)
    key = ALIASES.get(key.strip().lstrip("-"), key.strip().lstrip("-"))
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def set_key(cfg: Any, dotted: str, value: Any, _prefix: str = "") -> None:
    """Set ``dotted`` (relative to ``cfg``; ``_prefix`` is only for messages) with type checks."""
    parts = _prefix.split(".")[:-1] + dotted.split(".") if _prefix else dotted.split(".")
    skip = len(parts) - len(dotted.split("."))
    dotted = ".".join(parts)
    target = cfg
    for i, part in enumerate(parts[:-1]):
        if i < skip:
            continue
        target_fields = _fields(target)
        if part not in target_fields:
            raise ConfigError(f"unknown config key {'.'.join(parts[: i + 1])!r}; known: {sorted(target_fields)}")
        target = getattr(target, part)
        if isinstance(target, dict):  # free-form options section: the rest of the key is the option name
            target[".".join(parts[i + 1 :])] = value
            return
    last = parts[-1]
    target_fields = _fields(target)
    if last not in target_fields:
        where = ".".join(parts[:-1]) or "top level"
        raise ConfigError(f"unknown config key {dotted!r} ({where} keys: {sorted(target_fields)})")
    f = target_fields[last]
    if dataclasses.is_dataclass(getattr(target, last)):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {dotted!r} is a section; give a mapping or set {dotted}.<key>=...")
        for k, v in value.items():
            set_key(getattr(target, last), str(k), v, _prefix=dotted + ".")
        return
    setattr(target, last, _coerce(dotted, value, f.type))


def _fields(obj: Any) -> dict[str, dataclasses.Field]:
    hints = typing.get_type_hints(type(obj))
    out = {}
    for f in dataclasses.fields(obj):
        f.type = hints[f.name]
        out[f.name] = f
    return out


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check ``value`` against the annotation ``typ`` (int -> float is allowed)."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, value, a)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} expects a list, got {value!r}")
        (item_t, *_) = typing.get_args(typ) or (Any,)
        return [_coerce(key, v, item_t) for v in value]
    if origin is dict or typ is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r} expects a mapping, got {value!r}")
        return dict(value)
    if typ is Any:
        return value
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} expects true/false, got {value!r}")
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; users mean the number
    if typ is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if typ is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"config key {key!r} expects {getattr(typ, '__name__', typ)}, got {value!r}")
