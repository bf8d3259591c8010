"""The report's figures as matplotlib :class:`~matplotlib.figure.Figure` objects.

Each function takes plain data already read from a run directory (trial rows as
:meth:`nas.controllers.Controller.history` returns them, epoch events, the
ranking report) and returns a figure that :mod:`nas.report.builder` saves; nothing here
reads files, so tests can inspect the figures themselves (labels, units,
legends). Accuracy is shown in percent and latency in milliseconds throughout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import (
    Figure,
)  # not pyplot: no global state, no window, no backend switch for the caller

from nas.pareto import anytime_curves

DPI = 110
FEASIBLE_COLOR = "tab:blue"
INFEASIBLE_COLOR = "tab:red"
FRONT_COLOR = "tab:orange"
EXPORT_COLOR = "gold"
BUDGET_COLOR = "tab:gray"

Row = Mapping[str, Any]


def _pct(x: float) -> float:
    return 100.0 * float(x)


def pareto_figure(
    rows: Sequence[Row],
    front: Sequence[Row],
    budget_ms: float | None,
    exported: Row | None = None,
    device: str = "cpu",
    n_devices: int = 1,
) -> Figure:
    """All finished trials (infeasible ones marked), the Pareto front highlighted, the budget line, the
    exported network."""
    fig = Figure(figsize=(7.0, 4.8), dpi=DPI)
    ax = fig.add_subplot()
    feas = [r for r in rows if r["feasible"]]
    infeas = [r for r in rows if not r["feasible"]]
    if feas:
        ax.scatter(
            [r["latency_ms"] for r in feas],
            [_pct(r["accuracy"]) for r in feas],
            s=22,
            color=FEASIBLE_COLOR,
            alpha=0.55,
            label=f"trial within budget ({len(feas)})",
        )
    if infeas:
        ax.scatter(
            [r["latency_ms"] for r in infeas],
            [_pct(r["accuracy"]) for r in infeas],
            s=28,
            marker="x",
            color=INFEASIBLE_COLOR,
            label=f"trial over budget ({len(infeas)})",
        )
    if front:
        xs = [r["latency_ms"] for r in front]
        ys = [_pct(r["accuracy"]) for r in front]
        if n_devices == 1:  # on one device the front is a staircase; with more its 2-D projection need not be
            ax.plot(xs, ys, drawstyle="steps-post", color=FRONT_COLOR, lw=1.5, zorder=2)
        ax.scatter(
            xs,
            ys,
            s=60,
            facecolors="none",
            edgecolors=FRONT_COLOR,
            linewidths=1.8,
            zorder=3,
            label=f"Pareto front ({len(front)})",
        )
    if budget_ms is not None:
        ax.axvline(budget_ms, color=BUDGET_COLOR, ls="--", lw=1.2, label=f"latency budget {budget_ms:g} ms")
    if exported is not None:
        ax.scatter(
            [exported["latency_ms"]],
            [_pct(exported["accuracy"])],
            s=220,
            marker="*",
            color=EXPORT_COLOR,
            edgecolors="black",
            linewidths=0.8,
            zorder=4,
            label=f"exported: trial {exported['trial']} ({exported['arch_id']})",
        )
    title = f"Search: {len(rows)} finished trials, accuracy vs. predicted latency"
    if n_devices > 1:
        title += f"\n(front over all {n_devices} devices' latencies; shown on {device})"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(f"predicted latency on {device} [ms]")
    ax.set_ylabel("validation accuracy, inherited weights [%]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def _metric_label(key: str) -> str:
    m = re.fullmatch(r"val_acc_(.+)", key)
    return f"{m.group(1)} subnet" if m else "network" if key == "val_acc" else key


_INIT_LABELS = {"inherited": "from inherited weights", "scratch": "from scratch"}


def training_figure(
    epochs: Sequence[Row],
    finetune: Mapping[str, Sequence[Row]] | None = None,
    finetune_start: Mapping[str, float] | None = None,
) -> Figure:
    """Per-epoch training loss and validation accuracy: the supernet's (largest/smallest subnets), then each
    fine-tuning's.

    ``epochs`` are ``epoch`` events (``train_loss`` and ``val_acc*`` keys);
    ``finetune`` maps an initialisation (``inherited``, ``scratch``) to its
    ``finetune/<init>/epoch`` events, and ``finetune_start`` to its validation
    accuracy before training (drawn at epoch 0). A row is drawn only for data present.
    """
    finetune = {k: v for k, v in (finetune or {}).items() if v}
    starts = dict(finetune_start or {})
    groups: list[tuple[str, dict[str, Sequence[Row]]]] = []
    if epochs:
        groups.append(("supernet", {"": epochs}))
    if finetune:
        groups.append(("fine-tuned network", dict(finetune)))
    if not groups:
        raise ValueError("no epoch events to plot")
    fig = Figure(figsize=(10.0, 3.9 * len(groups)), dpi=DPI)
    axes = fig.subplots(len(groups), 2, squeeze=False)
    for (what, series), (ax_loss, ax_acc) in zip(groups, axes):
        for name, evs in series.items():
            x = [int(e["step"]) for e in evs]
            if any("train_loss" in e for e in evs):
                label = _INIT_LABELS.get(name, name) if name else "training loss (mean over sampled subnets)"
                ax_loss.plot(
                    [xi for xi, e in zip(x, evs) if "train_loss" in e],
                    [e["train_loss"] for e in evs if "train_loss" in e],
                    marker="o",
                    ms=4,
                    label=label,
                )
            keys = sorted(
                {k for e in evs for k in e if k.startswith("val_acc") and isinstance(e[k], (int, float))}
            )
            for key in keys:
                pts = [(xi, _pct(e[key])) for xi, e in zip(x, evs) if isinstance(e.get(key), (int, float))]
                if name and key == "val_acc" and isinstance(starts.get(name), (int, float)):
                    pts.insert(
                        0, (0, _pct(starts[name]))
                    )  # before fine-tuning: the exported network's accuracy (inherited) or chance (scratch)
                label = _INIT_LABELS.get(name, name) if name else _metric_label(key)
                ax_acc.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, label=label)
        ax_loss.set_title(f"{what}: training loss per epoch", fontsize=10)
        ax_loss.set_xlabel("epoch [#]")
        ax_loss.set_ylabel("loss (cross-entropy) [nats]")
        ax_acc.set_title(f"{what}: validation accuracy per epoch", fontsize=10)
        ax_acc.set_xlabel("epoch [#]")
        ax_acc.set_ylabel("validation accuracy [%]")
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
            if ax.lines:
                ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def ranking_figure(report: Mapping[str, Any]) -> Figure:
    """Supernet vs. standalone accuracy of ``nas rank``'s architectures (``nas rank`` writes it as
    ``ranking.png``)."""
    rows = report["rows"]
    fig = Figure(figsize=(5.6, 4.6), dpi=DPI)
    ax = fig.add_subplot()
    x = [_pct(r["supernet_val_acc"]) for r in rows]
    y = [_pct(r["standalone_mean"]) for r in rows]
    spread = [_pct(max(r["standalone_val_acc"]) - min(r["standalone_val_acc"])) / 2 for r in rows]
    ax.errorbar(
        x,
        y,
        yerr=spread,
        fmt="o",
        ms=4,
        capsize=2,
        label=f"{len(rows)} architectures"
        + (" (bars: seed range)" if any(len(r["standalone_val_acc"]) > 1 for r in rows) else ""),
    )
    title = (
        f"{report['sampler']}{' + distill' if report.get('distill') else ''}: Kendall tau"
        f" {report['kendall_tau']:.2f}"
    )
    if "seed_to_seed_kendall_tau" in report:
        title += f" (seed-to-seed {report['seed_to_seed_kendall_tau']:.2f})"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("supernet (inherited weights) val accuracy [%]")
    ax.set_ylabel(f"standalone ({report['standalone_epochs']} epochs) val accuracy [%]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def anytime_figure(rows: Sequence[Row], budget_ms: float | None, controller: str = "") -> Figure:
    """The controller's any-time behaviour: best feasible accuracy so far, and hypervolume, vs. completed
    trials."""
    curves = anytime_curves(rows, budget_ms)
    ordered = sorted(rows, key=lambda r: r["trial"])
    n = list(range(1, len(ordered) + 1))
    fig = Figure(figsize=(10.0, 4.0), dpi=DPI)
    ax_best, ax_hv = fig.subplots(1, 2)
    feas = [(i, _pct(r["accuracy"])) for i, r in zip(n, ordered) if r["feasible"]]
    infeas = [(i, _pct(r["accuracy"])) for i, r in zip(n, ordered) if not r["feasible"]]
    if feas:
        ax_best.scatter(
            [p[0] for p in feas],
            [p[1] for p in feas],
            s=16,
            color=FEASIBLE_COLOR,
            alpha=0.45,
            label="trial within budget",
        )
    if infeas:
        ax_best.scatter(
            [p[0] for p in infeas],
            [p[1] for p in infeas],
            s=20,
            marker="x",
            color=INFEASIBLE_COLOR,
            alpha=0.7,
            label="trial over budget",
        )
    ax_best.plot(
        n,
        curves["best_feasible_accuracy_pct"],
        drawstyle="steps-post",
        marker=".",
        color="black",
        lw=1.6,
        label="best within budget so far",
    )
    ax_best.set_title(f"{controller + ': ' if controller else ''}best accuracy within budget", fontsize=10)
    ax_best.set_xlabel("completed trials [#]")
    ax_best.set_ylabel("validation accuracy [%]")
    acc_ref, lat_ref = curves["reference"]
    ax_hv.plot(
        n,
        curves["hypervolume"],
        drawstyle="steps-post",
        marker=".",
        color=FRONT_COLOR,
        lw=1.8,
        label=f"feasible front (reference {acc_ref:.1f} %, {lat_ref:.3g} ms)",
    )
    ax_hv.set_title("hypervolume of the accuracy-latency front", fontsize=10)
    ax_hv.set_xlabel("completed trials [#]")
    ax_hv.set_ylabel("hypervolume [% x ms]")
    for ax in (ax_best, ax_hv):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig
