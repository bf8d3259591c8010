"""Export formats of a found subnetwork, each written to ``<run>/export/`` and verified against the PyTorch model.

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
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from nas.config import ConfigError
from nas.rundir import atomic_write_bytes, atomic_write_json, atomic_write_text

FORMATS = ("torch", "torchscript", "torch_export", "onnx", "timm")
FORMAT_ALIASES = {"torch.export": "torch_export", "pt2": "torch_export", "jit": "torchscript", "state_dict": "torch"}
FORMAT_FILES = {
    "torch": ("model.pt", "space.json"),
    "torchscript": ("model.torchscript.pt",),
    "torch_export": ("model.pt2",),
    "onnx": ("model.onnx",),
    "timm": ("timm_model.json", "model.timm.pth", "load_timm.py"),
}
FORMAT_TOLERANCE = 1e-4  # max abs logit difference allowed, relative to the logits' scale when above 1
ONNX_INPUT, ONNX_OUTPUT = "input", "logits"
SPACE_FILE = "space.json"


def _inapplicable(space: Any) -> dict[str, str]:
    """Format -> why it does not apply to ``space`` (formats that apply are absent)."""
    from nas.timm_export import timm_incompatibility

    reason = timm_incompatibility(space)
    return {"timm": reason} if reason else {}


def resolve_formats(requested: list[str] | None, space: Any) -> list[str]:
    """The formats to write, in :data:`FORMATS` order; ``None`` (or ``all``) = every format that applies to ``space``.

    An unknown name, or a format that cannot represent this space's networks, is a
    :class:`ConfigError` (one line) raised before any work.
    """
    skip = _inapplicable(space)
    if requested is None or [str(f).strip().lower() for f in requested] in (["all"], []):
        return [f for f in FORMATS if f not in skip]
    names = []
    for raw in requested:
        name = FORMAT_ALIASES.get(str(raw).strip().lower(), str(raw).strip().lower())
        if name not in FORMATS:
            raise ConfigError(f"unknown export format {raw!r} (export.formats / --format); known: {', '.join(FORMATS)} (or all)")
        if name in skip:
            raise ConfigError(f"export format {name!r} does not apply to space {space.name!r}: {skip[name]}")
        names.append(name)
    return [f for f in FORMATS if f in names]


# --------------------------------------------------------------------------- load_subnet


def space_settings(space: Any, cfg: Any, num_classes: int, in_channels: int, resolution: int) -> dict[str, Any]:
    """What :func:`load_subnet` needs to rebuild the space: its name and factory options (as ``nas.context.build_space`` passes them)."""
    options = {"num_classes": num_classes, "in_channels": in_channels, "resolution": resolution, "width_mult": cfg.space.width_mult}
    options.update(cfg.space.options)
    options.pop("checkpoint", None)  # timm spaces: the checkpoint only initialises the supernet; model.pt holds the weights
    return {"name": space.name, "options": options, "supernet": cfg.space.supernet}


def _export_dir(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p.parent
    if (p / "export" / "arch.json").exists():
        return p / "export"
    return p


def load_subnet(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The exported network as a plain PyTorch module (eval mode), from an export folder, its run folder or its ``model.pt``.

    Rebuilds the network from ``arch.json`` and ``space.json`` (space name and
    options) and loads ``model.pt`` into it (strict: every tensor must match).
    """
    from search_spaces import create_space

    d = _export_dir(path)
    missing = [f for f in ("arch.json", SPACE_FILE, "model.pt") if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{d} is not a torch export (missing {', '.join(missing)}); run `nas export --run-dir RUN --format=torch`")
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
    return {"file": "model.pt", "files": ["model.pt", SPACE_FILE, "arch.json"], "load": "nas.load_subnet(EXPORT_DIR)", **job.diff(out)}


def _write_torchscript(job: ExportJob) -> dict[str, Any]:
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export (model.pt2), but it still loads anywhere with plain torch.jit.load
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
    return {"file": "model.pt2", "load": "torch.export.load(FILE).module()", "dynamic_batch": True, **job.diff(out)}


def _write_onnx(job: ExportJob) -> dict[str, Any]:
    import onnxruntime as ort

    program = job.shared.get("program")  # torch.export's program when that format ran: no second trace
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if program is not None:
            onnx_program = torch.onnx.export(program, job.example(), None, dynamo=True, input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT], verbose=False)
        else:
            batch = torch.export.Dim("batch", min=1)
            onnx_program = torch.onnx.export(
                job.net, job.example(), None, dynamo=True, dynamic_shapes=({0: batch},), input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT], verbose=False
            )
    data = onnx_program.model_proto.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    out = torch.from_numpy(session.run([ONNX_OUTPUT], {ONNX_INPUT: job.x.numpy()})[0])
    atomic_write_bytes(job.out_dir / "model.onnx", data)
    opset = next((o.version for o in onnx_program.model_proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "file": "model.onnx",
        "load": f"onnxruntime.InferenceSession(FILE).run(['{ONNX_OUTPUT}'], {{'{ONNX_INPUT}': x}})",
        "input": ONNX_INPUT,
        "output": ONNX_OUTPUT,
        "opset": opset,
        "checked_with": f"onnxruntime {ort.__version__} (CPUExecutionProvider)",
        **job.diff(out),
    }


def _start_timm(job: ExportJob) -> Callable[[], dict[str, Any]]:
    """Write the timm files and start their check in a separate interpreter; returns a function that waits for it."""
    from nas.timm_export import LOADER, LOADER_FILE, SPEC_FILE, VERIFY_SCRIPT, WEIGHTS_FILE, timm_model_spec, timm_state_dict

    spec = timm_model_spec(job.space, job.net, job.spec)
    buf = io.BytesIO()
    torch.save(timm_state_dict(job.net), buf)
    atomic_write_bytes(job.out_dir / WEIGHTS_FILE, buf.getvalue())
    atomic_write_text(job.out_dir / LOADER_FILE, LOADER)
    atomic_write_json(job.out_dir / SPEC_FILE, spec)
    tmp = tempfile.TemporaryDirectory(prefix="nas-timm-check-")
    batch = Path(tmp.name) / "batch.pt"
    torch.save({"x": job.x, "y": job.y, "logits": job.logits}, batch)
    # cwd is the temporary folder: nothing of this project is on the child's import path unless installed
    cmd = [sys.executable, "-c", VERIFY_SCRIPT, str((job.out_dir / LOADER_FILE).resolve()), str(job.out_dir.resolve()), str(batch)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen(cmd, cwd=tmp.name, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def finish() -> dict[str, Any]:
        try:
            stdout, stderr = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
            tmp.cleanup()
        if proc.returncode != 0:
            last = (stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"building the timm model in a separate python failed: {last}")
        res = json.loads(stdout.strip().splitlines()[-1])
        tol = FORMAT_TOLERANCE * max(1.0, job.logits.abs().max().item())
        problems = []
        if not res["max_abs_diff"] <= tol:
            problems.append(f"max abs difference {res['max_abs_diff']:.3g} > tolerance {tol:.3g}")
        if res["accuracy"] != res["accuracy_ours"]:
            problems.append(f"validation-batch accuracy {res['accuracy']:.4f} in timm vs {res['accuracy_ours']:.4f} here")
        if res["project_modules_imported"]:
            problems.append(f"the check imported {res['project_modules_imported']}")
        out = {
            "file": WEIGHTS_FILE,
            "files": [SPEC_FILE, WEIGHTS_FILE, LOADER_FILE],
            "load": f"from load_timm import build_timm_model; build_timm_model(EXPORT_DIR)  (timm {spec['timm_version']} + torch only)",
            "arch_def": spec["arch_def"],
            "max_abs_diff": res["max_abs_diff"],
            "tolerance": tol,
            "val_batch_accuracy": res["accuracy"],
            "val_batch_accuracy_ours": res["accuracy_ours"],
            "argmax_agreement": res["argmax_agree"],
            "separate_process": True,
            "ok": not problems,
        }
        if problems:
            out["error"] = "verification failed: " + "; ".join(problems)
        return out

    return finish


_WRITERS: dict[str, Callable[[ExportJob], dict[str, Any]]] = {
    "torch": _write_torch,
    "torchscript": _write_torchscript,
    "torch_export": _write_torch_export,
    "onnx": _write_onnx,
}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:400]}"


def write_formats(job: ExportJob, formats: list[str]) -> dict[str, dict[str, Any]]:
    """Write and verify each of ``formats``; a failure is recorded (``ok: false`` and ``error``), never raised."""
    for fmt in FORMATS:  # files of formats not asked for this time would describe another export: remove them
        if fmt not in formats:
            for name in FORMAT_FILES[fmt]:
                (job.out_dir / name).unlink(missing_ok=True)
    results: dict[str, dict[str, Any]] = {}
    pending: Callable[[], dict[str, Any]] | None = None
    timm_started = 0.0
    if "timm" in formats:  # its check runs in another interpreter while the other formats are written
        timm_started = time.perf_counter()
        try:
            pending = _start_timm(job)
        except Exception as exc:  # noqa: BLE001 - recorded, the other formats go on
            results["timm"] = {"ok": False, "error": _one_line(exc)}
    for fmt in formats:
        if fmt == "timm":
            continue
        t0 = time.perf_counter()
        try:
            results[fmt] = _WRITERS[fmt](job)
        except Exception as exc:  # noqa: BLE001
            results[fmt] = {"ok": False, "error": _one_line(exc)}
        results[fmt]["seconds"] = round(time.perf_counter() - t0, 3)
    if pending is not None:
        try:
            results["timm"] = pending()
        except Exception as exc:  # noqa: BLE001
            results["timm"] = {"ok": False, "error": _one_line(exc)}
        results["timm"]["seconds"] = round(time.perf_counter() - timm_started, 3)
    for res in results.values():
        if not res["ok"] and "error" not in res:
            res["error"] = f"verification failed: max abs difference {res['max_abs_diff']:.3g} > tolerance {res['tolerance']:.3g}"
    return {f: results[f] for f in formats}


__all__ = ["FORMATS", "ExportJob", "load_subnet", "resolve_formats", "space_settings", "write_formats"]
