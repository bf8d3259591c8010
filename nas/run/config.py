"""Run configuration: dataclasses with commented defaults, YAML files and ``--key=value`` overrides.

Every key is checked: an unknown key or a value of the wrong type is a
:class:`ConfigError` naming the key, never a silent default.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from search_spaces.errors import UserError

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(UserError, ValueError):
    """A configuration key or value that cannot be used (the message names it)."""


# Roles a key plays (declared once, next to the key; see :func:`keys_with`):
RUN = (  # part of the run's identity: fixed once a run directory exists (a trained supernet depends on it)
    "run"
)
RECIPE = "recipe"  # shapes the training of one network alone (standalone ranking, fine-tuning)
SUPERNET = "supernet"  # shapes supernet training only (a network trained alone ignores it)
RUNTIME = "runtime"  # where and how a command runs, not what it computes: free to change anywhere
ROLES = (RUN, RECIPE, SUPERNET, RUNTIME)


# --------------------------------------------------------------------------- domains


@dataclass(frozen=True)
class Domain:
    """What values a setting allows (``None`` is allowed exactly when the setting's type allows it)."""

    why: str = ""  # what a value outside the domain would do, said in the error

    def check(self, key: str, value: Any) -> None:
        """Raise :class:`ConfigError` naming ``key``, ``value`` and what is allowed."""

    def describe(self) -> str:
        return "any value of its type"

    def refuse(self, key: str, value: Any) -> ConfigError:
        reason = f" ({self.why})" if self.why else ""
        short = short_form(key)
        alias = f" (--{short})" if short else ""
        return ConfigError(f"{key}={value!r}{alias} is not allowed: {key} takes {self.describe()}{reason}")


@dataclass(frozen=True)
class Range(Domain):
    """A finite number in ``[lo, hi]`` (either end open, either end absent)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def check(self, key: str, value: Any) -> None:
        if not math.isfinite(value):
            raise self.refuse(key, value)
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            raise self.refuse(key, value)
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            raise self.refuse(key, value)

    def describe(self) -> str:
        lo = None if self.lo is None else f"{'>' if self.lo_open else '>='} {_number(self.lo)}"
        hi = None if self.hi is None else f"{'<' if self.hi_open else '<='} {_number(self.hi)}"
        return "a finite number " + " and ".join(p for p in (lo, hi) if p) if lo or hi else "a finite number"


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


@dataclass(frozen=True)
class OneOf(Domain):
    """One of a fixed set of values."""

    values: tuple[Any, ...] = ()

    def check(self, key: str, value: Any) -> None:
        if value not in self.values:
            raise self.refuse(key, value)

    def describe(self) -> str:
        return "one of " + ", ".join(str(v) for v in self.values)


@dataclass(frozen=True)
class Pattern(Domain):
    """A string matching ``regex`` (whole string), described as ``shown``."""

    regex: str = ".*"
    shown: str = ""

    def check(self, key: str, value: Any) -> None:
        if not re.fullmatch(self.regex, str(value)):
            raise self.refuse(key, value)

    def describe(self) -> str:
        return self.shown or f"a string matching {self.regex}"


@dataclass(frozen=True)
class Named(Domain):
    """The name of a member of one of the engine's registries (checked by the commands, which hold them)."""

    family: str = ""

    def describe(self) -> str:
        return f"the name of a registered {self.family}"


ANY = Domain()
COUNT = Range(lo=1)  # a whole number of things, at least one
NON_NEGATIVE = Range(lo=0)
POSITIVE = Range(lo=0, lo_open=True)
FRACTION = Range(lo=0, hi=1)
OPTIMIZERS = ("sgd", "adamw")
AMP_MODES = ("none", "bf16", "fp16")
LR_SCHEDULES = ("cosine", "constant")
WANDB_MODES = ("online", "offline", "disabled")
INFERENCE_RUNTIMES = ("torch", "onnxruntime", "openvino", "executorch", "litert")  # = nas.cost.RUNTIMES
EVALUATORS = ("supernet", "table")


def setting(
    default: Any, doc: str, *roles: str, domain: Domain = ANY, factory: Callable[[], Any] | None = None
) -> Any:
    """A config field: its default, its one-line description, the roles it plays and its domain (written
    once, here)."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown config role(s) {unknown}; roles: {ROLES}")
    meta = {"doc": doc, "roles": frozenset(roles), "domain": domain}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- settings


@dataclass
class DataConfig:
    name: str = setting("digits", "data set", RUN, domain=Named(family="data set"))
    data_dir: str | None = setting(
        None, "where the files are; Fashion-MNIST is also found in /usr/share/datasets", RUNTIME
    )
    resolution: int | None = setting(
        None,
        "image side; None: the data set's natural size (digits are upsampled to 32)",
        RUN,
        domain=Range(lo=4, hi=4096),
    )
    train_limit: int | None = setting(
        None, "keep this many training images (quick CPU benchmarks)", RUN, domain=COUNT
    )
    val_limit: int | None = setting(
        None,
        "validation images kept (default: all; max(1000, train_limit/5) with train_limit)",
        RUN,
        domain=Range(lo=1, why="every accuracy is measured on the validation split"),
    )
    download: bool = setting(False, "torchvision download for CIFAR, only when asked", RUNTIME)
    batch_size: int = setting(64, "global batch size", RUN, RECIPE, domain=COUNT)
    workers: int = setting(
        0, "DataLoader workers; in-memory data sets need none", RUNTIME, domain=Range(lo=0, hi=256)
    )


@dataclass
class SpaceConfig:
    name: str = setting(
        "mbv3", "search space (see `nas spaces`), or timm:<model>", RUN, domain=Named(family="search space")
    )
    width_mult: float = setting(
        0.5,
        "channel multiplier; 0.5 keeps the digits quick start under 5 minutes on 2 CPU cores",
        RUN,
        domain=Range(lo=0, hi=16, lo_open=True),
    )
    options: dict[str, Any] = setting(None, "any other keyword of the space's factory", RUN, factory=dict)
    supernet: str = setting(
        "entangled",
        "supernet kind (see `nas spaces`): how architectures share weights",
        RUN,
        SUPERNET,
        domain=Named(family="supernet kind"),
    )
    supernet_options: dict[str, Any] = setting(
        None, "the supernet kind's options, e.g. balanced_mixture: {k: 4}", RUN, SUPERNET, factory=dict
    )


@dataclass
class TrainConfig:
    epochs: int = setting(8, "training epochs", RUN, RECIPE, domain=COUNT)
    optimizer: str = setting("sgd", "optimizer", RUN, RECIPE, domain=OneOf(values=OPTIMIZERS))
    lr: float = setting(
        0.1,
        "peak learning rate after warm-up (scaled for batch 64)",
        RUN,
        RECIPE,
        domain=POSITIVE,
    )
    momentum: float = setting(
        0.9, "SGD momentum (Nesterov when > 0)", RUN, RECIPE, domain=Range(lo=0, hi=1, hi_open=True)
    )
    weight_decay: float = setting(
        3e-5, "weight decay of weights with more than one dimension", RUN, RECIPE, domain=FRACTION
    )
    warmup_epochs: float = setting(
        0.5, "linear warm-up before the cosine schedule", RUN, RECIPE, domain=NON_NEGATIVE
    )
    lr_schedule: str = setting(
        "cosine",
        "learning rate after the warm-up: cosine decay to zero, or constant",
        RUN,
        RECIPE,
        domain=OneOf(values=LR_SCHEDULES),
    )
    label_smoothing: float = setting(
        0.1, "cross-entropy label smoothing", RUN, RECIPE, domain=Range(lo=0, hi=1, hi_open=True)
    )
    sampler: str = setting(
        "sandwich",
        "which subnets each step trains (see README: uniform, sandwich, fair, sorted, progressive)",
        RUN,
        SUPERNET,
        domain=Named(family="sampling rule"),
    )
    num_random: int = setting(
        2, "random subnets per step, for the rules that take them", RUN, SUPERNET, domain=Range(lo=0, hi=1024)
    )
    sampler_options: dict[str, Any] = setting(
        None, "the sampling rule's own options (e.g. progressive: schedule)", RUN, SUPERNET, factory=dict
    )
    distill: bool | None = setting(
        None,
        "in-place distillation: the reference subnet's soft targets teach the others (the largest, or a"
        " converted space's original model); None: on exactly when the space starts from a checkpoint",
        RUN,
        SUPERNET,
    )
    distill_temperature: float = setting(
        1.0,
        "softmax temperature of in-place distillation",
        RUN,
        SUPERNET,
        domain=Range(lo=0, hi=1000, lo_open=True),
    )
    distill_alpha: float = setting(
        1.0,
        "weight of the distillation term vs. cross-entropy for non-largest subnets",
        RUN,
        SUPERNET,
        domain=FRACTION,
    )
    ema_decay: float | None = setting(
        None,
        "keep an exponential moving average of the weights (search/export use it)",
        RUN,
        RECIPE,
        domain=Range(lo=0, hi=1, lo_open=True, hi_open=True),
    )
    grad_clip: float | None = setting(
        5.0, "clip the gradient norm to this; None: no clipping", RUN, RECIPE, domain=POSITIVE
    )
    accumulate: int = setting(
        1,
        "micro-batches per optimizer step (gradient accumulation)",
        RUN,
        RECIPE,
        domain=Range(lo=1, hi=4096),
    )
    bn_momentum: float | None = setting(
        0.1,
        "running-stat momentum during training; 0 = never track, None = cumulative",
        RUN,
        RECIPE,
        domain=FRACTION,
    )
    bn_affine: bool = setting(
        True,
        "learn batch-norm scale and shift; false keeps them at 1 and 0 (a supernet heuristic that"
        " 'How to Train Your Super-Net' tests)",
        RUN,
        RECIPE,
    )
    bn_recal_batches: int = setting(
        10,
        "batches used to recompute BN statistics before evaluating a subnet",
        domain=Range(
            lo=1,
            why="with 0 every subnetwork is evaluated with reset statistics: every accuracy would be chance",
        ),
    )
    amp: str = setting(
        "none",
        "mixed precision (fp16 uses a gradient scaler; CUDA only)",
        RUN,
        RECIPE,
        domain=OneOf(values=AMP_MODES),
    )
    channels_last: bool = setting(
        False, "NHWC memory format (faster convolutions on recent GPUs)", RUN, RECIPE
    )
    compile: bool = setting(
        False, "torch.compile the model (recompiles per new active shape: long runs only)", RUN, RECIPE
    )
    augment: str = setting(
        "none",
        "batch-wise augmentation on the training device",
        RUN,
        RECIPE,
        domain=Named(family="augmentation"),
    )
    latency_weight: float = setting(
        0.1,
        "single_path supernets: loss = CE + latency_weight * relu(log(E[latency] / target)), target just"
        " below the budget",
        RUN,
        SUPERNET,
        domain=NON_NEGATIVE,
    )
    checkpoint_every_steps: int = setting(
        0, "also checkpoint inside an epoch every N steps (0: end of epoch only)", RUN, domain=NON_NEGATIVE
    )
    deterministic: bool = setting(
        False, "torch.use_deterministic_algorithms (bit-exact resume; slower on GPU)", RUN, RECIPE
    )


@dataclass
class SearchConfig:
    controller: str = setting(
        "nsga2",
        "search strategy (see README: nsga2, tpe, evolution, darts, ...)",
        domain=Named(family="controller"),
    )
    controller_options: dict[str, Any] = setting(
        None, "the controller's own settings, e.g. darts: {epochs: 3}", factory=dict
    )
    trials: int = setting(
        40, "finished trials the search ends with (over every worker of a shared study)", domain=COUNT
    )
    latency_budget_ms: float | None = setting(
        None, "constraint on predicted latency on the first device, ms; None = unconstrained", domain=POSITIVE
    )
    constraints: dict[str, Any] = setting(
        None,
        "limits on latency_ms (first device), latency_ms:<device>, params, macs, memory_mb: a number, or"
        ' "60%" of the largest architecture\'s',
        factory=dict,
    )
    population: int = setting(
        10,
        "NSGA-II population size (random start-up trials for TPE and GP)",
        domain=Range(lo=2, why="NSGA-II breeds from pairs"),
    )
    calibration_archs: int = setting(
        40,
        "architectures timed to fit the cpu cost profile (first run only)",
        domain=Range(lo=8, why="the profile's fit and its held-out check need at least 8 timed networks"),
    )
    profile: str | None = setting(
        None, "device profile JSON for the first device; None = calibrate this machine (cached)"
    )
    devices: list[str] = setting(
        None,
        "latency objectives: cpu, spec names, profile paths; the budget applies to the first",
        factory=lambda: ["cpu"],
    )
    storage: str | None = setting(
        None,
        "Optuna RDB URL shared by several workers (postgresql://user@host/db); None = <run_dir>/study.db",
    )
    study: str | None = setting(
        None,
        "study name in that storage (None: search); workers with the same storage and study share one search",
    )
    heartbeat_s: float = setting(
        10.0,
        "shared storage: a worker's running trial is failed (and retried) after 3 heartbeats without news",
        domain=POSITIVE,
    )
    # Tabular evaluation (nas.tables). Part of the run's identity: one study holds one evaluator's accuracies.
    evaluator: str = setting(
        "supernet",
        "where a trial's accuracy comes from: the trained supernet, or a benchmark table (no training)",
        RUN,
        domain=OneOf(values=EVALUATORS),
    )
    table: str | None = setting(
        None,
        "evaluator=table: nats:cifar10, nats:cifar100, nats:imagenet16 (NATS-Bench, shipped) or a CSV file",
        RUN,
        domain=Pattern(
            regex=r"nats:\S+|.*\S.*\.csv(\.gz)?",
            shown="nats:cifar10, nats:cifar100, nats:imagenet16 or the path of a .csv or .csv.gz file",
        ),
    )
    table_column: str | None = setting(
        None,
        "the table's accuracy column (None: the named table's, or accuracy / test_accuracy / val_accuracy)",
        RUN,
        domain=Pattern(regex=r".*\S.*", shown="a column name"),
    )
    table_latency_column: str | None = setting(
        None,
        "a table column of latency in ms for the first device (None: the cost model predicts it)",
        RUN,
        domain=Pattern(regex=r".*\S.*", shown="a column name"),
    )


@dataclass
class ExportConfig:
    trial: int | None = setting(
        None,
        "Optuna trial number to export; None = the most accurate within the constraints",
        domain=NON_NEGATIVE,
    )
    latency_repeats: int = setting(50, "timed runs for the measured latency (median)", domain=COUNT)
    formats: list[str] | None = setting(
        None,
        "formats to write (torch, torchscript, torch_export, onnx, timm; openvino, executorch, litert when"
        " named); None = every one that applies but those three, all = every one that applies and installs",
        domain=Named(family="export format"),
    )
    batch_size: int = setting(
        1, "batch size of the deployed network: the memory_mb constraint is for this batch", domain=COUNT
    )
    runtime: str = setting(
        "torch",
        "inference runtime the exported network's measured latency is timed in",
        domain=OneOf(values=INFERENCE_RUNTIMES),
    )


@dataclass
class NASConfig:
    seed: int = setting(
        0,
        "seeds data splits and order, weights, sampling and the controller",
        RUN,
        domain=Range(lo=0, hi=2**32 - 1, why="numpy and scikit-learn take 32-bit unsigned seeds"),
    )
    device: str = setting(
        "auto",
        "where to train and evaluate",
        RUNTIME,
        domain=Pattern(regex=r"auto|cpu|cuda(:\d+)?", shown="auto, cpu, cuda or cuda:N"),
    )
    trackers: list[str] = setting(
        None,
        "event sinks besides the always-on JSONL log",
        RUNTIME,
        domain=Named(family="tracker"),
        factory=lambda: ["jsonl", "tensorboard", "wandb"],
    )
    wandb_project: str = setting(
        "nas-engine", "wandb project name", RUNTIME, domain=Pattern(regex=r".+", shown="a non-empty name")
    )
    wandb_mode: str | None = setting(
        None,
        "None: online only when wandb is configured, else offline",
        RUNTIME,
        domain=OneOf(values=WANDB_MODES),
    )
    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = ("data", "space", "train", "search", "export")


def flatten(cfg: NASConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Dotted key -> value for every setting (``train.lr``); free-form option mappings stay one value.

    The one flattening every comparison of configurations uses (resume identity,
    fine-tuning recipes), so keys are exactly the declared settings.
    """
    d = cfg.to_dict() if isinstance(cfg, NASConfig) else dict(cfg)
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k in SECTIONS and isinstance(v, Mapping):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def setting_fields() -> dict[str, dataclasses.Field]:
    """Dotted key -> its dataclass field (with ``metadata["doc"]`` and ``metadata["roles"]``), in declaration
    order."""
    out: dict[str, dataclasses.Field] = {}
    for f in dataclasses.fields(NASConfig):
        if f.name in SECTIONS:
            out.update({f"{f.name}.{g.name}": g for g in dataclasses.fields(f.default_factory())})  # type: ignore[misc]
        else:
            out[f.name] = f
    return out


def domain_of(key: str) -> Domain:
    """The declared domain of setting ``key``."""
    return setting_fields()[key].metadata["domain"]


def check_domains(cfg: NASConfig) -> None:
    """Every setting's value against its declared domain; registry names (:class:`Named`) are left to the
    commands."""
    flat = flatten(cfg)
    for key, f in setting_fields().items():
        domain, value = f.metadata["domain"], flat[key]
        if value is None or isinstance(domain, Named):
            continue
        for item in value if isinstance(value, list) else [value]:
            domain.check(key, item)
    if not cfg.search.devices:
        raise ConfigError("search.devices=[] is not allowed: give at least one device (e.g. cpu)")


def keys_with(role: str) -> tuple[str, ...]:
    """Every setting that plays ``role`` (one of :data:`ROLES`), in declaration order."""
    if role not in ROLES:
        raise ValueError(f"unknown config role {role!r}; roles: {ROLES}")
    return tuple(k for k, f in setting_fields().items() if role in f.metadata["roles"])


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
    "max-params": "search.constraints.params",
    "max-macs": "search.constraints.macs",
    "max-memory-mb": "search.constraints.memory_mb",
    "width-mult": "space.width_mult",
    "batch-size": "data.batch_size",
    "train-limit": "data.train_limit",
    "trial": "export.trial",
    "format": "export.formats",
    "runtime": "export.runtime",
    "download": "data.download",
    "device": "device",
    "seed": "seed",
}


def short_form(key: str) -> str | None:
    """The short flag of setting ``key`` (``trials`` for ``search.trials``), if it has one."""
    return next((alias for alias, dotted in ALIASES.items() if dotted == key and alias != key), None)


def shown_key(key: str) -> str:
    """``search.trials`` as a user may have typed it: ``search.trials / --trials`` when it has a short
    form."""
    short = short_form(key)
    return f"{key} / --{short}" if short else key


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


def resolve_defaults(cfg: NASConfig) -> NASConfig:
    """Settings whose default follows other settings, made explicit (so the saved config says what ran)."""
    if cfg.train.distill is None:  # a converted model's checkpoint teaches what it knew
        cfg.train.distill = cfg.space.options.get("checkpoint") is not None
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
            raise ConfigError(
                f"unknown config key {'.'.join(parts[: i + 1])!r}; known: {sorted(target_fields)}"
            )
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
        item_t, *_ = typing.get_args(typ) or (Any,)
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
