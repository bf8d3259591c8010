"""Export formats (torch + load_subnet, TorchScript, torch.export, ONNX, timm) from one fast `nas run` on tiny
digits."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from nas.cli import main
from nas.export.formats import format_names, resolve_formats
from nas.run.config import ConfigError
from search_spaces import create_space

FAST = [
    "--space=tiny",
    "--data.resolution=16",
    "--trackers=jsonl",
    "--search.calibration_archs=8",
    "--export.latency_repeats=5",
    "--train.bn_recal_batches=2",
]
BLOCK = re.compile(r"^(ds|ir)_r\d+_k[357]_s[12]_e\d+(\.\d+)?_c\d+(_se0\.25)?_n(re|hs)$")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One `nas run` on tiny digits (default formats: all five), its summary and a validation batch."""
    from nas.data import load_data

    run_dir = tmp_path_factory.mktemp("formats")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert (
            main(["run", "--run-dir", str(run_dir), "--json", "--quiet", "--epochs=1", "--trials=3", *FAST])
            == 0
        )
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    data = load_data("digits", resolution=16, seed=0)
    x = torch.stack([data.val[i][0] for i in range(64)])
    y = torch.stack([data.val[i][1] for i in range(64)])
    return run_dir, summary, x, y


def test_every_format_is_written_and_verified(run):
    run_dir, summary, _, _ = run
    meta = json.loads((run_dir / "export" / "meta.json").read_text())
    defaults = resolve_formats(None, create_space("tiny"))  # every format but the optional on-device ones
    assert set(meta["formats"]) == set(defaults) and summary["formats"] == {f: True for f in defaults}
    for fmt, res in meta["formats"].items():
        assert res["ok"] is True and "error" not in res, (fmt, res)
        assert 0 <= res["max_abs_diff"] <= res["tolerance"] <= 1e-3, (fmt, res)
        assert (run_dir / "export" / res["file"]).stat().st_size > 1000
    assert meta["formats"]["timm"]["separate_process"] is True
    assert (
        meta["verification"]["torchscript_vs_eager_max_abs_diff"]
        == meta["formats"]["torchscript"]["max_abs_diff"]
    )


def test_load_subnet_rebuilds_the_plain_network(run):
    from nas import load_subnet
    from nas.data import load_data

    run_dir, _, _, _ = run
    export = run_dir / "export"
    space = json.loads((export / "space.json").read_text())
    assert (
        space["name"] == "tiny"
        and space["options"]["in_channels"] == 1
        and space["options"]["resolution"] == 16
    )
    net = load_subnet(run_dir)  # the run folder, the export folder or model.pt all work
    assert not net.training
    assert not [
        type(m).__name__ for m in net.modules() if "Elastic" in type(m).__name__
    ]  # plain torch layers only
    saved = torch.load(export / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in load_subnet(export / "model.pt").state_dict().items())
    data = load_data("digits", resolution=16, seed=0)
    xs = torch.stack([data.test[i][0] for i in range(len(data.test))])
    ys = torch.stack([data.test[i][1] for i in range(len(data.test))])
    with torch.no_grad():
        acc = (net(xs).argmax(1) == ys).sum().item() / len(ys)
    assert acc == pytest.approx(json.loads((export / "meta.json").read_text())["test_accuracy"], abs=1e-9)
    with pytest.raises(FileNotFoundError, match="not a torch export"):
        load_subnet(run_dir / "search")


def test_torch_export_program_and_onnx_match_pytorch_at_any_batch_size(run):
    import onnxruntime as ort

    from nas import load_subnet

    run_dir, _, x, _ = run
    net = load_subnet(run_dir)
    program = torch.export.load(str(run_dir / "export" / "model.pt2")).module()
    session = ort.InferenceSession(str(run_dir / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"] and [
        o.name for o in session.get_outputs()
    ] == ["logits"]
    for batch in (x[:1], x[:7], x):
        with torch.no_grad():
            want = net(batch)
            assert (program(batch) - want).abs().max().item() <= 1e-5
        got = torch.from_numpy(session.run(["logits"], {"input": batch.numpy()})[0])
        assert got.shape == want.shape and (got - want).abs().max().item() <= 1e-4


def test_timm_export_reproduces_our_accuracy_without_this_project(run, tmp_path):
    """timm_model.json + model.timm.pth, built with timm alone in a fresh interpreter, give our logits and
    accuracy."""
    from nas import load_subnet

    run_dir, _, x, y = run
    export = run_dir / "export"
    spec = json.loads((export / "timm_model.json").read_text())
    blocks = [b for stage in spec["arch_def"][1:-1] for b in stage]
    assert spec["arch_def"][0] == ["ds_r1_k3_s1_e1_c8_nre"] and spec["arch_def"][-1] == [
        "cn_r1_k1_s1_c24_nhs"
    ]
    assert blocks and all(BLOCK.match(b) for b in blocks), blocks
    with torch.no_grad():
        ours = load_subnet(export)(x)
    torch.save({"x": x, "y": y}, tmp_path / "batch.pt")
    script = textwrap.dedent(f"""
        import json, sys
        import torch
        sys.path.insert(0, {str(export)!r})
        from load_timm import build_timm_model
        model = build_timm_model({str(export)!r})
        import timm.models.mobilenetv3
        assert type(model) is timm.models.mobilenetv3.MobileNetV3
        d = torch.load("batch.pt")
        with torch.no_grad():
            out = model(d["x"])
        torch.save(out, "timm_out.pt")
        banned = [m for m in sys.modules if m.split(".")[0] in ("nas", "supernets", "search_spaces")]
        assert not banned, banned
        print(json.dumps({{"acc": (out.argmax(1) == d["y"]).float().mean().item(), "banned": banned}}))
        """)
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    timm_out = torch.load(tmp_path / "timm_out.pt")
    assert (timm_out - ours).abs().max().item() <= 1e-4
    assert got["acc"] == (ours.argmax(1) == y).float().mean().item() and got["banned"] == []
    meta = json.loads((export / "meta.json").read_text())["formats"]["timm"]
    assert meta["val_batch_accuracy"] == meta["val_batch_accuracy_ours"] and meta["argmax_agreement"] == 1.0


def test_timm_space_exports_as_the_original_timm_model():
    """For a timm:<model> space, the model's own architecture maps onto timm's own model: same names, same
    outputs."""
    import timm

    from nas.export.timm_format import timm_model_spec, timm_state_dict
    from search_spaces.timm_space import load_timm_checkpoint

    torch.manual_seed(0)
    ref = timm.create_model("mobilenetv3_large_100", num_classes=10).eval()
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    space = create_space("timm:mobilenetv3_large_100", num_classes=10, resolution=32)
    net = space.build_supernet()
    load_timm_checkpoint(net, space, ref.state_dict())
    spec = space.to_spec(space.timm_arch)
    static = net.extract(spec).eval()
    ours = timm_state_dict(static)
    assert set(ours) == set(ref.state_dict())
    fresh = timm.create_model("mobilenetv3_large_100", num_classes=10).eval()
    fresh.load_state_dict(ours)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (fresh(x) - ref(x)).abs().max().item() <= 1e-5
    arch_def = timm_model_spec(space, static, spec)["arch_def"]
    assert arch_def[1] == [
        "ir_r1_k3_s2_e4_c24_nre",
        "ir_r1_k3_s1_e3_c24_nre",
    ]  # timm's own strings for these stages
    assert arch_def[3] == ["ir_r1_k3_s2_e6_c80_nhs", "ir_r1_k3_s1_e2.5_c80_nhs", "ir_r2_k3_s1_e2.3_c80_nhs"]
    assert arch_def[4] == ["ir_r2_k3_s1_e6_c112_se0.25_nhs"]


def test_default_formats_follow_the_space_and_inapplicable_ones_are_refused():
    assert resolve_formats(None, create_space("tiny")) == [
        "torch",
        "torchscript",
        "torch_export",
        "onnx",
        "timm",
    ]
    assert resolve_formats(None, create_space("resnet20_pool")) == [
        "torch",
        "torchscript",
        "torch_export",
        "onnx",
    ]
    assert resolve_formats(["onnx", "torch.export"], create_space("tiny")) == ["torch_export", "onnx"]
    with pytest.raises(ConfigError, match="stem has stride 1; timm's MobileNetV3 stem is fixed at stride 2"):
        resolve_formats(["timm"], create_space("tiny", stem_stride=1))
    assert "timm" not in resolve_formats(None, create_space("tiny", stem_stride=1))


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            ["--format=onnx,bogus"],
            "unknown export format 'bogus' (export.formats / --format); available: "
            + ", ".join(sorted(format_names())),
        ),
        (
            ["--space=resnet20_pool", "--format=timm"],
            "export format 'timm' does not apply to space 'resnet20_pool'",
        ),
    ],
)
def test_bad_format_is_one_line_before_any_work(tmp_path, capsys, settings, message):
    run_dir = tmp_path / "r"
    assert main(["run", "--run-dir", str(run_dir), "--quiet", *FAST, *settings]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (run_dir / "checkpoints").exists()  # nothing was trained


def test_a_failing_format_is_recorded_and_the_others_kept(run, tmp_path, capsys, monkeypatch):
    import nas.export.formats as formats

    run_dir, _, _, _ = run
    work = tmp_path / "work"
    shutil.copytree(run_dir, work, ignore=shutil.ignore_patterns(".lock*"))

    def broken(job):
        raise RuntimeError("simulated exporter crash\nsecond line")

    onnx = formats.EXPORT_FORMATS.get("onnx")
    monkeypatch.setitem(
        formats.EXPORT_FORMATS._members, "onnx", dataclasses.replace(onnx, start=formats._now(broken))
    )
    assert main(["export", "--run-dir", str(work), "--quiet", "--format=torch,onnx"]) == 2
    err = capsys.readouterr().err
    assert "export format(s) failed: onnx: RuntimeError: simulated exporter crash second line" in err
    meta = json.loads((work / "export" / "meta.json").read_text())
    assert set(meta["formats"]) == {"torch", "onnx"}
    assert meta["formats"]["torch"]["ok"] is True and meta["formats"]["onnx"]["ok"] is False
    assert "simulated exporter crash" in meta["formats"]["onnx"]["error"]
    assert (work / "export" / "model.pt").exists()
    # files of formats not asked for this time are removed: export/ holds what meta.json describes
    assert not (work / "export" / "model.pt2").exists() and not (work / "export" / "timm_model.json").exists()
