"""Benchmark latency prediction per inference runtime: calibrate-then-validate sessions, how far the runtimes
disagree, and what each export format costs.

For each runtime that installs (torch, onnxruntime, openvino, executorch, litert) and each thread setting
(1 thread, and ``--threads-multi``), at batch 1 on this CPU: ``--sessions`` times, a fresh calibration in that
runtime (``--calibration-n`` networks, the runtime's default fit or ``--fit``) predicts ``--archs`` new
architectures that are then measured in the runtime: Kendall tau, MAPE and share within +/-10%, mean and range
over sessions, beside the measurement's own repeatability (the same networks measured in two sessions). Then,
for the same networks, the latency ratio between runtimes and how often two runtimes disagree on which of two
networks is faster; and per export format, the time to write and verify it and the file size.

Writes results/data/<--out's name>.json (runtimes.json by default) after every measured unit, so an
interrupted run resumes where it stopped (a later call with more runtimes, sessions or fits adds its units to
the same file), then the Markdown report from that file alone (``render``, also called by
scripts/make_results.py).

    python scripts/bench_runtimes.py                       # mbv3, every runtime that installs (hours)
    python scripts/bench_runtimes.py --space nb201 --out results/runtimes_nb201.md   # another space
    python scripts/bench_runtimes.py --space tiny --archs 6 --sessions 1 --calibration-n 4 \\
        --runtimes torch,onnxruntime --threads-multi 0 --out /tmp/runtimes.md   # a smoke test (a minute)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from _results import data_path, load_raw, machine_block, provenance, save_raw, write_markdown

NAME = "runtimes"
MARKDOWN = "runtimes.md"
ALL_RUNTIMES = ("torch", "onnxruntime", "openvino", "executorch", "litert")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/runtimes.md", help="Markdown report to write")
    ap.add_argument("--space", default="mbv3", help="registered search space (mbv3, nb201, tiny, ...)")
    ap.add_argument(
        "--space-options",
        default="{}",
        help="JSON factory options, e.g. '{\"resolution\": 32}' (default: {})",
    )
    ap.add_argument("--runtimes", default=",".join(ALL_RUNTIMES), help="comma-separated runtimes to measure")
    ap.add_argument("--archs", type=int, default=100, help="new architectures validated per session")
    ap.add_argument("--sessions", type=int, default=3, help="calibrate-then-validate sessions per setting")
    ap.add_argument("--calibration-n", type=int, default=40, help="networks each calibration times")
    ap.add_argument(
        "--threads-multi", type=int, default=2, help="the multi-thread setting (0: only 1 thread)"
    )
    ap.add_argument(
        "--fit", choices=("default", "ops", "networks", "both"), default="default", help="calibration fit"
    )
    ap.add_argument("--repeats", type=int, default=20, help="timing rounds (calibration and validation)")
    ap.add_argument("--export-archs", type=int, default=3, help="networks exported per format (0: skip)")
    ap.add_argument("--formats", default="all", help="export formats to time (comma-separated, or all)")
    ap.add_argument(
        "--only", help=argparse.SUPPRESS
    )  # internal: measure this runtime's units, in this process
    args = ap.parse_args(argv)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "only")}
    path = data_path(args.out, Path(args.out).stem)  # runtimes_nb201.md keeps data/runtimes_nb201.json
    raw = _resume(path, settings, record_call=not args.only)
    if args.only:
        measure(args, raw, path, [args.only])
        return 0
    save_raw(path, raw)  # the children resume this file: its provenance is this call's, not theirs
    names = [n.strip() for n in args.runtimes.split(",")]
    if len(names) == 1:
        measure(args, raw, path, names)
    else:
        # one process per runtime: their thread pools (OpenVINO's TBB, ExecuTorch's pthreadpool) abort the
        # process when loaded together (glibc's __pthread_tpp_change_priority assertion after OpenVINO)
        for name in names:
            if not _pending(args, raw, name):
                continue  # every unit measured (or the runtime missing): no process to start
            child = subprocess.run(
                [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), f"--only={name}"]
            )
            if child.returncode != 0:
                sys.exit(f"measuring {name} failed (exit {child.returncode}); re-run to resume")
        raw = load_raw(path)
    if args.export_archs and "formats" not in raw["exports"]:
        raw["exports"] = export_costs(args, *_space(args), raw)
        save_raw(path, raw)
    out = Path(args.out)
    render(raw, out.parent, md_name=out.name)
    print(out.read_text(encoding="utf-8"))
    print(f"wrote {out}", file=sys.stderr)
    return 0


UNIT_SETTINGS = ("space", "space_options", "archs", "calibration_n", "repeats")
"""What one unit's figures depend on. The other settings (runtimes, sessions, thread setting, fit, export
formats) only choose which units and exports to measure, so a later call may add to the data."""


def _resume(path: Path, settings: dict[str, Any], record_call: bool = True) -> dict[str, Any]:
    """The data measured so far with the same unit settings (units already measured are not measured
    again; a call with more runtimes, sessions or fits adds its units; other export settings re-time the
    exports)."""
    fresh = provenance(NAME, settings)
    if path.exists():
        old = load_raw(path)
        before = old.get("settings", {})
        if all(before.get(k) == settings[k] for k in UNIT_SETTINGS):
            print(f"resuming {path}: {len(old.get('units', {}))} unit(s) measured", file=sys.stderr)
            if any(before.get(k) != settings[k] for k in ("export_archs", "formats")):
                old["exports"] = {}
            calls = old.get("calls", [old["command"]])
            old["calls"] = (
                calls if fresh["command"] in calls or not record_call else [*calls, fresh["command"]]
            )
            old["settings"] = settings
            return old
        print(
            f"{path} holds other unit settings ({', '.join(UNIT_SETTINGS)}): starting afresh", file=sys.stderr
        )
    return {**fresh, "calls": [fresh["command"]], "units": {}, "runtimes": {}, "exports": {}}


def _wanted_units(args: argparse.Namespace, runtime: Any) -> dict[str, tuple[int, str, int]]:
    """The units a call asks of ``runtime``: data key -> (threads, fit, session), one per thread setting, fit
    and session."""
    threads = [1] + ([args.threads_multi] if args.threads_multi > 1 else [])
    fits = {"default": [runtime.default_fit], "both": ["ops", "networks"]}.get(args.fit, [args.fit])
    sessions = range(args.sessions)
    return {f"{runtime.name}|{t}|{fit}|{s}": (t, fit, s) for t in threads for fit in fits for s in sessions}


def _pending(args: argparse.Namespace, raw: dict[str, Any], name: str) -> bool:
    """Whether runtime ``name`` has a unit left to measure (a runtime recorded as missing has none)."""
    from nas.cost.runtimes import get_runtime

    rt = get_runtime(name)
    if rt.missing():
        return rt.name not in raw["runtimes"]  # its child records why it is missing
    return rt.name not in raw["runtimes"] or any(k not in raw["units"] for k in _wanted_units(args, rt))


def _space(args: argparse.Namespace) -> Any:
    from search_spaces import create_space

    options = {"num_classes": 10, "in_channels": 1, **json.loads(args.space_options)}
    return create_space(args.space, **options), options


def measure(args: argparse.Namespace, raw: dict[str, Any], path: Path, names: list[str]) -> None:
    """Fill ``raw`` with the units of runtimes ``names`` (one thread setting, fit and session each), saving
    after each."""
    from nas.cost import CostModel
    from nas.cost.calibrate import calibrate, distinct_samples, fit_diagnostics
    from nas.cost.runtimes import get_runtime
    from nas.cost.validate import measure_archs

    space, _ = _space(args)
    archs = distinct_samples(space, args.archs, seed=10_000)  # new to every calibration (seeds 0..sessions-1)
    raw["archs"] = [a.to_dict() for a in archs]
    for name in names:
        rt = get_runtime(name.strip())
        missing = rt.missing()
        raw["runtimes"][rt.name] = {
            "version": rt.version(),
            "missing": missing,
            "description": rt.description,
        }
        if missing:
            continue
        for key, (t, fit, s) in _wanted_units(args, rt).items():
            if key in raw["units"]:
                continue
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                profile, diag = calibrate(
                    space,
                    n_archs=args.calibration_n,
                    seed=s,
                    threads=t,
                    runtime=rt.name,
                    method=fit,
                    repeats=args.repeats,
                )
                calibration_s = time.perf_counter() - t0
                model = CostModel(space, profile)
                measured = measure_archs(model, archs, t, 1, repeats=args.repeats, runtime=rt.name)
            predicted = model.predict(archs)
            raw["units"][key] = {
                "runtime": rt.name,
                "threads": t,
                "fit": fit,
                "session": s,
                **fit_diagnostics(predicted, measured),
                "calibration_holdout": {k: diag[k] for k in ("kendall_tau", "mape", "within_10pct")},
                "machine_unstable": profile.meta["machine_state"]["unstable"],
                "reference_ms": profile.meta["machine_state"]["reference_ms"],
                "calibration_seconds": calibration_s,
                "seconds": time.perf_counter() - t0,
                "measured_ms": [float(v) for v in measured],
                "predicted_ms": [float(v) for v in predicted],
            }
            save_raw(path, raw)
            print(f"{key}: tau {raw['units'][key]['kendall_tau']:.3f}", file=sys.stderr)
    save_raw(path, raw)


def export_costs(args: argparse.Namespace, space: Any, options: dict[str, Any], raw: dict[str, Any]) -> dict:
    """Seconds to write and verify each export format, and its file size, for the first ``--export-archs``
    validation architectures (each format in a process of its own, for the reason :func:`main` gives)."""
    from nas.export.formats import resolve_formats

    formats = resolve_formats(args.formats.split(","), space)
    rows: dict[str, list[dict[str, Any]]] = {}
    for fmt in formats:
        code = (
            "import json, sys; sys.path.insert(0, sys.argv[1]); import bench_runtimes as b;"
            " print(json.dumps(b.export_format(*json.loads(sys.argv[2]))))"
        )
        payload = json.dumps([args.space, options, raw["archs"][: args.export_archs], fmt])
        done = subprocess.run(
            [sys.executable, "-c", code, str(Path(__file__).parent), payload], capture_output=True, text=True
        )
        if done.returncode != 0:
            rows[fmt] = [{"seconds": 0.0, "bytes": 0, "ok": False, "error": f"exit {done.returncode}"}]
        else:
            rows[fmt] = json.loads(done.stdout.strip().splitlines()[-1])
    return {"formats": rows, "archs": [a for a in raw["archs"][: args.export_archs]]}


def export_format(space_name: str, options: dict[str, Any], archs: list[dict[str, Any]], fmt: str) -> list:
    """One format written and verified for each architecture: seconds, bytes, ok, error."""
    import torch

    from nas.export.formats import ExportJob, format_files, write_formats
    from search_spaces import create_space

    space = create_space(space_name, **options)
    archs = [space.arch(a) for a in archs]
    formats = [fmt]
    rows: list[dict[str, Any]] = []
    supernet = space.build_supernet()
    g = torch.Generator().manual_seed(0)
    for arch in archs:
        net = supernet.extract(space.to_spec(arch)).eval()
        x = torch.randn(8, *space.input_shape, generator=g)
        with torch.no_grad():
            logits = net(x)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            (out / "arch.json").write_text(arch.to_json())
            job = ExportJob(
                net=net,
                out_dir=out,
                space=space,
                spec=space.to_spec(arch),
                x=x,
                y=torch.zeros(8, dtype=torch.long),
                logits=logits,
                space_json={"name": space.name, "options": options, "supernet": "entangled"},
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results = write_formats(job, formats)
            res = results[fmt]
            size = sum((out / f).stat().st_size for f in format_files(fmt) if (out / f).exists())
            rows.append(
                {"seconds": res["seconds"], "bytes": size, "ok": res["ok"], "error": res.get("error")}
            )
    return rows


# --------------------------------------------------------------------------- rendering


def _units(raw: dict[str, Any]) -> dict[tuple[str, int, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for u in raw["units"].values():
        groups.setdefault((u["runtime"], u["threads"], u["fit"]), []).append(u)
    return {k: sorted(v, key=lambda u: u["session"]) for k, v in groups.items()}


def _mean_range(values: list[float], pct: bool = False) -> str:
    v = np.asarray(values, dtype=float) * (100 if pct else 1)
    unit = "%" if pct else ""
    if len(v) == 1:
        return f"{v[0]:.{1 if pct else 3}f}{unit}"
    d = 1 if pct else 3
    return f"{v.mean():.{d}f}{unit} [{v.min():.{d}f}, {v.max():.{d}f}]"


def repeatability(units: list[dict[str, Any]]) -> dict[str, float] | None:
    """Kendall tau and mean relative difference between consecutive sessions' measurements of the same
    networks: how well the measurement agrees with itself, the ceiling for any prediction."""
    from scipy.stats import kendalltau

    if len(units) < 2:
        return None
    taus, diffs = [], []
    for a, b in zip(units, units[1:]):
        x, y = np.asarray(a["measured_ms"]), np.asarray(b["measured_ms"])
        taus.append(float(kendalltau(x, y).statistic))
        diffs.append(float(np.mean(np.abs(x - y) / y)))
    return {"kendall_tau": float(np.mean(taus)), "mape": float(np.mean(diffs))}


def disagreement(x: np.ndarray, y: np.ndarray) -> float:
    """Share of pairs of networks that runtime x and runtime y order differently (ties excluded)."""
    dx, dy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])
    upper = np.triu(np.ones_like(dx, dtype=bool), 1) & (dx != 0) & (dy != 0)
    return float((dx[upper] != dy[upper]).mean()) if upper.any() else float("nan")


def render(raw: dict[str, Any], out_dir: Path, md_name: str = MARKDOWN, figures: bool = True) -> list[Path]:
    """runtimes.md from the data alone."""
    s = raw["settings"]
    groups = _units(raw)
    lines = [
        f"# Latency prediction per inference runtime ({s['space']})",
        "",
        machine_block(raw["machine"]),
        (
            f"{s['sessions']} calibrate-then-validate session(s) per setting: each calibration times"
            f" {s['calibration_n']} networks in the runtime ({s['repeats']} rounds) and predicts"
            f" {s['archs']} new architectures, then measured in the same runtime at batch 1. Figures: mean"
            " [min, max] over sessions. Repeatability: the same networks measured in consecutive sessions"
            " (the ceiling for any prediction)."
        ),
        "",
        "Reproduce: " + ", then ".join(f"`{c}`" for c in raw.get("calls", [raw["command"]])),
        "",
        "## Runtimes",
        "",
        "| runtime | version | status |",
        "| --- | --- | --- |",
    ]
    for name, info in raw["runtimes"].items():
        status = "measured" if not info["missing"] else f"not installed: {info['missing']}"
        lines.append(f"| {name} | {info['version']} | {status} |")
    lines += [
        "",
        "## Prediction vs measurement",
        "",
        "| runtime | threads | fit | Kendall tau | MAPE | within +/-10% | repeatability tau / diff |"
        " median measured ms | calibration s | unstable sessions |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (runtime, threads, fit), units in groups.items():
        rep = repeatability(units)
        rep_text = (
            "n/a (1 session)" if rep is None else f"{rep['kendall_tau']:.3f} / {100 * rep['mape']:.1f}%"
        )
        med = np.median([np.median(u["measured_ms"]) for u in units])
        lines.append(
            f"| {runtime} | {threads} | {fit} | {_mean_range([u['kendall_tau'] for u in units])} |"
            f" {_mean_range([u['mape'] for u in units], pct=True)} |"
            f" {_mean_range([u['within_10pct'] for u in units], pct=True)} | {rep_text} | {med:.4g} |"
            f" {np.mean([u['calibration_seconds'] for u in units]):.0f} |"
            f" {sum(u['machine_unstable'] for u in units)} of {len(units)} |"
        )
    lines += _between_runtimes(groups)
    lines += _export_lines(raw.get("exports", {}))
    return [write_markdown(out_dir / md_name, lines)]


def _between_runtimes(groups: dict[tuple[str, int, str], list[dict[str, Any]]]) -> list[str]:
    """For each thread setting: latency ratio to torch, and the share of network pairs ordered differently."""
    lines: list[str] = []
    for threads in sorted({t for _, t, _ in groups}):
        measured = {}
        for (runtime, t, _), units in groups.items():
            if t == threads and runtime not in measured:
                measured[runtime] = np.median([u["measured_ms"] for u in units], axis=0)
        if len(measured) < 2:
            continue
        names = list(measured)
        base = "torch" if "torch" in measured else names[0]
        lines += [
            "",
            f"## Between runtimes ({threads} thread{'s' if threads > 1 else ''}, same networks)",
            "",
            f"Latency ratio to {base} (median [10th, 90th percentile] over the networks), and the share of"
            " pairs of networks whose faster one differs between two runtimes.",
            "",
            f"| runtime | ratio to {base} | " + " | ".join(f"pairs ordered unlike {n}" for n in names) + " |",
            "| --- | --- | " + " | ".join("---" for _ in names) + " |",
        ]
        for a in names:
            r = measured[a] / measured[base]
            cells = ["-" if a == b else f"{100 * disagreement(measured[a], measured[b]):.1f}%" for b in names]
            lines.append(
                f"| {a} | {np.median(r):.3g} [{np.percentile(r, 10):.3g}, {np.percentile(r, 90):.3g}] | "
                + " | ".join(cells)
                + " |"
            )
    return lines


def _export_lines(exports: dict[str, Any]) -> list[str]:
    formats = exports.get("formats")
    if not formats:
        return []
    lines = [
        "",
        f"## Export formats ({len(exports['archs'])} networks each: write + verify in the target runtime)",
        "",
        "| format | seconds (mean) | file size (mean) | verified |",
        "| --- | --- | --- | --- |",
    ]
    for fmt, rows in sorted(formats.items()):
        ok = sum(r["ok"] for r in rows)
        errors = {r["error"] for r in rows if r["error"]}
        note = f"{ok} of {len(rows)}" + (f" ({'; '.join(sorted(errors))[:200]})" if errors else "")
        lines.append(
            f"| {fmt} | {np.mean([r['seconds'] for r in rows]):.2f} |"
            f" {np.mean([r['bytes'] for r in rows]) / 1024:.0f} KiB | {note} |"
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
