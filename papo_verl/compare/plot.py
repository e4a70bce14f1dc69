"""Panels of mean ± std across seeds over steps (matplotlib's object API with the Agg canvas; no pyplot,
so importing this never changes the caller's backend)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from papo_verl.compare.analysis import TRAIN_SCORE_METRICS, VAL_MEAN_METRIC, Comparison, compare
from papo_verl.compare.logs import CompareError, Run

__all__ = ["PANELS", "Panel", "PlotResult", "panels_for", "plot_runs"]


@dataclass(frozen=True)
class Panel:
    """One subplot: each of ``series`` drawn per algorithm, in its own line style."""

    key: str                                   # file name of the single-panel image
    title: str
    ylabel: str
    series: tuple[tuple[str, str], ...]        # (metric, legend suffix)
    hline: Optional[float] = None
    # (center, sd): a lighter band center ± 2·sd (means over runs), e.g. a filter's own uncertainty
    band: Optional[tuple[str, str]] = None

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(m for m, _ in self.series)


PANELS: tuple[Panel, ...] = (
    Panel("entropy", "Policy entropy", "actor/entropy (nats)", (("actor/entropy", ""),)),
    Panel("response_length", "Response length", "response_length/mean (tokens)", (("response_length/mean", ""),)),
    Panel("pg_clipfrac", "PPO clip fraction", "actor/pg_clipfrac", (("actor/pg_clipfrac", ""),)),
    # one panel per k: on a shared axis pass@1 (≈ 0.2) and pass@16 (≈ 0.6) flatten each other's differences
    Panel("eval_pass16", "Held-out pass@16", "eval/pass@16", (("eval/pass@16", ""),)),
    Panel("eval_pass4", "Held-out pass@4", "eval/pass@4", (("eval/pass@4", ""),)),
    Panel("eval_pass1", "Held-out pass@1", "eval/pass@1", (("eval/pass@1", ""),)),
    Panel("eval_distinct", "Held-out distinct correct answers per problem", "eval/distinct_correct",
          (("eval/distinct_correct", ""),)),
    Panel("papo_tilt", "PAPO tilt g", "papo/tilt (>0: towards expansion)", (("papo/tilt", ""),), hline=0.0),
    Panel("papo_weights", "PAPO branch weights", "weight",
          (("papo/expand_weight", "w₊ expand"), ("papo/contract_weight", "w₋ contract")), hline=1.0),
    Panel("papo_token_share", "Share of entropy-expanding tokens", "papo/token_share_expand",
          (("papo/token_share_expand", ""),)),
    Panel("papo_entropy_filter", "What the controller sees: H̄ and its filtered level ± 2 sd", "entropy (nats)",
          (("papo/entropy", "raw H̄"), ("papo/entropy_level", "filtered level")),
          band=("papo/entropy_level", "papo/entropy_level_sd")),
    Panel("papo_slope_snr", "Evidence for the entropy trend", "papo/entropy_slope_snr (z)",
          (("papo/entropy_slope_snr", ""),), hline=0.0),
    Panel("papo_branch_response", "Branch response −∇H̄·∇L (same batch)", "ΔH̄ per unit step (nats)",
          (("papo/val/branch_dH_expand", "ρ > 0"), ("papo/val/branch_dH_contract", "ρ < 0"),
           ("papo/val/sign_split_dH_neg_adv", "A < 0"), ("papo/val/sign_split_dH_pos_adv", "A > 0")), hline=0.0),
    Panel("papo_same_batch_dH", "Same-batch entropy change over a step", "ΔH̄ (nats)",
          (("papo/val/dH_measured", "measured"), ("papo/val/dH_first_order", "first order ∇H̄·Δθ")), hline=0.0),
    Panel("papo_sign_agreement", "Per-token sign agreement of ΔH_t", "share of tokens",
          (("papo/val/sign_agreement", "exact P_t"), ("papo/val/sign_agreement_sampled_only", "sampled term only")),
          hline=0.5),
)

_STYLES = ("-", "--", ":", "-.")


@dataclass
class PlotResult:
    """What was drawn: the files written and, per panel key, ``{algorithm: [metrics drawn]}``."""

    files: list[Path] = field(default_factory=list)
    panels: dict[str, dict[str, list[str]]] = field(default_factory=dict)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def panels_for(comparison: Comparison) -> list[Panel]:
    """The panels with data for at least one algorithm: train score, validation (one per data source
    and N), entropy, length, clip fraction, the PAPO panels, then ``extra_metrics``."""
    panels: list[Panel] = []
    score = next((m for m in TRAIN_SCORE_METRICS if comparison.has_metric(m)), None)
    if score:
        panels.append(Panel("train_score", "Train score", score, ((score, ""),)))
    for metric in comparison.validation_metrics():
        match = VAL_MEAN_METRIC.match(metric)
        panels.append(Panel(f"val_{_slug(match['source'])}_{_slug(match['var'])}_mean{match['n']}",
                            f"Validation {match['var']} mean@{match['n']}: {match['source']}", metric, ((metric, ""),)))
    panels += list(PANELS)
    known = {m for p in panels for m in p.metrics}
    for metric in comparison.extra_metrics:
        if metric not in known:
            panels.append(Panel(_slug(metric), metric, metric, ((metric, ""),)))
    return [p for p in panels if any(comparison.has_metric(m) for m in p.metrics)]


def _colors(labels: Sequence[str]) -> dict[str, str]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def _draw_panel(ax, panel: Panel, comparison: Comparison, colors: dict, drawn: dict[str, list[str]],
                legend: str = "full") -> None:
    """Draw ``panel`` on ``ax``. ``legend="full"``: every line (algorithm, n, series); ``"styles"``: only the
    series' line styles, for a grid whose figure legend names the algorithms' colours."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    handles = []
    for series_index, (metric, suffix) in enumerate(panel.series):
        for label in comparison.labels:
            agg = comparison.aggregate(metric, label)
            if agg is None:
                continue
            name = f"{label} (n={int(agg['n'].max())})" + (f" · {suffix}" if suffix else "")
            steps, mean, std = agg.index.to_numpy(), agg["mean"].to_numpy(), agg["std"].to_numpy()
            (line,) = ax.plot(steps, mean, linestyle=_STYLES[series_index % len(_STYLES)], color=colors[label],
                              marker="o" if len(steps) <= 25 else None, markersize=3, linewidth=1.5, label=name)
            band = (agg["std"].notna() & (agg["n"] >= 2)).to_numpy()
            if band.any():  # over the steps that ≥ 2 runs logged (joined across the others)
                ax.fill_between(steps[band], mean[band] - std[band], mean[band] + std[band], color=colors[label],
                                alpha=0.18, linewidth=0)
            handles.append(line)
            drawn.setdefault(label, []).append(metric)
    if panel.band is not None:
        center, sd = panel.band
        for label in comparison.labels:
            c, d = comparison.aggregate(center, label), comparison.aggregate(sd, label)
            if c is None or d is None:
                continue
            joined = c[["mean"]].join(d[["mean"]], rsuffix="_sd", how="inner").dropna()
            steps, mid, half = joined.index.to_numpy(), joined["mean"].to_numpy(), 2.0 * joined["mean_sd"].to_numpy()
            ax.fill_between(steps, mid - half, mid + half, color=colors[label], alpha=0.10, hatch="//", linewidth=0)
            drawn.setdefault(label, []).append(sd)
    if panel.hline is not None:
        ax.axhline(panel.hline, color="0.6", linewidth=0.8, linestyle=":")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(panel.title, fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel(panel.ylabel, fontsize=8)
    ax.grid(True, alpha=0.3)
    if legend == "full" and handles:
        ax.legend(handles=handles, fontsize=7, loc="best")
    elif legend == "styles" and len(panel.series) > 1 and handles:
        ax.legend(handles=[Line2D([], [], color="0.3", linestyle=_STYLES[i % len(_STYLES)], label=suffix)
                           for i, (_, suffix) in enumerate(panel.series)], fontsize=7, loc="best")


def _save(fig, path: Path, svg: bool, files: list[Path]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    files.append(path)
    if svg:
        fig.savefig(path.with_suffix(".svg"))
        files.append(path.with_suffix(".svg"))


def _grid_figure(comparison: Comparison, panels: Sequence[Panel], colors: dict, title: Optional[str],
                 drawn: dict[str, dict[str, list[str]]]):
    """Every panel in a grid of 3 columns; one legend names the algorithms' colours (in the first empty
    cell, else under the grid), each panel's own only its series' line styles."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(5.2 * ncols, 3.6 * nrows), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False)
    for ax, panel in zip(grid.flat, panels):
        drawn[panel.key] = {}
        _draw_panel(ax, panel, comparison, colors, drawn[panel.key], legend="styles")
    algorithms = [Line2D([], [], color=colors[label], linewidth=2.0, label=f"{label} (n={len(comparison.groups[label])})")
                  for label in comparison.labels]
    spare = list(grid.flat)[len(panels):]
    for ax in spare:
        ax.set_axis_off()
    if spare:
        spare[0].legend(handles=algorithms, loc="center", fontsize=9, title="algorithm (runs)")
    else:
        fig.legend(handles=algorithms, loc="outside lower center", ncols=min(len(algorithms), 4), fontsize=9)
    runs_per_label = ", ".join(f"{label}: {len(members)}" for label, members in comparison.groups.items())
    fig.suptitle(title or f"mean ± std over seeds, steps ≤ {comparison.horizon} (runs — {runs_per_label})", fontsize=11)
    return fig


def plot_runs(runs: Union[Sequence[Run], Comparison], out_png: Union[str, Path], svg: bool = False, *,
              panel_dir: Optional[Union[str, Path]] = None, title: Optional[str] = None, **compare_kwargs) -> PlotResult:
    """Draw every panel with data into one PNG grid (``out_png``; ``svg=True`` adds ``.svg``).

    Each algorithm is one colour (named once, in the grid's legend, with its number of runs): its mean
    over runs (seeds) per step, with a ± sample-std band where at least two runs logged the step; a
    panel's own legend names its series' line styles. Metrics an algorithm does not log (``papo/*`` for GRPO) are
    absent from its panels. ``panel_dir`` also writes one image per panel (``<panel key>.png``).
    """
    from matplotlib.figure import Figure

    comparison = runs if isinstance(runs, Comparison) else compare(runs, **compare_kwargs)
    panels = panels_for(comparison)
    result = PlotResult()
    if not panels:
        raise CompareError("nothing to plot: the runs log none of the plotted metrics "
                           "(critic/score/mean, val-core/*/mean@N, actor/entropy, response_length/mean, papo/*)")
    colors = _colors(comparison.labels)
    fig = _grid_figure(comparison, panels, colors, title, result.panels)
    _save(fig, Path(out_png), svg, result.files)
    if panel_dir is not None:
        for panel in panels:
            single = Figure(figsize=(6.0, 4.0), layout="constrained")
            _draw_panel(single.subplots(), panel, comparison, colors, {})
            _save(single, Path(panel_dir) / f"{panel.key}.png", svg, result.files)
    return result
