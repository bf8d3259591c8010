"""Regenerate results/*.md (and their plots) from the committed data in results/data/: no training, no timing,
no runs/.

    python scripts/make_results.py [--only NAME] [--check] [--results-dir results]

Every benchmark script writes what it measured to ``results/data/<name>.json``
and renders its report from that file alone (``bench_<name>.render``); this
script calls those renderers, so a fresh clone rebuilds every published table.
``--check`` renders into a scratch directory instead and exits non-zero naming
each markdown file whose committed content differs from what its data renders
(a hand-edited table, or data committed without its table), and each
``results/*.md`` that no data renders. Plots are regenerated but not compared:
matplotlib output is not byte-stable across versions. A few reports are measured
only on hardware a clone may never see (a GPU) or accumulate over sessions
(``OPTIONAL``): each is rendered,
and checked, only where its data file exists.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import importlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(
    0, str(Path(__file__).resolve().parent)
)  # the bench_* modules and _results, also when imported from tests
from _results import DATA_DIR, load_raw  # noqa: E402

# Reports rendered from results/data/<name>.json by scripts/bench_<name>.py. (distributed_search.json is an
# input of controllers.)
REPORTS = (
    "controllers",
    "cost_model",
    "latency_budget",
    "mixtures",
    "nb201_controllers",
    "pipeline",
    "ranking",
    "supernet_overhead",
    "train_throughput",
)
# Reports whose data a clone may not have: measured only where the hardware was lent (scripts/gpu_check.sh on
# a GPU machine), or accumulated over sessions by long resumable studies whose first data is not committed yet
# (ground truths, recipes, the runtimes' calibrate-then-validate sessions). Each is rendered and checked only
# when results/data/<name>.json exists; report name -> the bench_<name> whose renderer writes it.
OPTIONAL = {
    "train_throughput_gpu": "train_throughput",
    "runtimes": "runtimes",
    "runtimes_nb201": "runtimes",
    "latency_fit": "latency_fit",
    "controllers_nb201": "controllers",
    "ground_truth": "ground_truth",
    "recipes": "recipes",
    "end_to_end": "end_to_end",
    "nb201_ground_truth": "nb201_ground_truth",
    "own_model": "own_model",
    "pipeline_nb201": "pipeline",
}
NOT_GENERATED = ("README.md",)  # hand-written: the only markdown here that no data renders


def renderer(name: str) -> Callable[..., list[Path]]:
    """``bench_<name>.render`` (an optional report: its benchmark's, writing ``<name>.md``): imported lazily,
    each script keeps its heavy imports inside its measuring code."""
    if name in OPTIONAL:
        return functools.partial(
            importlib.import_module(f"bench_{OPTIONAL[name]}").render, md_name=f"{name}.md"
        )
    return importlib.import_module(f"bench_{name}").render


def present(results_dir: Path) -> list[str]:
    """Every report to render from ``results_dir``: all of :data:`REPORTS`, and the optional ones whose data
    was measured (a CPU-only clone has no GPU data, and nothing is missing there)."""
    return [*REPORTS, *(n for n in OPTIONAL if (results_dir / DATA_DIR / f"{n}.json").exists())]


def render_all(
    results_dir: Path, names: Sequence[str], out_dir: Path, figures: bool
) -> dict[str, list[Path]]:
    """Render every named report from ``results_dir/data`` into ``out_dir``; the files each wrote."""
    written = {}
    for name in names:
        raw: dict[str, Any] = load_raw(results_dir / DATA_DIR / f"{name}.json")
        written[name] = renderer(name)(raw, out_dir, figures=figures)
    return written


def check(results_dir: Path, names: Sequence[str], whole: bool) -> list[str]:
    """Differences between the committed markdown and what the data renders, one message (with a diff excerpt)
    per file."""
    problems = []
    missing = [n for n in names if not (results_dir / DATA_DIR / f"{n}.json").exists()]
    problems += [f"{DATA_DIR}/{n}.json: missing (nothing renders {n})" for n in missing]
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        shutil.copytree(
            results_dir / DATA_DIR, scratch / DATA_DIR
        )  # renderers may read a sibling data file (controllers: distributed_search)
        written = render_all(results_dir, [n for n in names if n not in missing], scratch, figures=False)
        rendered = {p.name for paths in written.values() for p in paths if p.suffix == ".md"}
        for name in sorted(rendered):
            new = (scratch / name).read_text(encoding="utf-8")
            committed = results_dir / name
            if not committed.exists():
                problems.append(f"{name}: not committed (its data renders it)")
                continue
            old = committed.read_text(encoding="utf-8")
            if old != new:
                diff = list(
                    difflib.unified_diff(
                        old.splitlines(),
                        new.splitlines(),
                        f"{name} (committed)",
                        f"{name} (rendered from data)",
                        lineterm="",
                        n=0,
                    )
                )
                problems.append(
                    f"{name}: differs from what {DATA_DIR}/ renders\n"
                    + "\n".join(diff[:12])
                    + ("\n..." if len(diff) > 12 else "")
                )
    if whole:
        stray = sorted(
            p.name for p in results_dir.glob("*.md") if p.name not in rendered and p.name not in NOT_GENERATED
        )
        problems += [f"{name}: no data in {DATA_DIR}/ renders it" for name in stray]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=[*REPORTS, *OPTIONAL], help="one report")
    ap.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming each markdown file that differs from what its data renders",
    )
    ap.add_argument("--results-dir", type=Path, default=Path(__file__).resolve().parent.parent / "results")
    args = ap.parse_args(argv)
    names = [args.only] if args.only else present(args.results_dir)
    if args.check:
        problems = check(args.results_dir, names, whole=args.only is None)
        for p in problems:
            print(p, file=sys.stderr)
        print(
            (
                f"{len(problems)} file(s) out of date"
                if problems
                else f"{len(names)} report(s) match their data"
            ),
            file=sys.stderr,
        )
        return 1 if problems else 0
    for name, paths in render_all(args.results_dir, names, args.results_dir, figures=True).items():
        print(f"{name}: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
