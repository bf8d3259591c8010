"""Inference runtimes a network can be timed in: torch, onnxruntime, openvino, executorch, litert.

A latency profile is only true of the runtime it was measured in: the same
network runs at different speeds in PyTorch eager mode, ONNX Runtime, OpenVINO,
ExecuTorch (XNNPACK) and LiteRT (TFLite, XNNPACK), and the runtimes do not
even agree on which of two networks is faster. Each :class:`Runtime` turns a
plain torch module into a callable that runs it once in that runtime, on a
fixed input of the calibration's batch size, with the requested threads; the
timing loop in :mod:`nas.cost.calibrate` is the same for all of them.

Every runtime except torch is an optional package (``pip install -e
".[runtimes]"``); :meth:`Runtime.missing` says which is absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import io
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.run.files import atomic_write_bytes
from search_spaces.errors import UserError
from search_spaces.registry import Registry

Runner = Callable[[], object]
"""Runs one forward pass of a compiled network on its fixed input."""

DEFAULT_RUNTIME = "torch"


class RuntimeUnavailableError(UserError, RuntimeError):
    """A runtime whose package is not installed here (the message says what to install)."""


@dataclass(frozen=True)
class Runtime:
    """One inference runtime: how a torch module is compiled for it, and what it needs installed.

    ``convert(module, x)`` exports ``module`` at ``x``'s shape to the bytes the
    runtime loads (``None`` for torch, which runs the module itself);
    ``load(artifact, module, x, threads)`` returns a :data:`Runner` running it
    on ``x`` (its batch is the batch timed). ``set_threads`` applies a thread
    count that the runtime keeps per process (torch, ExecuTorch's thread pool)
    before timing; runtimes that take it per loaded model leave it a no-op.
    """

    name: str
    modules: tuple[str, ...]  # what must import for it to work
    distributions: tuple[str, ...]  # their pip names: the version recorded in a profile is the first's
    convert: Callable[[nn.Module, torch.Tensor], bytes] | None
    load: Callable[[bytes | None, nn.Module, torch.Tensor, int], Runner]
    set_threads: Callable[[int], None] = lambda threads: None
    description: str = ""
    default_fit: str = "ops"  # how calibration gets the op table unless told (nas.cost.calibrate.FIT_METHODS)

    def missing(self) -> str | None:
        """Why this runtime cannot run here (a package is not installed), or ``None``.

        Looks packages up without importing them (some print to the terminal when
        imported); :meth:`require` imports them.
        """
        for mod in self.modules:
            if importlib.util.find_spec(mod.split(".")[0]) is None:
                return (
                    f"runtime {self.name!r} needs {' and '.join(self.distributions)} (no module named"
                    f' {mod.split(".")[0]!r}); install the optional runtimes: pip install -e ".[runtimes]"'
                    " (README: Latency on your device)"
                )
        return None

    def require(self) -> None:
        """Raise :class:`RuntimeUnavailableError` unless the runtime's packages import."""
        why = self.missing()
        if why:
            raise RuntimeUnavailableError(why)
        for mod in self.modules:
            try:
                with _quiet():
                    importlib.import_module(mod)
            except ImportError as exc:
                raise RuntimeUnavailableError(
                    f"runtime {self.name!r} needs {' and '.join(self.distributions)}, which does not import"
                    f' ({exc}); reinstall the optional runtimes: pip install -e ".[runtimes]"'
                ) from None

    def version(self) -> str:
        try:
            return importlib.metadata.version(self.distributions[0])
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    def compile_all(
        self,
        modules: Sequence[nn.Module],
        shapes: Sequence[tuple[int, ...]],
        batch: int,
        threads: int,
        progress: bool = False,
    ) -> list[Runner]:
        """One runner per module, each on a random input of ``(batch, *shape)``.

        Conversions are cached on disk (:func:`artifact_cache`) by runtime
        version, module structure and input shape: timing does not depend on the
        weights' values, and converting takes seconds per network in ExecuTorch
        and LiteRT, so repeated calibrations and validations convert each
        network once.
        """
        self.require()
        g = torch.Generator().manual_seed(0)
        it: Any = list(zip(modules, shapes))
        if progress and len(it) > 1 and self.convert is not None:
            from tqdm import tqdm

            it = tqdm(it, desc=f"converting {len(it)} networks for {self.name}", disable=None, leave=False)
        runners = []
        for module, shape in it:
            x = torch.randn(batch, *shape, generator=g)
            module.eval()
            artifact = None if self.convert is None else self._converted(module, x)
            runners.append(self.load(artifact, module, x, threads))
        return runners

    def _converted(self, module: nn.Module, x: torch.Tensor) -> bytes:
        assert self.convert is not None
        key = hashlib.sha256(f"{self.version()}|{tuple(x.shape)}|{module!r}".encode()).hexdigest()[:24]
        path = artifact_cache() / f"{self.name}-{key}.bin"
        try:
            return path.read_bytes()
        except OSError:
            data = self.convert(module, x)
            try:
                atomic_write_bytes(path, data)
            except OSError:  # a read-only or full cache only costs the next run a conversion
                pass
            return data


RUNTIMES: Registry[Runtime] = Registry("runtime")
"""Runtime name -> :class:`Runtime` (``--runtime``, ``export.runtime``)."""


def get_runtime(name: str, setting: str = "--runtime") -> Runtime:
    return RUNTIMES.get(name, setting=setting)


def runtime_names() -> list[str]:
    return RUNTIMES.registered()


@contextlib.contextmanager
def _quiet() -> Any:
    """Converters print progress and deprecation notes: none of it is the user's business here."""
    with (
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


# --------------------------------------------------------------------------- torch


def artifact_cache() -> Path:
    """Where converted networks are kept between runs (under the cache home, see nas.run.files)."""
    from nas.run.files import cache_home

    return cache_home() / "runtime-artifacts"


def _torch_load(artifact: bytes | None, module: nn.Module, x: torch.Tensor, threads: int) -> Runner:
    def run() -> object:
        with torch.inference_mode():
            return module(x)

    return run


register_runtime = RUNTIMES.add
register_runtime(
    "torch",
    Runtime(
        "torch",
        ("torch",),
        ("torch",),
        None,
        _torch_load,
        set_threads=torch.set_num_threads,
        description="PyTorch eager mode (inference mode)",
    ),
)


# --------------------------------------------------------------------------- ONNX: onnxruntime, openvino


def onnx_bytes(module: nn.Module, x: torch.Tensor) -> bytes:
    """The module as ONNX at ``x``'s static shape, for timing (input ``input``, output ``logits``).

    TorchScript-based export (30 ms a block) where it works; the dynamo exporter
    (what ``nas export`` writes, about 0.6 s a block) otherwise.
    """
    with _quiet():
        buf = io.BytesIO()
        try:
            torch.onnx.export(module, (x,), buf, dynamo=False, input_names=["input"], output_names=["logits"])
            return buf.getvalue()
        except Exception:  # noqa: BLE001 - the legacy exporter is deprecated; fall back to the current one
            program = torch.onnx.export(
                module, (x,), None, dynamo=True, input_names=["input"], output_names=["logits"]
            )
            return program.model_proto.SerializeToString()


def ort_session(data: bytes, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


def _ort_load(artifact: bytes | None, module: nn.Module, x: torch.Tensor, threads: int) -> Runner:
    assert artifact is not None
    session = ort_session(artifact, threads)
    name = session.get_inputs()[0].name
    feed = {name: x.numpy()}
    return lambda: session.run(None, feed)


register_runtime(
    "onnxruntime",
    Runtime(
        "onnxruntime",
        ("onnxruntime",),
        ("onnxruntime",),
        onnx_bytes,
        _ort_load,
        description="ONNX Runtime, CPU execution provider",
        default_fit="networks",  # its graph optimisations fuse what an op table times apart (runtimes.md)
    ),
)


def openvino_compiled(data: bytes, threads: int) -> Any:
    """An ONNX model compiled by OpenVINO for this CPU in float32 (its default on CPUs with bf16 units is
    bf16, which moves logits by ~1e-4)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(data, b"")
    return core.compile_model(
        model,
        "CPU",
        {
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        },
    )


def _openvino_load(artifact: bytes | None, module: nn.Module, x: torch.Tensor, threads: int) -> Runner:
    assert artifact is not None
    compiled = openvino_compiled(artifact, threads)
    request = compiled.create_infer_request()
    feed = {0: x.numpy()}
    return lambda: request.infer(feed)


register_runtime(
    "openvino",
    Runtime(
        "openvino",
        ("openvino",),
        ("openvino",),
        onnx_bytes,
        _openvino_load,
        description="OpenVINO CPU plugin (float32, latency hint, one stream), from the ONNX file",
        default_fit="networks",  # as ONNX Runtime's: whole networks predict better here (results/runtimes.md)
    ),
)


# --------------------------------------------------------------------------- executorch


def executorch_buffer(module: nn.Module, example: torch.Tensor, max_batch: int | None = None) -> bytes:
    """A ``.pte`` program lowered to the XNNPACK delegate; ``max_batch`` makes the batch dimension dynamic up
    to it."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with _quiet():
        dynamic = None
        if max_batch is not None:
            dynamic = ({0: torch.export.Dim("batch", min=1, max=max_batch)},)
        with torch.no_grad():
            program = torch.export.export(module, (example,), dynamic_shapes=dynamic)
        return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def executorch_method(data: bytes) -> Any:
    from executorch.runtime import Runtime as ETRuntime

    with _quiet():
        return ETRuntime.get().load_program(data).load_method("forward")


def _executorch_threads(threads: int) -> None:
    """Resize ExecuTorch's process-wide thread pool, only when its size differs and before any method is
    loaded: XNNPACK delegates keep the pool they were loaded with, and resizing it under them deadlocked or
    corrupted the heap (executorch 1.5)."""
    from executorch.extension.pybindings.portable_lib import (
        _threadpool_get_thread_count,
        _unsafe_reset_threadpool,
    )

    if _threadpool_get_thread_count() != threads:
        _unsafe_reset_threadpool(threads)


def _executorch_load(artifact: bytes | None, module: nn.Module, x: torch.Tensor, threads: int) -> Runner:
    assert artifact is not None
    data = artifact
    method = executorch_method(data)
    inputs = [x]

    def run() -> object:
        _ = data  # the loaded program points into this buffer: it must live as long as the method
        return method.execute(inputs)

    return run


register_runtime(
    "executorch",
    Runtime(
        "executorch",
        (
            "executorch.runtime",
            "executorch.exir",
            "executorch.backends.xnnpack.partition.xnnpack_partitioner",
        ),
        ("executorch",),
        lambda module, x: executorch_buffer(module, x),
        _executorch_load,
        set_threads=lambda threads: _executorch_threads(threads),
        description="ExecuTorch, XNNPACK delegate",
    ),
)


# --------------------------------------------------------------------------- litert


def litert_bytes(module: nn.Module, example: torch.Tensor) -> bytes:
    """A ``.tflite`` flatbuffer converted by litert-torch at ``example``'s static shape."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # LiteRT's converter logs to the terminal otherwise
    import litert_torch

    with _quiet(), torch.no_grad():
        return bytes(litert_torch.convert(module, (example,)).model_content())


def litert_interpreter(data: bytes, threads: int) -> Any:
    """A LiteRT interpreter (XNNPACK delegate, the default on CPU) with its tensors allocated."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data, num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def litert_run(interpreter: Any, x: np.ndarray) -> np.ndarray:
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _litert_load(artifact: bytes | None, module: nn.Module, x: torch.Tensor, threads: int) -> Runner:
    assert artifact is not None
    model = artifact
    interpreter = litert_interpreter(model, threads)
    index = interpreter.get_input_details()[0]["index"]
    data = x.numpy()

    def run() -> object:
        _ = model  # the interpreter reads its model from this buffer: it must outlive it
        interpreter.set_tensor(index, data)
        return interpreter.invoke()

    return run


register_runtime(
    "litert",
    Runtime(
        "litert",
        ("litert_torch", "ai_edge_litert.interpreter"),
        ("ai-edge-litert", "litert-torch"),
        litert_bytes,
        _litert_load,
        description="LiteRT (TensorFlow Lite) interpreter, XNNPACK delegate; converted by litert-torch",
    ),
)


def runtime_meta(runtime: Runtime) -> dict[str, Any]:
    """What a profile records about the runtime it was measured in."""
    return {"runtime": runtime.name, "runtime_version": runtime.version()}
