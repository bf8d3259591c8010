"""The ``original`` export format: a network found in a converted space, as a model of the original family.

For a space built around a timm or torchvision model (``timm:resnet50``,
``torchvision:mobilenet_v3_large``, ...), the found network is that library's own
model class, created by name (``timm.create_model`` / ``torchvision.models.get_model``,
random weights), with the blocks the architecture drops removed from their stages
(``keep``), every layer resized to the shape of its exported weights, and, for a
ViT, each attention layer's head count set (``heads``). Weights are saved under
the library's own names. The original architecture is exactly the named model.

``load_original.py`` (written next to the weights, :data:`LOADER`) builds it with
torch and the model's library alone; the export checks it in a separate
interpreter that never imports this project, as the ``timm`` format does.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nas.export.formats import ExportFormat, ExportJob, register_format
from nas.export.separate_check import start_separate_check, verdict
from nas.run.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from search_spaces.converted import ConvertedSpace

SPEC_FILE = "original_model.json"
WEIGHTS_FILE = "model.original.pth"
LOADER_FILE = "load_original.py"

LOADER = '''"""Build the exported network as a model of its original family (timm or torchvision), with
that library and torch alone (nas-engine is not needed):

    import sys; sys.path.insert(0, "runs/demo/export")
    from load_original import build_original_model
    model = build_original_model("runs/demo/export")  # eval mode, weights loaded

or `python load_original.py [EXPORT_DIR]` to print it. The model is the library's own class, created by name,
with the blocks original_model.json does not keep removed and each layer sized like its weights.
"""

import json
import sys
from pathlib import Path

import torch
from torch import nn


def create(spec):
    """The named model with random weights (nothing is downloaded)."""
    if spec["library"] == "timm":
        import timm

        return timm.create_model(spec["model"], pretrained=False, **spec["kwargs"])
    import torchvision

    return torchvision.models.get_model(spec["model"], weights=None, **spec["kwargs"])


def skeleton(spec):
    """The named model holding only the blocks the exported network keeps (layers still at full size)."""
    model = create(spec)
    for path, keep in spec["keep"].items():
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        children = list(getattr(parent, name).children())
        setattr(parent, name, nn.Sequential(*[children[i] for i in keep]))
    for path, heads in spec.get("heads", {}).items():
        attn = model.get_submodule(path)
        attn.num_heads = heads
        attn.attn_dim = heads * attn.head_dim
    return model


def resize(model, state):
    """Give every tensor of ``model`` the shape of its weight in ``state``; layers' size attributes follow."""
    for name, t in state.items():
        owner_path, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_path) if owner_path else model
        current = getattr(owner, attr)
        if current is None or current.shape == t.shape:
            continue
        fresh = torch.empty(t.shape, dtype=current.dtype)
        if isinstance(current, nn.Parameter):
            fresh = nn.Parameter(fresh, current.requires_grad)
        setattr(owner, attr, fresh)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
            same = m.padding == (m.kernel_size[0] // 2, m.kernel_size[1] // 2)
            out_c, per_group, kh, kw = m.weight.shape
            m.groups = out_c if depthwise else m.groups
            m.in_channels, m.out_channels, m.kernel_size = per_group * m.groups, out_c, (kh, kw)
            if same:
                m.padding = (kh // 2, kw // 2)
        elif isinstance(m, nn.BatchNorm2d):
            m.num_features = m.weight.shape[0]
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = m.weight.shape
        elif isinstance(m, nn.LayerNorm):
            m.normalized_shape = tuple(m.weight.shape)
    return model


def build_original_model(export_dir=Path(__file__).parent, load_weights=True):
    export_dir = Path(export_dir)
    spec = json.loads((export_dir / "original_model.json").read_text())
    state = torch.load(export_dir / spec["state_dict"], map_location="cpu", weights_only=True)
    model = resize(skeleton(spec), state)
    if load_weights:
        model.load_state_dict(state)
    return model.eval()


if __name__ == "__main__":
    print(build_original_model(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent))
'''

# Run in a separate interpreter by the export: builds the model with the shipped loader and compares outputs.
VERIFY_SCRIPT = r"""
import json, runpy, sys
import torch
loader, export_dir, batch = sys.argv[1:4]
model = runpy.run_path(loader)["build_original_model"](export_dir)
data = torch.load(batch, weights_only=True)
with torch.no_grad():
    out = model(data["x"])
ours = data["logits"]
foreign = sorted({m.split(".")[0] for m in sys.modules} & {"nas", "supernets", "search_spaces"})
print(json.dumps({
    "max_abs_diff": (out - ours).abs().max().item(),
    "accuracy": (out.argmax(1) == data["y"]).float().mean().item(),
    "accuracy_ours": (ours.argmax(1) == data["y"]).float().mean().item(),
    "class": type(model).__module__ + "." + type(model).__name__,
    "project_modules_imported": foreign,
}))
"""


def original_incompatibility(space: Any) -> str | None:
    """Why ``space``'s networks have no original family to go back to (None: they have)."""
    if isinstance(space, ConvertedSpace):
        return None
    return (
        f"space {space.name!r} was not converted from a timm or torchvision model (the original format covers"
        " timm:resnet*, timm:efficientnet_*, timm:mobilenetv2_*, timm:vit_* and torchvision:<model>; a"
        " timm:mobilenetv3_* network exports with the timm format)"
    )


def loader_functions() -> dict[str, Callable[..., Any]]:
    """The shipped loader's functions, for building the same skeleton in this process."""
    namespace: dict[str, Any] = {"__name__": "load_original", "__file__": LOADER_FILE}
    exec(compile(LOADER, LOADER_FILE, "exec"), namespace)  # noqa: S102 - our own constant source
    return namespace


def original_model_spec(space: ConvertedSpace, spec: Any) -> dict[str, Any]:
    """The content of ``original_model.json``: the library, the model name and arguments, what is kept."""
    arch = space.arch_from_spec(spec)
    layout = space.original_layout(arch)
    library = __import__(space.library)
    return {
        "format": f"{space.library} {space.model_name}: the library's own model, blocks kept, layers resized",
        "library": space.library,
        "model": space.model_name,
        "kwargs": space.original_kwargs(),
        "keep": layout.get("keep", {}),
        "heads": layout.get("heads", {}),
        "is_original": arch == space.original_arch,
        "state_dict": WEIGHTS_FILE,
        "loader": LOADER_FILE,
        "usage": (
            f"from load_original import build_original_model; model = build_original_model(EXPORT_DIR)  #"
            f" {space.library} + torch only, see {LOADER_FILE}"
        ),
        "input_shape": list(space.input_shape),
        "library_version": library.__version__,
    }


def original_state_dict(
    space: ConvertedSpace, static: nn.Module, spec: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """``static``'s weights under the names of the family's model that ``spec`` describes."""
    model = loader_functions()["skeleton"](spec)
    return space.to_original_state(static, model)


def _start_original(job: ExportJob) -> Callable[[], dict[str, Any]]:
    """Write the files, start their check in a separate interpreter; returns a function that waits for it."""
    space = job.space
    if not isinstance(space, ConvertedSpace):  # resolve_formats refused it already
        raise TypeError(original_incompatibility(space))
    spec = original_model_spec(space, job.spec)
    buf = io.BytesIO()
    torch.save(original_state_dict(space, job.net, spec), buf)
    atomic_write_bytes(job.out_dir / WEIGHTS_FILE, buf.getvalue())
    atomic_write_text(job.out_dir / LOADER_FILE, LOADER)
    atomic_write_json(job.out_dir / SPEC_FILE, spec)
    wait = start_separate_check(job, VERIFY_SCRIPT, LOADER_FILE, spec["library"])

    def finish() -> dict[str, Any]:
        check = wait()
        res = check.report
        if not res["class"].startswith(spec["library"] + "."):
            check.problems.append(f"the loader built a {res['class']}, not a {spec['library']} model")
        out = {
            "file": WEIGHTS_FILE,
            "files": [SPEC_FILE, WEIGHTS_FILE, LOADER_FILE],
            "load": (
                "from load_original import build_original_model; build_original_model(EXPORT_DIR)"
                f"  ({spec['library']} {spec['library_version']} + torch only)"
            ),
            "library": spec["library"],
            "model": spec["model"],
            "model_class": res["class"],
            "is_original": spec["is_original"],
            "max_abs_diff": res["max_abs_diff"],
            "tolerance": check.tolerance,
            "val_batch_accuracy": res["accuracy"],
            "val_batch_accuracy_ours": res["accuracy_ours"],
            "separate_process": True,
        }
        return verdict(out, check.problems)

    return finish


register_format(
    ExportFormat(
        "original",
        (SPEC_FILE, WEIGHTS_FILE, LOADER_FILE),
        _start_original,
        inapplicable=original_incompatibility,
        aliases=("family",),
        background=True,
    )
)


__all__ = [
    "LOADER",
    "LOADER_FILE",
    "SPEC_FILE",
    "VERIFY_SCRIPT",
    "WEIGHTS_FILE",
    "loader_functions",
    "original_incompatibility",
    "original_model_spec",
    "original_state_dict",
]
