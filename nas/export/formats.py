"""Export formats of a found subnetwork, each written to ``<run>/export/`` and verified against the PyTorch
model.

- ``torch``: ``model.pt`` (state dict) and ``space.json`` (space name and options);
  :func:`load_subnet` rebuilds the plain network from them and ``arch.json``.
- ``torchscript``: ``model.torchscript.pt``, loads with ``torch.jit.load``.
- ``torch_export``: ``model.pt2``, loads with ``torch.export.load(f).module()`` (dynamic batch).
- ``onnx``: ``model.onnx`` (input ``input``, output ``logits``, dynamic batch), checked with onnxruntime.
- ``timm`` (MBConv spaces): ``timm_model.json`` (timm ``arch_def`` + constructor settings),
  ``model.timm.pth`` (timm's weight names) and ``load_timm.py`` (timm + torch only),
  checked in a separate interpreter that never imports this project.

Every format is checked on a validation batch (max abs difference of the logits
against the PyTorch model); a format that fails is recorded with its reason and
the others are still written.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from nas.run.config import ConfigError
from nas.run.files import atomic_write_bytes, atomic_write_json
from search_spaces.registry import Registry

FORMAT_TOLERANCE = 1e-4  # max abs logit difference allowed, relative to the logits' scale when above 1
ONNX_INPUT, ONNX_OUTPUT = "input", "logits"
SPACE_FILE = "space.json"


Result = dict[str, Any]  # what a format reports: file, max_abs_diff, tolerance, ok (and error when not)


@dataclass(frozen=True)
class ExportFormat:
    """One export format: the files it writes, how it is written and checked, and the spaces it applies to.

    ``start(job)`` writes the files and returns a function that finishes the check
    and returns the :data:`Result`; most formats check before returning, a
    ``background`` format (timm, checked in a second interpreter) is started first
    and finished last so its check overlaps the others'. ``inapplicable(space)``
    returns why the format cannot represent the space's networks (None: it can);
    ``missing()`` why it cannot be written on this machine (a runtime package not
    installed). An ``optional`` format is written only when asked for by name (or
    by ``all``): it needs an optional package and takes seconds to convert.
    """

    name: str
    files: tuple[str, ...]
    start: Callable[["ExportJob"], Callable[[], Result]]
    inapplicable: Callable[[Any], str | None] = lambda space: None
    aliases: tuple[str, ...] = ()
    background: bool = False
    optional: bool = False
    missing: Callable[[], str | None] = lambda: None


_ALIASES: dict[str, str] = {}
EXPORT_FORMATS: Registry[ExportFormat] = Registry(
    "export format", normalize=lambda n: _ALIASES.get(n.strip().lower(), n.strip().lower())
)
"""Format name -> :class:`ExportFormat`; registration order is the order files are written and listed."""


def register_format(fmt: ExportFormat) -> ExportFormat:
    """Add ``fmt`` (and its aliases) to :data:`EXPORT_FORMATS`."""
    EXPORT_FORMATS.add(fmt.name, fmt)
    _ALIASES.update({a: fmt.name for a in fmt.aliases})
    return fmt


def format_names() -> list[str]:
    """Every format, in registration order."""
    return EXPORT_FORMATS.registered()


def format_files(name: str) -> tuple[str, ...]:
    return EXPORT_FORMATS.get(name).files


def _inapplicable(space: Any) -> dict[str, str]:
    """Format -> why it does not apply to ``space`` (formats that apply are absent)."""
    out = {}
    for name in format_names():
        reason = EXPORT_FORMATS.get(name).inapplicable(space)
        if reason:
            out[name] = reason
    return out


def resolve_formats(requested: list[str] | None, space: Any) -> list[str]:
    """The formats to write, in registration order; ``None`` = every format that applies to ``space`` except
    the optional ones, ``all`` = every one that applies and can be written here.

    An unknown name, a format that cannot represent this space's networks, or one
    whose runtime is not installed is a :class:`ConfigError` (one line) raised
    before any work.
    """
    skip = _inapplicable(space)
    order = format_names()
    words = None if requested is None else [str(f).strip().lower() for f in requested]
    if words is None or words == []:
        return [f for f in order if f not in skip and not EXPORT_FORMATS.get(f).optional]
    if words == ["all"]:
        return [f for f in order if f not in skip and EXPORT_FORMATS.get(f).missing() is None]
    names = []
    for raw in requested or []:
        name = EXPORT_FORMATS.canonical(str(raw), setting="export.formats / --format")
        if name in skip:
            raise ConfigError(f"export format {name!r} does not apply to space {space.name!r}: {skip[name]}")
        why = EXPORT_FORMATS.get(name).missing()
        if why:
            raise ConfigError(f"export format {name!r} cannot be written here: {why}")
        names.append(name)
    return [f for f in order if f in names]


# --------------------------------------------------------------------------- load_subnet


def space_settings(
    space: Any, cfg: Any, num_classes: int, in_channels: int, resolution: int
) -> dict[str, Any]:
    """What :func:`load_subnet` needs to rebuild the space: its name and factory options (as
    ``nas.run.context.build_space`` passes them)."""
    options = {
        "num_classes": num_classes,
        "in_channels": in_channels,
        "resolution": resolution,
        "width_mult": cfg.space.width_mult,
    }
    options.update(cfg.space.options)
    options.pop(
        "checkpoint", None
    )  # timm spaces: the checkpoint only initialises the supernet; model.pt holds the weights
    return {"name": space.name, "options": options, "supernet": cfg.space.supernet}


def _export_dir(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p.parent
    if (p / "export" / "arch.json").exists():
        return p / "export"
    return p


def load_subnet(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The exported network as a plain PyTorch module (eval mode), from an export folder, its run folder or
    its ``model.pt``.

    Rebuilds the network from ``arch.json`` and ``space.json`` (space name and
    options) and loads ``model.pt`` into it (strict: every tensor must match).
    """
    from search_spaces import create_space

    d = _export_dir(path)
    missing = [f for f in ("arch.json", SPACE_FILE, "model.pt") if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{d} is not a torch export (missing {', '.join(missing)}); run `nas export --run-dir RUN"
            " --format=torch`"
        )
    settings = json.loads((d / SPACE_FILE).read_text())
    space = create_space(settings["name"], **settings["options"])
    arch = space.arch(json.loads((d / "arch.json").read_text()))
    net = space.build_supernet().extract(space.to_spec(arch))
    net.load_state_dict(torch.load(d / "model.pt", map_location=map_location, weights_only=True))
    return net.to(map_location).eval()


# --------------------------------------------------------------------------- writers


@dataclass
class ExportJob:
    """Everything a format writer needs: the network, where to write, and the batch it is verified on."""

    net: nn.Module  # the static network, eval mode, on CPU
    out_dir: Path
    space: Any
    spec: Any
    x: torch.Tensor  # validation batch (CPU)
    y: torch.Tensor
    logits: torch.Tensor  # net(x)
    space_json: dict[str, Any]
    shared: dict[str, Any] = field(default_factory=dict)  # e.g. the torch.export program, reused by onnx

    def example(self) -> tuple[torch.Tensor]:
        # batch 2: a batch of 1 would let torch.export specialise the batch dimension
        return (torch.zeros(2, *self.x.shape[1:]),)

    def diff(self, out: torch.Tensor) -> dict[str, Any]:
        d = (out.detach().float().cpu() - self.logits).abs().max().item()
        tol = FORMAT_TOLERANCE * max(1.0, self.logits.abs().max().item())
        return {"max_abs_diff": d, "tolerance": tol, "ok": bool(d <= tol)}


def _write_torch(job: ExportJob) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save(job.net.state_dict(), buf)
    atomic_write_bytes(job.out_dir / "model.pt", buf.getvalue())
    atomic_write_json(job.out_dir / SPACE_FILE, job.space_json)
    with torch.no_grad():
        out = load_subnet(job.out_dir)(job.x)
    return {
        "file": "model.pt",
        "files": ["model.pt", SPACE_FILE, "arch.json"],
        "load": "nas.load_subnet(EXPORT_DIR)",
        **job.diff(out),
    }


def _write_torchscript(job: ExportJob) -> dict[str, Any]:
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export (model.pt2), but it still loads anywhere with
        # plain torch.jit.load
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.trace(job.net, job.example())
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
        with torch.no_grad():
            out = torch.jit.load(io.BytesIO(buf.getvalue()))(job.x)
    atomic_write_bytes(job.out_dir / "model.torchscript.pt", buf.getvalue())
    return {"file": "model.torchscript.pt", "load": "torch.jit.load(FILE)", **job.diff(out)}


def _exported_program(job: ExportJob) -> Any:
    if "program" not in job.shared:
        batch = torch.export.Dim("batch", min=1)
        with torch.no_grad():
            job.shared["program"] = torch.export.export(job.net, job.example(), dynamic_shapes=({0: batch},))
    return job.shared["program"]


def _write_torch_export(job: ExportJob) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.export.save(_exported_program(job), buf)
    with torch.no_grad():
        out = torch.export.load(io.BytesIO(buf.getvalue())).module()(job.x)
    atomic_write_bytes(job.out_dir / "model.pt2", buf.getvalue())
    return {
        "file": "model.pt2",
        "load": "torch.export.load(FILE).module()",
        "dynamic_batch": True,
        **job.diff(out),
    }


def onnx_model(job: ExportJob) -> tuple[bytes, int | None]:
    """The network as ONNX (dynamic batch) and its opset, made once per export (``onnx`` and ``openvino``
    both check it)."""
    if "onnx" in job.shared:
        return job.shared["onnx"]
    program = job.shared.get("program")  # torch.export's program when that format ran: no second trace
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if program is not None:
            onnx_program = torch.onnx.export(
                program,
                job.example(),
                None,
                dynamo=True,
                input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT],
                verbose=False,
            )
        else:
            batch = torch.export.Dim("batch", min=1)
            onnx_program = torch.onnx.export(
                job.net,
                job.example(),
                None,
                dynamo=True,
                dynamic_shapes=({0: batch},),
                input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT],
                verbose=False,
            )
    opset = next(
        (o.version for o in onnx_program.model_proto.opset_import if o.domain in ("", "ai.onnx")), None
    )
    job.shared["onnx"] = (onnx_program.model_proto.SerializeToString(), opset)
    return job.shared["onnx"]


def _write_onnx(job: ExportJob) -> dict[str, Any]:
    import onnxruntime as ort

    data, opset = onnx_model(job)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    out = torch.from_numpy(session.run([ONNX_OUTPUT], {ONNX_INPUT: job.x.numpy()})[0])
    atomic_write_bytes(job.out_dir / "model.onnx", data)
    return {
        "file": "model.onnx",
        "load": f"onnxruntime.InferenceSession(FILE).run(['{ONNX_OUTPUT}'], {{'{ONNX_INPUT}': x}})",
        "input": ONNX_INPUT,
        "output": ONNX_OUTPUT,
        "opset": opset,
        "checked_with": f"onnxruntime {ort.__version__} (CPUExecutionProvider)",
        **job.diff(out),
    }


def _now(write: Callable[[ExportJob], Result]) -> Callable[[ExportJob], Callable[[], Result]]:
    """A format written and checked at once: ``start`` does it all and the finisher returns the result."""

    def start(job: ExportJob) -> Callable[[], Result]:
        result = write(job)
        return lambda: result

    return start


register_format(ExportFormat("torch", ("model.pt", SPACE_FILE), _now(_write_torch), aliases=("state_dict",)))
register_format(
    ExportFormat("torchscript", ("model.torchscript.pt",), _now(_write_torchscript), aliases=("jit",))
)
register_format(
    ExportFormat("torch_export", ("model.pt2",), _now(_write_torch_export), aliases=("torch.export", "pt2"))
)
register_format(ExportFormat("onnx", ("model.onnx",), _now(_write_onnx)))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:400]}"


def write_formats(job: ExportJob, formats: list[str]) -> dict[str, dict[str, Any]]:
    """Write and verify each of ``formats``; a failure is recorded (``ok: false`` and ``error``), never
    raised."""
    for name in (
        format_names()
    ):  # files of formats not asked for this time would describe another export: remove them
        if name not in formats:
            for file in format_files(name):
                (job.out_dir / file).unlink(missing_ok=True)
    results: dict[str, dict[str, Any]] = {}
    finishers: dict[str, tuple[float, Callable[[], Result]]] = {}
    chosen = [EXPORT_FORMATS.get(name) for name in formats]
    for fmt in sorted(
        chosen, key=lambda f: not f.background
    ):  # background checks first, so they overlap the rest
        t0 = time.perf_counter()
        try:
            finish = fmt.start(job)
        except Exception as exc:  # noqa: BLE001 - recorded, the other formats go on
            results[fmt.name] = {
                "ok": False,
                "error": _one_line(exc),
                "seconds": round(time.perf_counter() - t0, 3),
            }
            continue
        if fmt.background:
            finishers[fmt.name] = (t0, finish)
        else:
            results[fmt.name] = _finish(finish, t0)
    for name, (t0, finish) in finishers.items():
        results[name] = _finish(finish, t0)
    for res in results.values():
        if not res["ok"] and "error" not in res:
            res["error"] = (
                f"verification failed: max abs difference {res['max_abs_diff']:.3g} > tolerance"
                f" {res['tolerance']:.3g}"
            )
    return {f: results[f] for f in formats}


def _finish(finish: Callable[[], Result], t0: float) -> Result:
    try:
        res = finish()
    except Exception as exc:  # noqa: BLE001 - recorded, the other formats go on
        res = {"ok": False, "error": _one_line(exc)}
    res["seconds"] = round(time.perf_counter() - t0, 3)
    return res


__all__ = [
    "EXPORT_FORMATS",
    "ExportFormat",
    "ExportJob",
    "format_files",
    "format_names",
    "load_subnet",
    "register_format",
    "resolve_formats",
    "space_settings",
    "write_formats",
]
