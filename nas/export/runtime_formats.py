"""Export formats for on-device runtimes: ``executorch`` (``.pte``, XNNPACK delegate), ``litert``
(``.tflite``), and ``openvino`` (the ONNX file run by OpenVINO).

Each is verified by running the file in its own runtime on the validation batch
(max abs logit difference from PyTorch, ``ok`` within :data:`FORMAT_TOLERANCE`),
and timed there at batch 1 on one thread (``latency_ms``), so ``meta.json``
says what the network costs in the runtime it will be deployed with. They need
optional packages (``pip install -e ".[runtimes]"``) and seconds of conversion
each, so they are written only when asked for (``--format=executorch,litert``,
or ``all``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from nas.cost.calibrate import measure_runners_ms
from nas.cost.runtimes import (
    Runner,
    executorch_buffer,
    executorch_method,
    get_runtime,
    litert_bytes,
    litert_interpreter,
    litert_run,
    openvino_compiled,
)
from nas.export.formats import ExportFormat, ExportJob, Result, _now, onnx_model, register_format
from nas.run.files import atomic_write_bytes

LATENCY_ROUNDS = 20


def _latency_ms(runtime: str, run: Runner) -> float:
    """Batch-1, one-thread latency of one loaded file in its runtime (the calibration's timing loop)."""
    return float(measure_runners_ms([run], runtime, threads=1, repeats=LATENCY_ROUNDS)[0])


def _checked_with(runtime: str, extra: str) -> str:
    return f"{runtime} {get_runtime(runtime).version()} ({extra})"


def _write_executorch(job: ExportJob) -> Result:
    # static batch 1, as deployed (XNNPACK's memory plan for a bounded dynamic batch did not hold the
    # verification batch in executorch 1.5); verified one sample at a time, as LiteRT is, each sample a tensor
    # of its own (ExecuTorch aborts the process on an input that is a view at an offset)
    data = executorch_buffer(job.net, job.x[:1].clone())
    get_runtime("executorch").set_threads(1)  # before loading: a loaded method keeps the pool it was given
    method = executorch_method(data)
    out = torch.cat(
        [torch.as_tensor(method.execute([job.x[i : i + 1].clone()])[0]) for i in range(len(job.x))]
    )
    atomic_write_bytes(job.out_dir / "model.pte", data)
    one = [job.x[:1].clone()]
    return {
        "file": "model.pte",
        "load": "executorch.runtime.Runtime.get().load_program(FILE).load_method('forward').execute([x])",
        "delegate": "XNNPACK",
        "batch": 1,
        "checked_with": _checked_with("executorch", "XNNPACK delegate, one sample at a time"),
        "latency_ms": _latency_ms("executorch", lambda: (data, method.execute(one))),
        "size_bytes": len(data),
        **job.diff(out),
    }


def _write_litert(job: ExportJob) -> Result:
    example = job.x[:1].contiguous()  # LiteRT models have a static shape: batch 1, as deployed
    data = litert_bytes(job.net, example)
    interpreter = litert_interpreter(data, threads=1)
    xs = job.x.numpy()
    out = np.concatenate([litert_run(interpreter, xs[i : i + 1]) for i in range(len(xs))])
    atomic_write_bytes(job.out_dir / "model.tflite", data)
    first = xs[:1]
    return {
        "file": "model.tflite",
        "load": "ai_edge_litert.interpreter.Interpreter(model_path=FILE)",
        "batch": 1,
        "checked_with": _checked_with("litert", "XNNPACK delegate, one sample at a time"),
        "latency_ms": _latency_ms("litert", lambda: (data, litert_run(interpreter, first))),
        "size_bytes": len(data),
        **job.diff(torch.from_numpy(out)),
    }


def _write_openvino(job: ExportJob) -> Result:
    data, opset = onnx_model(job)
    compiled = openvino_compiled(data, threads=1)
    out = compiled([job.x.numpy()])[compiled.output(0)]
    atomic_write_bytes(job.out_dir / "model.onnx", data)
    request = compiled.create_infer_request()
    first = {0: job.x[:1].numpy()}
    return {
        "file": "model.onnx",
        "load": "openvino.Core().compile_model(FILE, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})",
        "opset": opset,
        "checked_with": _checked_with("openvino", "CPU plugin, float32"),
        "latency_ms": _latency_ms("openvino", lambda: request.infer(first)),
        "size_bytes": len(data),
        **job.diff(torch.from_numpy(np.asarray(out))),
    }


def _missing(runtime: str) -> Callable[[], str | None]:
    return lambda: get_runtime(runtime).missing()


def _register(name: str, files: tuple[str, ...], write: Callable[[ExportJob], dict[str, Any]]) -> None:
    register_format(ExportFormat(name, files, _now(write), optional=True, missing=_missing(name)))


_register("openvino", ("model.onnx",), _write_openvino)
_register("executorch", ("model.pte",), _write_executorch)
_register("litert", ("model.tflite",), _write_litert)
