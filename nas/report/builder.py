"""``nas report DIR``: figures and a self-contained HTML / Markdown report of a run directory.

The report only reads what the run wrote (``config.yaml``, ``events.jsonl``,
the Optuna study, ``export/meta.json``, ``ranking.json``, ``finetune/*``), so it
can be made at any time, for any run, without data or a GPU. It writes, under
``DIR/report/`` by default: one PNG per figure (``pareto``, ``training``,
``ranking``, ``anytime``; a figure without data is listed as "not available"
with the reason, never drawn empty), ``report.md`` (links the PNGs),
``report.html`` (the PNGs embedded as data URIs and a Content-Security-Policy
that forbids fetching anything: it works offline and shows the same thing
anywhere) and ``report.json`` (the same content for programs).

The same figures, the Pareto table, per-trial scalars, TensorBoard hparams
sessions, summary values and the exported model (a wandb artifact) also go to
the run's trackers. Sending is skipped when the trackers already received a
report of identical content (``report/tracked.json``), so ``nas run`` followed
by ``nas report`` does not duplicate it.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from nas.constraints import Limit, from_json, is_feasible
from nas.cost.metrics import row_metrics
from nas.run.config import NASConfig
from nas.run.files import (
    RunDirError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json,
)
from nas.run.tracking import (
    EVENTS_NAME,
    JsonlTracker,
    Trackers,
    TrackingWarning,
    markdown_table,
    read_events,
    tracker_classes,
)
from nas.trials import TrialRow, row_from_study_trial, trial_row

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from nas.run.context import RunContext

REPORT_DIR = "report"
TRACKED_FILE = "tracked.json"
FIGURES = ("pareto", "training", "ranking", "anytime")
TITLES = {
    "pareto": "Pareto front: accuracy vs. predicted latency",
    "training": "Training curves",
    "ranking": "Ranking: supernet vs. standalone training",
    "anytime": "Controller any-time curve",
}
CAPTIONS = {
    "pareto": (
        "Every finished trial: supernet validation accuracy (inherited weights, batch norm recalibrated)"
        " against the cost model's predicted latency. Circles: the Pareto front; crosses: over the latency"
        " budget (dashed line); star: the exported network."
    ),
    "training": (
        "Per epoch: mean training loss of the subnetworks sampled each step, and validation accuracy of the"
        " largest and smallest subnetworks; fine-tuning curves of the exported network when `nas finetune`"
        " ran."
    ),
    "ranking": (
        "`nas rank`: each architecture's accuracy with inherited supernet weights against its accuracy"
        " trained alone (bars: range over seeds)."
    ),
    "anytime": (
        "Left: best validation accuracy within the latency budget after each completed trial. Right:"
        " hypervolume of the feasible accuracy-latency front (reference point: the lowest accuracy of any"
        " trial and the budget)."
    ),
}
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# --------------------------------------------------------------------------- what a run directory holds


@dataclass
class RunRecord:
    """Everything the report reads from one run directory."""

    run_dir: Path
    cfg: NASConfig
    rows: list[TrialRow] = field(
        default_factory=list
    )  # completed trials, as Controller.history() returns them
    states: dict[str, int] = field(default_factory=dict)  # trials per Optuna state
    trials_source: str = ""  # where the trials came from, or why there are none
    study_name: str = "search"
    budget_ms: float | None = None  # the latency limit on the first device, when there is one
    limits: dict[str, Limit] = field(default_factory=dict)  # what trials are judged by (search/pareto.json)
    memory_batch: int = 1
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    front: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    finetune_epochs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    finetune_results: dict[str, dict[str, Any]] = field(default_factory=dict)
    export_meta: dict[str, Any] | None = None
    ranking: dict[str, Any] | None = None

    @property
    def exported(self) -> dict[str, Any] | None:
        """The trial row of the exported network (None without an export)."""
        if self.export_meta is None:
            return None
        for r in self.rows:
            if r["trial"] == self.export_meta.get("trial"):
                return r
        m = self.export_meta  # the study is gone or elsewhere: what the export recorded
        return trial_row(
            m.get("trial"),
            m.get("arch", {}),
            m.get("arch_id"),
            m.get("search_val_accuracy", m.get("val_accuracy")),
            m.get("latency_pred_ms"),
        )


def _dedupe_by_step(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One event per step (the last: a resumed run may log an epoch again), in step order."""
    by_step = {int(e["step"]): e for e in events if isinstance(e.get("step"), int)}
    return [by_step[k] for k in sorted(by_step)]


def _trials_from_study(run_dir: Path, cfg: NASConfig) -> tuple[list[dict[str, Any]], dict[str, int], str]:
    """Completed trials from the Optuna study (stock ``optuna.load_study``), else from
    ``search/history.csv``."""
    import optuna

    from nas.controllers.optuna_controller import _safe_url, _with_installed_driver

    name = cfg.search.study or "search"
    db = run_dir / "study.db"
    why = ""
    if cfg.search.storage is None and not db.exists():
        why = f"no {db.name}"
    else:
        url = cfg.search.storage or f"sqlite:///{db}"
        try:
            study = optuna.load_study(study_name=name, storage=_with_installed_driver(url))
        except Exception as e:  # noqa: BLE001 - unreachable server, missing study: fall back to the CSV
            why = f"cannot open study {name!r} in {_safe_url(url)} ({type(e).__name__}: {e})"
        else:
            states: dict[str, int] = {}
            rows = []
            for t in study.get_trials(deepcopy=False):
                states[t.state.name] = states.get(t.state.name, 0) + 1
                if t.state != optuna.trial.TrialState.COMPLETE or "arch_id" not in t.user_attrs:
                    continue
                rows.append(row_from_study_trial(t))
            return rows, states, f"Optuna study {name!r} in {_safe_url(url)}"
    hist = run_dir / "search" / "history.csv"
    if not hist.exists():
        return [], {}, f"{why}; no search/history.csv (run `nas search`)"
    with open(hist, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        lat_cols = [c for c in reader.fieldnames or [] if c.startswith("latency_pred_ms_")]
        rows = [
            trial_row(
                int(r["trial"]),
                {},
                r["arch_id"],
                float(r["val_accuracy"]),
                float(r[lat_cols[0]]),
                [float(r[c]) for c in lat_cols[1:]],
                r["feasible"] == "1",
            )
            for r in reader
        ]
    return rows, {"COMPLETE": len(rows)}, f"search/history.csv ({why})"


def load_run(run_dir: str | Path, cfg: NASConfig | None = None) -> RunRecord:
    """Read a run directory; ``cfg`` defaults to its ``config.yaml``."""
    from nas.pareto import pareto_front
    from nas.run.context import CONFIG_FILE, resolve_config

    run_dir = Path(run_dir).expanduser().resolve()
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunDirError(
            f"{run_dir} is not a run directory (no {CONFIG_FILE}); give the --run-dir of a `nas run`/`nas"
            " train`"
        )
    cfg = cfg or resolve_config(run_dir, None, ())
    rec = RunRecord(
        run_dir=run_dir,
        cfg=cfg,
        study_name=cfg.search.study or "search",
        budget_ms=cfg.search.latency_budget_ms,
        devices=list(cfg.search.devices),
    )
    events = read_events(run_dir) if (run_dir / EVENTS_NAME).exists() else []
    rec.epochs = _dedupe_by_step([e for e in events if e.get("kind") == "epoch"])
    for e in events:
        m = re.fullmatch(r"finetune/([^/]+)/epoch", str(e.get("kind")))
        if m:
            rec.finetune_epochs.setdefault(m.group(1), []).append(e)
    rec.finetune_epochs = {k: _dedupe_by_step(v) for k, v in sorted(rec.finetune_epochs.items())}
    for f in sorted(run_dir.glob("finetune/*/result.json")):
        rec.finetune_results[f.parent.name] = read_json(f)
    pareto_file = run_dir / "search" / "pareto.json"
    if pareto_file.exists():  # the constraints and devices the last search or export judged trials by
        saved = read_json(pareto_file)
        rec.devices = list(saved.get("devices") or rec.devices)
        if "constraints" in saved:
            rec.limits = from_json(saved["constraints"])
            rec.memory_batch = int(saved.get("memory_batch", 1))
        elif saved.get("latency_budget_ms") is not None:  # written before constraints were recorded
            rec.limits = {
                "latency_ms": Limit(
                    "latency_ms", float(saved["latency_budget_ms"]), float(saved["latency_budget_ms"])
                )
            }
    elif cfg.search.latency_budget_ms is not None:
        rec.limits = {
            "latency_ms": Limit(
                "latency_ms", float(cfg.search.latency_budget_ms), float(cfg.search.latency_budget_ms)
            )
        }
    rec.budget_ms = rec.limits["latency_ms"].value if "latency_ms" in rec.limits else None
    rec.rows, rec.states, rec.trials_source = _trials_from_study(run_dir, cfg)
    for r in rec.rows:  # judged by the same function as the search's front and the export's choice
        if r["arch"]:  # a study's trial (a history.csv row keeps the feasibility the search wrote)
            r["feasible"] = is_feasible(row_metrics(r, rec.devices, rec.memory_batch), rec.limits)
    rec.front = pareto_front(rec.rows)
    if (run_dir / "export" / "meta.json").exists():
        rec.export_meta = read_json(run_dir / "export" / "meta.json")
    if (run_dir / "ranking.json").exists():
        rec.ranking = read_json(run_dir / "ranking.json")
    return rec


# --------------------------------------------------------------------------- figures


def build_figures(rec: RunRecord) -> dict[str, Figure | str]:
    """Each figure of the report, or why it is not available."""
    from nas.report import figures as rf

    controller = rec.cfg.search.controller
    makers: dict[str, tuple[str | None, Any]] = {
        "pareto": (
            None if rec.rows else f"no finished search trials ({rec.trials_source})",
            lambda: rf.pareto_figure(
                rec.rows,
                rec.front,
                rec.budget_ms,
                rec.exported,
                device=rec.devices[0],
                n_devices=len(rec.devices),
            ),
        ),
        "training": (
            (
                None
                if rec.epochs or rec.finetune_epochs
                else f"no epoch events in {EVENTS_NAME} (train the supernet with `nas train`)"
            ),
            lambda: rf.training_figure(
                rec.epochs,
                rec.finetune_epochs,
                {k: r.get("val_accuracy_before") for k, r in rec.finetune_results.items()},
            ),
        ),
        "ranking": (
            (
                None
                if rec.ranking and rec.ranking.get("rows")
                else "no ranking.json (run `nas rank --run-dir DIR`)"
            ),
            lambda: rf.ranking_figure(rec.ranking or {}),
        ),
        "anytime": (
            None if rec.rows else f"no finished search trials ({rec.trials_source})",
            lambda: rf.anytime_figure(rec.rows, rec.budget_ms, controller=controller),
        ),
    }
    out: dict[str, Figure | str] = {}
    for name, (missing, make) in makers.items():
        if missing:
            out[name] = missing
            continue
        try:
            out[name] = make()
        except Exception as e:  # noqa: BLE001 - one broken figure must not cost the rest of the report
            warnings.warn(
                f"report figure {name!r} failed: {type(e).__name__}: {e}", TrackingWarning, stacklevel=2
            )
            out[name] = f"drawing it failed ({type(e).__name__}: {e})"
    return out


def _png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# --------------------------------------------------------------------------- tables and summary


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else str(v)
    return str(v)


def pareto_table(rec: RunRecord) -> tuple[list[str], list[list[Any]]]:
    """The Pareto front (plus the exported trial when it is not on it), as the trackers receive it."""
    exported = rec.exported
    cols = [
        "trial",
        "arch_id",
        "val_accuracy",
        "latency_pred_ms",
        *(f"latency_pred_ms_{d}" for d in rec.devices[1:]),
        "on_front",
        "exported",
        "arch",
    ]
    rows = list(rec.front)
    if exported is not None and all(r["trial"] != exported["trial"] for r in rows):
        rows.append(exported)
    front_trials = {r["trial"] for r in rec.front}
    table = [
        [
            r["trial"],
            r["arch_id"],
            r["accuracy"],
            r["latency_ms"],
            *r.get("extra_latencies_ms", []),
            r["trial"] in front_trials,
            exported is not None and r["trial"] == exported["trial"],
            json.dumps(r.get("arch", {}), sort_keys=True),
        ]
        for r in rows
    ]
    return cols, table


def numeric_summary(rec: RunRecord) -> dict[str, float | int]:
    """What the report adds to the trackers' run summary (numbers only)."""
    from nas.pareto import anytime_curves

    out: dict[str, float | int] = {
        "report/trials_complete": len(rec.rows),
        "report/pareto_size": len(rec.front),
    }
    if rec.rows:
        curves = anytime_curves(rec.rows, rec.budget_ms)
        best = curves["best_feasible_accuracy_pct"][-1]
        if math.isfinite(best):
            out["report/best_feasible_val_accuracy"] = best / 100
        out["report/hypervolume"] = curves["hypervolume"][-1]
        out["report/feasible_trials"] = sum(1 for r in rec.rows if r["feasible"])
    m = rec.export_meta
    if m:
        for key in (
            "trial",
            "test_accuracy",
            "val_accuracy",
            "latency_pred_ms",
            "latency_measured_ms",
            "params",
            "macs",
        ):
            if isinstance(m.get(key), (int, float)):
                out[f"report/exported_{key}"] = m[key]
    for init, res in rec.finetune_results.items():
        for key in ("test_accuracy_before", "test_accuracy_after"):
            if isinstance(res.get(key), (int, float)):
                out[f"report/finetune_{init}_{key}"] = res[key]
    if rec.ranking and isinstance(rec.ranking.get("kendall_tau"), float):
        out["report/ranking_kendall_tau"] = rec.ranking["kendall_tau"]
    return out


def _arch_text(arch: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(arch.items())) or "(not recorded)"


def summary_rows(rec: RunRecord) -> list[tuple[str, str]]:
    """The run at a glance: what was searched, how, and what came out."""
    c = rec.cfg
    rows: list[tuple[str, str]] = [("run directory", str(rec.run_dir))]
    space = (
        f"{c.space.name} (supernet {c.space.supernet}, width x{c.space.width_mult:g}"
        + (f", options {c.space.options}" if c.space.options else "")
        + ")"
    )
    rows.append(("search space", space))
    data = (
        c.data.name
        + (f", {c.data.resolution} px" if c.data.resolution else "")
        + (f", {c.data.train_limit} training images" if c.data.train_limit else "")
    )
    rows.append(("data", data))
    done = len(rec.epochs)
    rows.append(
        (
            "supernet training",
            f"{done}/{c.train.epochs} epochs, sampler {c.train.sampler}"
            + (" + distillation" if c.train.distill else "")
            + f", {c.train.optimizer} lr {c.train.lr:g}",
        )
    )
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(rec.states.items())) or "none"
    rows.append(("controller", f"{c.search.controller}: {states} trials (from {rec.trials_source})"))
    shown = [
        f"latency {lim.value:g} ms on {rec.devices[0]}" if m == "latency_ms" else lim.describe()
        for m, lim in rec.limits.items()
    ]
    rows.append(("constraints", ", ".join(shown) if shown else "none (unconstrained)"))
    if len(rec.devices) > 1:
        rows.append(("latency objectives", ", ".join(rec.devices)))
    summ = numeric_summary(rec)
    if rec.rows:
        best = summ.get("report/best_feasible_val_accuracy")
        rows.append(
            (
                "Pareto front",
                (
                    f"{len(rec.front)} architectures; best val accuracy within budget {100 * best:.2f} %"
                    if best is not None
                    else f"{len(rec.front)} architectures; no trial within budget"
                ),
            )
        )
    m = rec.export_meta
    if m is None:
        rows.append(("exported network", "not available: no export/meta.json (run `nas export`)"))
        return rows + _extra_rows(rec)
    rows.append(
        (
            "exported network",
            f"trial {m.get('trial')}, arch {m.get('arch_id')}: {_arch_text(m.get('arch', {}))}",
        )
    )
    rows.append(("test accuracy", f"{100 * m['test_accuracy']:.2f} % (val {100 * m['val_accuracy']:.2f} %)"))
    setup = m.get("latency_setup", {})
    err = m.get("latency_error_pct")
    rows.append(
        (
            "latency",
            f"predicted {m['latency_pred_ms']:.3f} ms, measured {m['latency_measured_ms']:.3f} ms"
            + (f" ({err:+.1f} %)" if isinstance(err, (int, float)) else "")
            + (
                f"; batch {setup.get('batch')}, {setup.get('threads')} thread(s) on {setup.get('processor')}"
                if setup
                else ""
            ),
        )
    )
    rows.append(("size", f"{m.get('params', 0):,} parameters, {m.get('macs', 0):,} MACs"))
    fmts = []
    for fmt, r in m.get("formats", {}).items():
        if r.get("ok"):
            fmts.append(
                f"{fmt} ok"
                + (
                    f" (max abs diff {r['max_abs_diff']:.2g})"
                    if isinstance(r.get("max_abs_diff"), (int, float))
                    else ""
                )
            )
        else:
            fmts.append(f"{fmt} FAILED ({r.get('error', 'failed')})")
    rows.append(("export formats", "; ".join(fmts) or "none recorded"))
    return rows + _extra_rows(rec)


def _extra_rows(rec: RunRecord) -> list[tuple[str, str]]:
    rows = []
    for init, r in rec.finetune_results.items():
        rows.append(
            (
                f"fine-tuned ({init})",
                (
                    f"{r.get('epochs')} epochs: val {100 * r['val_accuracy_before']:.2f} ->"
                    f" {100 * r['val_accuracy_after']:.2f} %, test {100 * r['test_accuracy_before']:.2f} ->"
                    f" {100 * r['test_accuracy_after']:.2f} %"
                ),
            )
        )
    if rec.ranking:
        r = rec.ranking
        rows.append(
            (
                "ranking",
                f"{r.get('k')} architectures: Kendall tau {_fmt(r.get('kendall_tau'), 3)}, Spearman"
                f" {_fmt(r.get('spearman'), 3)}, regret {_fmt(r.get('regret'), 3)}"
                + (
                    f", seed-to-seed tau {_fmt(r['seed_to_seed_kendall_tau'], 3)}"
                    if "seed_to_seed_kendall_tau" in r
                    else ""
                ),
            )
        )
    return rows


# --------------------------------------------------------------------------- documents


def _human_pareto(
    rec: RunRecord, cols: list[str], table: list[list[Any]]
) -> tuple[list[str], list[list[str]]]:
    head = [
        "trial",
        "arch id",
        "val accuracy [%]",
        f"predicted latency on {rec.devices[0]} [ms]",
        *(f"on {d} [ms]" for d in rec.devices[1:]),
        "on front",
        "exported",
    ]
    n_lat = len(rec.devices)
    rows = []
    for r in table:
        rows.append(
            [
                str(r[0]),
                str(r[1]),
                f"{100 * r[2]:.2f}",
                *(f"{v:.3f}" for v in r[3 : 3 + n_lat]),
                "yes" if r[3 + n_lat] else "no",
                "yes" if r[4 + n_lat] else "",
            ]
        )
    return head, rows


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; margin-top: 0.3em; }
.na { color: #a33; }
"""


def _html_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    e = html.escape
    return (
        "<table>\n<tr>"
        + "".join(f"<th>{e(str(h))}</th>" for h in head)
        + "</tr>\n"
        + "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>\n" for row in rows)
        + "</table>\n"
    )


def render_markdown(
    rec: RunRecord,
    figures: dict[str, Path | str],
    summary: list[tuple[str, str]],
    pareto: tuple[list[str], list[list[str]]],
    generated: str,
) -> str:
    """report.md: the PNGs linked (relative), tables as Markdown."""
    out = [
        f"# NAS report: {rec.run_dir.name}",
        "",
        f"Generated {generated} by `nas report` from `{rec.run_dir}`.",
        "",
        "## Summary",
        "",
    ]
    out += [markdown_table(["item", "value"], summary), "", "## Figures", ""]
    for name in FIGURES:
        fig = figures[name]
        out.append(f"### {TITLES[name]}")
        out.append("")
        if isinstance(fig, Path):
            out += [f"![{TITLES[name]}]({fig.name})", "", CAPTIONS[name]]
        else:
            out.append(f"Not available: {fig}.")
        out.append("")
    out += ["## Pareto front", ""]
    out.append(markdown_table(*pareto) if pareto[1] else "Not available: no finished search trials.")
    return "\n".join(out) + "\n"


def render_html(
    rec: RunRecord,
    figures: dict[str, Path | str],
    images: dict[str, bytes],
    summary: list[tuple[str, str]],
    pareto: tuple[list[str], list[list[str]]],
    generated: str,
) -> str:
    """report.html: one file, every figure embedded, nothing fetched (a Content-Security-Policy forbids
    it)."""
    e = html.escape
    title = f"NAS report: {rec.run_dir.name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        (
            f"<p>Generated {e(generated)} by <code>nas report</code> from"
            f" <code>{e(str(rec.run_dir))}</code>.</p>"
        ),
        "<h2>Summary</h2>",
        _html_table(["item", "value"], summary),
        "<h2>Figures</h2>",
    ]
    for name in FIGURES:
        parts.append(f"<h3>{e(TITLES[name])}</h3>")
        if name in images:
            data = base64.b64encode(images[name]).decode("ascii")
            parts.append(
                f'<figure id="fig-{name}"><img src="data:image/png;base64,{data}"'
                f' alt="{e(TITLES[name])}"><figcaption>{e(CAPTIONS[name])}</figcaption></figure>'
            )
        else:
            parts.append(f'<p class="na" id="fig-{name}">Not available: {e(str(figures[name]))}.</p>')
    parts.append("<h2>Pareto front</h2>")
    parts.append(
        _html_table(*pareto) if pareto[1] else '<p class="na">Not available: no finished search trials.</p>'
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- the report


@dataclass
class ReportResult:
    """What :func:`write_report` wrote, and what the trackers get."""

    out_dir: Path
    record: RunRecord
    figures: dict[str, Path | str]  # the PNG, or why the figure is not available
    markdown: Path
    html: Path
    json: Path
    pareto_columns: list[str]
    pareto_rows: list[list[Any]]
    summary: dict[str, float | int]
    fingerprint: str  # digest of the report's inputs: the trackers are sent a report once per content
    seconds: float


def write_report(
    run_dir: str | Path, out_dir: str | Path | None = None, cfg: NASConfig | None = None
) -> ReportResult:
    """Read ``run_dir`` and write the figures, report.md, report.html and report.json (atomically) to
    ``out_dir``."""
    t0 = time.perf_counter()
    rec = load_run(run_dir, cfg)
    out = Path(out_dir).expanduser().resolve() if out_dir else rec.run_dir / REPORT_DIR
    drawn = build_figures(rec)
    figures: dict[str, Path | str] = {}
    images: dict[str, bytes] = {}
    for name in FIGURES:
        item = drawn[name]
        path = out / f"{name}.png"
        if isinstance(item, str):
            figures[name] = item
            path.unlink(missing_ok=True)  # an earlier report's figure would contradict this one
            continue
        images[name] = _png_bytes(item)
        atomic_write_bytes(path, images[name])
        figures[name] = path
    cols, table = pareto_table(rec)
    summary = summary_rows(rec)
    human = _human_pareto(rec, cols, table)
    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    numbers = numeric_summary(rec)
    inputs = {
        "rows": rec.rows,
        "epochs": rec.epochs,
        "finetune": rec.finetune_epochs,
        "export": rec.export_meta,
        "ranking": rec.ranking,
        "budget": rec.budget_ms,
        "figures": sorted(images),
    }
    fingerprint = hashlib.sha1(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()
    atomic_write_json(
        out / "report.json",
        {
            "run_dir": str(rec.run_dir),
            "generated": generated,
            "figures": {
                n: {"file": f.name} if isinstance(f, Path) else {"not_available": f}
                for n, f in figures.items()
            },
            "summary": dict(summary),
            "numbers": numbers,
            "pareto": {"columns": cols, "rows": table},
            "fingerprint": fingerprint,
        },
    )
    atomic_write_text(out / "report.md", render_markdown(rec, figures, summary, human, generated))
    atomic_write_text(out / "report.html", render_html(rec, figures, images, summary, human, generated))
    return ReportResult(
        out,
        rec,
        figures,
        out / "report.md",
        out / "report.html",
        out / "report.json",
        cols,
        table,
        numbers,
        fingerprint,
        time.perf_counter() - t0,
    )


def already_tracked(result: ReportResult, trackers: Sequence[str]) -> bool:
    """Whether these trackers already received a report of identical content."""
    f = result.record.run_dir / REPORT_DIR / TRACKED_FILE
    try:
        saved = read_json(f)
    except RunDirError:
        return False
    return saved.get("fingerprint") == result.fingerprint and saved.get("trackers") == sorted(trackers)


def send_to_trackers(result: ReportResult, trackers: Trackers) -> None:
    """Figures, the Pareto table, per-trial scalars, hparams sessions, the exported model and summary
    values."""
    from nas.pareto import anytime_curves

    rec = result.record
    trackers.log_table("report/pareto_front", result.pareto_columns, result.pareto_rows)
    for name, fig in result.figures.items():
        if isinstance(fig, Path):
            trackers.log_figure(f"report/{name}", fig)
    if rec.rows:
        curves = anytime_curves(rec.rows, rec.budget_ms)
        front = {r["trial"] for r in rec.front}
        for r, best, hv in zip(
            sorted(rec.rows, key=lambda r: r["trial"]),
            curves["best_feasible_accuracy_pct"],
            curves["hypervolume"],
        ):
            values: dict[str, float | int] = {
                "val_accuracy": r["accuracy"],
                "latency_pred_ms": r["latency_ms"],
                "feasible": int(r["feasible"]),
                "on_front": int(r["trial"] in front),
                "hypervolume": hv,
            }
            if math.isfinite(best):
                values["best_feasible_val_accuracy"] = best / 100
            trackers.log("report/trial", r["trial"], values)
    exported = rec.exported
    sessions = list(rec.front) + (
        [exported] if exported is not None and all(r["trial"] != exported["trial"] for r in rec.front) else []
    )
    for r in sessions:
        hp: dict[str, Any] = {
            k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
            for k, v in r.get("arch", {}).items()
        }
        hp.update(
            trial=int(r["trial"]),
            arch_id=str(r["arch_id"]),
            exported=exported is not None and r["trial"] == exported["trial"],
        )
        trackers.log_hparams(
            f"hparams/trial-{int(r['trial']):04d}",
            hp,
            {"hparam/val_accuracy": float(r["accuracy"]), "hparam/latency_pred_ms": float(r["latency_ms"])},
        )
    if rec.export_meta is not None:
        m = rec.export_meta
        meta = {
            k: m[k]
            for k in (
                "trial",
                "arch_id",
                "arch",
                "space",
                "data",
                "test_accuracy",
                "latency_pred_ms",
                "latency_measured_ms",
                "params",
            )
            if k in m
        }
        trackers.log_artifact(
            f"{rec.run_dir.name}-export", rec.run_dir / "export", type="model", metadata=meta
        )
    trackers.summary(result.summary)


def track_report(
    result: ReportResult, trackers: Trackers, names: Sequence[str], resend: bool = False
) -> bool:
    """Send the report unless these trackers already have it; True if sent."""
    if not resend and already_tracked(result, names):
        return False
    send_to_trackers(result, trackers)
    atomic_write_json(
        result.record.run_dir / REPORT_DIR / TRACKED_FILE,
        {"fingerprint": result.fingerprint, "trackers": sorted(names), "time": time.time()},
    )
    return True


def report_after_run(ctx: RunContext) -> ReportResult | None:
    """The end of ``nas run`` / ``nas export``: write the report into the run and send it to the open
    trackers.

    A report is a view of the run: if it fails, the run does not (``nas report DIR`` retries).
    """
    try:
        result = write_report(ctx.run_dir, cfg=ctx.cfg)
        track_report(result, ctx.trackers, tracker_names(ctx.trackers))
    except Exception as e:  # noqa: BLE001
        warnings.warn(
            f"the report could not be written ({type(e).__name__}: {e}); run `nas report {ctx.run_dir}`",
            TrackingWarning,
            stacklevel=2,
        )
        return None
    ctx.say(f"report: {result.html} ({result.seconds:.1f}s)")
    return result


def tracker_names(trackers: Trackers) -> list[str]:
    return [type(t).__name__ for t in trackers]


def configured_tracker_names(names: Sequence[str]) -> list[str]:
    """The class names :func:`nas.run.tracking.make_trackers` builds for ``names`` (without building them)."""
    return [
        "JsonlTracker",
        *(cls.__name__ for cls in tracker_classes(names).values() if cls is not JsonlTracker),
    ]


__all__ = [
    "FIGURES",
    "ReportResult",
    "RunRecord",
    "build_figures",
    "configured_tracker_names",
    "load_run",
    "pareto_table",
    "report_after_run",
    "send_to_trackers",
    "track_report",
    "write_report",
]
