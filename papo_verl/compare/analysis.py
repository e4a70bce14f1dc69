"""Loading runs (labels, seeds), the common horizon, mean ± std across seeds, config differences,
and the Markdown summary."""

from __future__ import annotations

import difflib
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import pandas as pd

from papo_verl.compare.configs import (
    SEED_KEYS,
    algorithm_label,
    config_differences,
    is_algorithm_key,
    label_from_experiment,
    label_from_regex,
    normalized,
    run_seed,
    seed_from_experiment,
)
from papo_verl.compare.logs import CompareError, CompareWarning, Run, RunSource, discover, read_run

__all__ = ["CONTRASTS", "Comparison", "STATISTICS", "SummaryRow", "area_under_curve", "compare", "contrast_name",
           "load_runs", "mean_std", "summary_markdown", "t_interval", "welch_difference"]

LABEL_MODES = ("config", "experiment")

TRAIN_SCORE_METRICS = ("critic/score/mean", "critic/rewards/mean")
VAL_MEAN_METRIC = re.compile(r"^val-core/(?P<source>.+)/(?P<var>[^/]+)/mean@(?P<n>\d+)$")
TABLE_METRICS = ("actor/entropy", "response_length/mean", "actor/pg_clipfrac", "papo/tilt", "papo/expand_weight",
                 "papo/contract_weight", "papo/token_share_expand", "papo/entropy_slope_snr",
                 # the same-batch validation: each split's branch responses, and how well P_t predicts ΔH_t
                 "papo/val/branch_dH_expand", "papo/val/branch_dH_contract",
                 "papo/val/sign_split_dH_neg_adv", "papo/val/sign_split_dH_pos_adv",
                 "papo/val/sign_agreement", "papo/val/sign_agreement_sampled_only", "papo/val/token_corr_pearson")
# Paired contrasts tabulated whenever a run logged both metrics: within each run, A − B at the steps both were
# logged (two measurements of the same batch), then the statistics over runs of those differences — a paired
# comparison, which the two metrics' separate rows are not.
CONTRASTS = (
    # what the correction term C_t adds to the per-token sign agreement (exact P_t vs the sampled term only;
    # identically 0 in a correction: none run, whose P_t is the sampled term)
    ("papo/val/sign_agreement", "papo/val/sign_agreement_sampled_only"),
    # how far the polarity split separates its branches' entropy responses (ρ > 0 minus ρ < 0) ...
    ("papo/val/branch_dH_expand", "papo/val/branch_dH_contract"),
    # ... and the advantage-sign split its own (A < 0, its 'expanding' branch, minus A > 0)
    ("papo/val/sign_split_dH_neg_adv", "papo/val/sign_split_dH_pos_adv"),
)
CONTRAST_SEPARATOR = " − "  # U+2212: metric names contain "-"
_HIGHER_IS_BETTER = re.compile(r"(score|reward|acc)", re.IGNORECASE)
HELD_OUT_PREFIXES = ("eval/",)  # papo_verl's held-out evaluation (papo_verl.demo.heldout)
# what describes an evaluation rather than measures the policy (a standard error, the sample sizes): its final
# value only, not compared between algorithms
_EVALUATION_SIZE = re.compile(r"(_se$|^eval/n_)")
STATISTICS = ("final", "best", "auc", "initial")


def _warn(message: str, sink: Optional[list] = None) -> None:
    if sink is not None:
        sink.append(message)
    warnings.warn(message, CompareWarning, stacklevel=3)


# ---- loading ---------------------------------------------------------------------------------------

def load_runs(paths: Union[str, Path, Iterable[Union[str, Path]]], *, label_from: str = "config",
              label_regex: Optional[str] = None, skip_invalid: bool = False) -> list[Run]:
    """Find, read, label and seed every run under ``paths`` (files or directories).

    ``label_from``: ``"config"`` (algorithm from the resolved config) or ``"experiment"`` (experiment
    name without its seed part); ``label_regex`` overrides both (applied to the experiment name).
    ``skip_invalid`` turns a broken run (no metrics log, unreadable file) into a warning. Raises
    :class:`CompareError` for a missing path, a path without runs, or (without ``skip_invalid``) an
    unusable run. Warnings (:class:`CompareWarning`) are also kept in each run's ``notes``.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise CompareError("no paths given: pass run directories or metrics logs")
    if label_from not in LABEL_MODES:
        raise CompareError(f"label_from must be one of {', '.join(LABEL_MODES)} (or use a label regex), got {label_from!r}")
    pattern = None
    if label_regex is not None:
        try:
            pattern = re.compile(label_regex)
        except re.error as err:
            raise CompareError(f"invalid label regex {label_regex!r}: {err}") from err

    sources: dict[tuple, RunSource] = {}  # a run found twice (two paths naming it) counts once
    for path in paths:
        for source in discover(path):
            sources.setdefault(source.key, source)
    runs = []
    for source in sources.values():
        try:
            runs.append(read_run(source))
        except CompareError as err:
            if not skip_invalid:
                raise
            _warn(f"skipped a run: {err}")
    if not runs:
        raise CompareError(f"no usable runs under {', '.join(map(str, paths))}")
    runs = _drop_duplicate_backends(runs)
    counts, seen_seeds = Counter(run.name for run in runs), {}
    for run in runs:
        run.display = run.name if counts[run.name] == 1 else f"{run.name} [{run.log_paths[0].parent}]"
        for note in run.notes:
            _warn(f"run {run.name}: {note}")
        _assign_label(run, label_from, pattern)
        run.seed, run.seed_source = run_seed(run.config, run.name)
        named = seed_from_experiment(run.name)
        if run.seed_source in SEED_KEYS and named is not None and named != run.seed:
            _note(run, f"seed {run.seed} from {run.seed_source} differs from seed{named} in its experiment name; "
                       f"using {run.seed}")
        if run.seed is not None:
            seen_seeds.setdefault((run.label, run.seed), []).append(run.display)
    for (label, seed), names in seen_seeds.items():
        if len(names) > 1:
            _warn(f"runs {', '.join(names)} of {label} have the same seed {seed}; each still counts as one sample")
    return runs


def _note(run: Run, message: str) -> None:
    run.notes.append(message)
    _warn(f"run {run.name}: {message}")


def _assign_label(run: Run, label_from: str, pattern) -> None:
    if pattern is not None:
        label = label_from_regex(run.name, pattern)
        if label is None:
            raise CompareError(f"run {run.name}: its experiment name does not match the label regex {pattern.pattern!r}")
        run.label, run.label_source = label, "regex on the experiment name"
        return
    if label_from == "config":
        if run.config:
            label = algorithm_label(run.config)
            if label is not None:
                run.label, run.label_source = label, "resolved config"
                return
            _note(run, "its config has no algorithm.adv_estimator; algorithm label taken from the experiment name")
        else:
            _note(run, "no resolved config (<experiment>.config.yaml beside the log); algorithm label taken from the "
                       "experiment name")
    run.label, run.label_source = label_from_experiment(run.name), "experiment name"


def _drop_duplicate_backends(runs: list[Run]) -> list[Run]:
    """One run logged by several backends (file + tensorboard) counts once: the file log."""
    best: dict[tuple, Run] = {}
    for run in runs:  # the first file log, else the first tensorboard log
        kept = best.get((run.project, run.name))
        if kept is None or (run.source == "file" and kept.source != "file"):
            best[(run.project, run.name)] = run
    out = []
    for run in runs:
        kept = best[(run.project, run.name)]
        if kept.source == run.source:
            out.append(run)
        else:
            _warn(f"run {run.name} ({run.project}) was found as a {kept.source} log and as a {run.source} log; "
                  f"using the {kept.source} log ({kept.log_paths[0]})")
    return out


# ---- statistics ------------------------------------------------------------------------------------

def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; NaN for one value) and count of the finite values."""
    array = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if array.size == 0:
        return math.nan, math.nan, 0
    std = float(np.std(array, ddof=1)) if array.size > 1 else math.nan
    return float(np.mean(array)), std, int(array.size)


def format_mean_std(mean: float, std: float, n: int) -> str:
    if n == 0 or not math.isfinite(mean):
        return "—"
    if n == 1 or not math.isfinite(std):
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {std:.2g}"


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, int, float, float]:
    """Mean, sample std (ddof=1), n and the Student-t interval of the mean over the finite ``values``
    (NaN with fewer than two values: no spread, no interval)."""
    from scipy import stats

    mean, std, n = mean_std(values)
    if n < 2 or not math.isfinite(std):
        return mean, std, n, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, n, mean - half, mean + half


def welch_difference(values: Sequence[float], baseline: Sequence[float],
                     level: float = 0.95) -> tuple[float, float, float, float]:
    """``mean(values) − mean(baseline)``, its Welch interval and the two-sided Welch t-test p-value
    (NaN where either side has fewer than two finite values, or neither varies)."""
    from scipy import stats

    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    b = np.asarray([v for v in baseline if v is not None and math.isfinite(v)], dtype=float)
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan, math.nan, math.nan
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return diff, math.nan, math.nan, math.nan
    result = stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(confidence_level=level)
    return diff, float(interval.low), float(interval.high), float(result.pvalue)


def contrast_name(minuend: str, subtrahend: str) -> str:
    """The metric name of a paired contrast: ``"A − B"`` (U+2212 MINUS SIGN between spaces)."""
    return f"{minuend}{CONTRAST_SEPARATOR}{subtrahend}"


def area_under_curve(series: pd.Series) -> float:
    """Mean level of a metric over training: the trapezoidal area under its curve divided by the span of steps."""
    series = series.dropna()
    if len(series) < 2:
        return float(series.iloc[0]) if len(series) == 1 else math.nan
    steps = series.index.to_numpy(dtype=float)
    return float(np.trapezoid(series.to_numpy(dtype=float), steps) / (steps[-1] - steps[0]))


@dataclass
class SummaryRow:
    """One statistic of one metric for one algorithm, over its runs (seeds).

    ``statistic``: ``final`` (each run's mean of its last ``final_window`` values), ``best`` (each run's
    best value so far), ``auc`` (each run's area under the curve per step: its mean level over training) or
    ``initial`` (held-out metrics: each run's evaluation before its first training step, verl's
    ``trainer.val_before_train``; runs without one are left out). Every algorithm evaluates the same starting
    policy there, so its differences show how large evaluation noise alone makes them: a placebo.
    ``values`` are the per-run values the mean, std and the t interval are computed from; ``diff`` and
    the rest compare them with the baseline algorithm's values (Welch), when a baseline is set.
    """

    metric: str
    label: str
    statistic: str
    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    steps: tuple[int, ...]
    values: tuple[float, ...]
    diff: Optional[float] = None
    diff_low: Optional[float] = None
    diff_high: Optional[float] = None
    p_value: Optional[float] = None


@dataclass
class Comparison:
    """Runs grouped by algorithm, restricted to the common horizon, with what was warned about."""

    runs: list[Run]
    groups: dict[str, list[Run]]
    horizon: int
    extra_metrics: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)
    # "final" = mean of each run's last ``final_window`` logged values up to the horizon (1: the last value).
    final_window: int = 1
    # algorithm the others are compared with (difference, Welch interval and p-value); None: no comparison
    baseline: Optional[str] = None
    # paired contrasts (``contrast_name(A, B)``) added to the runs' metrics, in table order
    contrasts: tuple[str, ...] = ()

    @property
    def labels(self) -> list[str]:
        return list(self.groups)

    @property
    def metric_names(self) -> set[str]:
        """Every metric some run logged."""
        return set().union(*(r.metric_names for r in self.runs))

    def has_metric(self, metric: str) -> bool:
        return any(not r.series(metric).loc[:self.horizon].empty for r in self.runs)

    def aggregate(self, metric: str, label: str) -> Optional[pd.DataFrame]:
        """Per step ≤ horizon: mean, sample std (ddof=1) and number of runs of ``label`` that logged ``metric``."""
        columns = {r.display: r.series(metric).loc[:self.horizon] for r in self.groups.get(label, [])}
        columns = {k: s for k, s in columns.items() if not s.empty}
        if not columns:
            return None
        frame = pd.DataFrame(columns).sort_index()
        out = pd.DataFrame({"mean": frame.mean(axis=1), "std": frame.std(axis=1, ddof=1), "n": frame.count(axis=1)})
        out.index.name = "step"
        return out

    def aggregate_table(self) -> pd.DataFrame:
        """Long table (algorithm, metric, step, mean, std, n) of every metric."""
        parts = {(label, metric): agg for metric in sorted(self.metric_names) for label in self.labels
                 if (agg := self.aggregate(metric, label)) is not None}
        if not parts:
            return pd.DataFrame(columns=["algorithm", "metric", "step", "mean", "std", "n"])
        return pd.concat(parts, names=["algorithm", "metric"]).reset_index()

    def table_metrics(self) -> list[str]:
        present = self.metric_names
        out = [m for m in TRAIN_SCORE_METRICS if m in present][:1]
        out += self.validation_metrics()
        out += sorted(m for m in present if m.startswith(HELD_OUT_PREFIXES) and m not in self.contrasts)
        out += [m for m in TABLE_METRICS if m in present]
        out += [m for m in self.extra_metrics if m in present and m not in out]
        out += [m for m in self.contrasts if m in present and m not in out]
        return out

    def validation_metrics(self) -> list[str]:
        return sorted(m for m in self.metric_names if VAL_MEAN_METRIC.match(m) and m not in self.contrasts)

    def _components(self, metric: str) -> list[str]:
        return metric.split(CONTRAST_SEPARATOR, 1) if metric in self.contrasts else [metric]

    def held_out(self, metric: str) -> bool:
        """Held-out metrics (verl's validation, papo_verl's ``eval/*``) also get best, AUC and initial rows; a
        contrast is held out when either of its metrics is (it exists only where both were logged)."""
        return any(bool(VAL_MEAN_METRIC.match(m)) or m.startswith(HELD_OUT_PREFIXES) for m in self._components(metric))

    def describes_evaluation(self, metric: str) -> bool:
        """A held-out metric that describes the evaluation (``*_se``, ``eval/n_*``; a contrast with one): a final
        row, no comparison."""
        return self.held_out(metric) and any(_EVALUATION_SIZE.search(m) for m in self._components(metric))

    def _per_run(self, metric: str, label: str) -> dict[str, tuple[list[float], list[int]]]:
        out: dict[str, tuple[list[float], list[int]]] = {statistic: ([], []) for statistic in STATISTICS}
        held_out = self.held_out(metric)
        contrast = metric in self.contrasts  # a difference of two metrics: neither better when higher nor a best
        higher_better = not contrast and (bool(_HIGHER_IS_BETTER.search(metric))
                                          or metric.startswith(HELD_OUT_PREFIXES))
        describes_evaluation = self.describes_evaluation(metric)
        for run in self.groups[label]:
            series = run.series(metric).loc[:self.horizon]
            if series.empty:
                continue
            # held-out evaluations are large samples of their own: their final value is the last one
            tail = series.iloc[-1:] if held_out else series.iloc[-self.final_window:]
            out["final"][0].append(float(tail.mean()))
            out["final"][1].extend(int(step) for step in tail.index)
            if describes_evaluation:
                continue
            if (held_out or higher_better) and not contrast:
                out["best"][0].append(float(series.max() if higher_better else series.min()))
            if held_out:
                out["auc"][0].append(area_under_curve(series))
                if series.index[0] < min(run.training_steps, default=series.index[0] + 1):  # before training
                    out["initial"][0].append(float(series.iloc[0]))
                    out["initial"][1].append(int(series.index[0]))
        return out

    def summary_rows(self) -> list[SummaryRow]:
        """Per metric, statistic and algorithm: mean ± std, t interval and, with a baseline, the Welch difference."""
        rows = []
        for metric in self.table_metrics():
            per_label = {label: self._per_run(metric, label) for label in self.labels}
            for statistic in STATISTICS:
                base = per_label.get(self.baseline, {}).get(statistic, ([], []))[0] if self.baseline else []
                for label in self.labels:
                    values, steps = per_label[label][statistic]
                    if not values:
                        continue
                    mean, std, n, low, high = t_interval(values)
                    row = SummaryRow(metric, label, statistic, n, mean, std, low, high, tuple(sorted(set(steps))),
                                     tuple(values))
                    if self.baseline and label != self.baseline and base and not self.describes_evaluation(metric):
                        row.diff, row.diff_low, row.diff_high, row.p_value = welch_difference(values, base)
                    rows.append(row)
        return rows

    def stats_table(self) -> pd.DataFrame:
        """:meth:`summary_rows` as a table (one row per metric, statistic and algorithm)."""
        columns = ["metric", "statistic", "algorithm", "n", "mean", "std", "ci_low", "ci_high", "diff", "diff_low",
                   "diff_high", "p_value", "values"]
        records = [[r.metric, r.statistic, r.label, r.n, r.mean, r.std, r.ci_low, r.ci_high, r.diff, r.diff_low,
                    r.diff_high, r.p_value, " ".join(f"{v:.6g}" for v in r.values)] for r in self.summary_rows()]
        return pd.DataFrame(records, columns=columns)

    # ---- configs -----------------------------------------------------------------------------

    def config_table(self) -> tuple[list[str], dict[str, dict[str, str]]]:
        """Keys whose values differ between algorithms: ``{key: {label: "v1 / v2"}}`` (sorted keys)."""
        per_label = {label: flats for label, runs in self.groups.items()
                     if (flats := [normalized(r.config) for r in runs if r.config])}
        if len(per_label) < 2:
            return [], {}
        keys = sorted(set().union(*(set(f) for flats in per_label.values() for f in flats)))
        table = {}
        for key in keys:
            values = {label: sorted({_short(f.get(key, "(absent)")) for f in flats}) for label, flats in per_label.items()}
            if len({tuple(v) for v in values.values()}) > 1:
                table[key] = {label: " / ".join(v) for label, v in values.items()}
        return sorted(table, key=lambda k: (not is_algorithm_key(k), k)), table

    def markdown(self) -> str:
        return _markdown(self)


def _short(value, limit: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- building a comparison -------------------------------------------------------------------------

def compare(runs: Sequence[Run], *, max_step: Optional[int] = None, extra_metrics: Sequence[str] = (),
            final_window: int = 1, baseline: Optional[str] = None,
            contrasts: Sequence[tuple[str, str]] = ()) -> Comparison:
    """Group ``runs`` by algorithm and fix the common horizon; warn about what differs.

    ``final_window``: the table's "final" value of a run is the mean of its last ``final_window`` logged
    values up to the horizon (1 = the last value; 5–10 averages out the step-to-step noise of small
    batches). Raises :class:`CompareError` when there are no runs, when the runs share no metric, or when
    their step ranges do not overlap. Horizons that differ are warned about and every run is compared on
    steps ≤ the shortest run's last step (and ≤ ``max_step``).

    ``contrasts``: pairs ``(A, B)`` of metrics tabulated as their paired difference ``"A − B"``
    (:func:`contrast_name`): within each run, A minus B at the steps both were logged, then the statistics
    over runs (a final row; held-out metrics also auc and initial; no best). Every pair of :data:`CONTRASTS`
    is added too where a run logged both. A contrast's column is added to each run's ``metrics`` (and dropped
    again by the next ``compare`` of the same runs), except in a run where A equals B at every step: the same
    quantity under two names there, left out with a warning rather than tabulated as a measured 0.
    """
    runs = list(runs)
    if not runs:
        raise CompareError("no runs to compare")
    for run in runs:  # contrasts of an earlier comparison of the same runs are not logged metrics
        stale = [c for c in run.metrics.columns if CONTRAST_SEPARATOR in c]
        if stale:
            run.metrics = run.metrics.drop(columns=stale)
    if isinstance(final_window, bool) or not isinstance(final_window, int) or final_window < 1:
        raise CompareError(f"final_window must be an integer >= 1 (number of last steps averaged), got {final_window!r}")
    notes: list[str] = []
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.label is None:
            run.label, run.label_source = label_from_experiment(run.name), "experiment name"
        groups.setdefault(run.label, []).append(run)

    if len(runs) > 1:
        if not set.intersection(*(set(r.metric_names) for r in runs)):
            listing = "; ".join(f"{r.display}: {', '.join(r.metric_names[:4])}{' ...' if len(r.metric_names) > 4 else ''}"
                                for r in runs)
            raise CompareError(f"the runs have no metric in common ({listing})")
        first = max(min(r.training_steps) for r in runs)
        last = min(r.last_step for r in runs)
        if first > last:
            listing = ", ".join(f"{r.display}: steps {min(r.training_steps)}..{r.last_step}" for r in runs)
            raise CompareError(f"the runs have no step in common ({listing})")

    horizon = min(r.last_step for r in runs)
    ends = {label: sorted({r.last_step for r in members}) for label, members in groups.items()}
    if len({v[0] for v in ends.values()}) > 1:
        listing = ", ".join(f"{label} ends at step {ends[label][0]}" if len(ends[label]) == 1 else
                            f"{label} ends at steps {ends[label][0]}..{ends[label][-1]}" for label in groups)
        _warn(f"horizons differ between algorithms ({listing}); comparing every algorithm on the common "
              f"horizon, steps ≤ {horizon}", notes)
    for label, members in groups.items():
        if len(ends[label]) > 1:
            listing = ", ".join(f"{r.display}: {r.last_step}" for r in members)
            _warn(f"runs of {label} end at different steps ({listing}); comparing on steps ≤ {horizon}", notes)
    if max_step is not None and max_step < horizon:
        horizon = max_step
    elif max_step is not None and max_step > horizon:
        _warn(f"max step {max_step} is beyond the common horizon; comparing on steps ≤ {horizon}", notes)

    present = set().union(*(r.metric_names for r in runs))
    contrast_names = _add_contrasts(runs, contrasts, present, notes)
    present |= set(contrast_names)
    for metric in extra_metrics:
        if metric not in present:
            close = difflib.get_close_matches(metric, sorted(present), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            _warn(f"metric {metric} was asked for but no run logged it: it is not plotted or tabulated{hint}", notes)
    if baseline is not None and baseline not in groups:
        raise CompareError(f"baseline {baseline!r} is not one of the algorithms compared: {', '.join(groups)}")
    comparison = Comparison(runs, groups, horizon, tuple(extra_metrics), notes, final_window, baseline,
                            contrast_names)
    _check_configs(comparison, notes)
    return comparison


def _add_contrasts(runs: list[Run], asked: Sequence[tuple[str, str]], present: set[str],
                   notes: list[str]) -> tuple[str, ...]:
    """Add each contrast's column (A − B within the run) to the runs that logged both; return the names added."""
    pairs = []
    for pair in asked:
        if len(pair) != 2 or not all(isinstance(m, str) and m for m in pair):
            raise CompareError(f"a contrast is two metric names (A, B) tabulated as A − B, got {pair!r}")
        minuend, subtrahend = pair
        if minuend == subtrahend:
            raise CompareError(f"contrast {minuend} − {subtrahend} subtracts a metric from itself: name two "
                               "different metrics")
        missing = [m for m in pair if m not in present]
        if missing:
            close = {m: difflib.get_close_matches(m, sorted(present), n=3) for m in missing}
            hint = "".join(f"; for {m} did you mean {', '.join(c)}?" for m, c in close.items() if c)
            _warn(f"contrast {contrast_name(*pair)} was asked for but no run logged {' or '.join(missing)}: it is "
                  f"not tabulated{hint}", notes)
            continue
        if tuple(pair) not in pairs:
            pairs.append(tuple(pair))
    pairs += [pair for pair in CONTRASTS if pair not in pairs and set(pair) <= present]
    added = []
    for minuend, subtrahend in pairs:
        name = contrast_name(minuend, subtrahend)
        identical = []
        for run in runs:
            if minuend in run.metrics.columns and subtrahend in run.metrics.columns:
                difference = run.metrics[minuend] - run.metrics[subtrahend]  # NaN where either is missing
                if difference.notna().any() and (difference.dropna() == 0).all():
                    identical.append(run.display)  # one quantity under two names there: not a measured 0
                    continue
                run.metrics[name] = difference
        if identical:
            _warn(f"contrast {name}: left out for {', '.join(identical)}, where the two metrics are equal at every "
                  "step (the same quantity there, e.g. sign agreement under correction: none), not a measured 0",
                  notes)
        if any(name in run.metrics.columns and run.metrics[name].notna().any() for run in runs):
            added.append(name)
        else:
            _warn(f"contrast {name}: no run logged {minuend} and {subtrahend} at the same step; it is not "
                  "tabulated", notes)
    return tuple(added)


def _check_configs(comparison: Comparison, notes: list[str]) -> None:
    without = [r.display for r in comparison.runs if not r.config]
    if without and len(without) < len(comparison.runs):
        _warn(f"no resolved config for {', '.join(without)}: their config keys are not compared", notes)
    for label, members in comparison.groups.items():
        configs = [r.config for r in members if r.config]
        differing = sorted(config_differences(configs))
        if differing:
            shown = []
            for key in differing[:10]:
                values = sorted({_short(normalized(c).get(key, "(absent)"), 30) for c in configs})
                shown.append(f"{key} ({' / '.join(values)})")
            more = f" and {len(differing) - 10} more" if len(differing) > 10 else ""
            _warn(f"runs of {label} differ in non-seed config keys: {', '.join(shown)}{more}", notes)
    keys, _ = comparison.config_table()
    base = [k for k in keys if not is_algorithm_key(k)]
    if base:
        more = f" and {len(base) - 15} more" if len(base) > 15 else ""
        _warn(f"base configs differ between algorithms (not algorithm keys): {', '.join(base[:15])}{more}; "
              "the algorithms were not run on one base config", notes)


# ---- Markdown --------------------------------------------------------------------------------------

def _steps_text(steps: tuple[int, ...]) -> str:
    return str(steps[0]) if len(steps) == 1 else f"{steps[0]}..{steps[-1]}"


def _markdown(c: Comparison) -> str:
    lines = ["# papo-compare", ""]
    final = ("final = the last logged value" if c.final_window == 1 else
             f"final = each run's mean over its last {c.final_window} logged steps (held-out metrics: the last "
             "evaluation)")
    lines.append(f"Steps ≤ **{c.horizon}** (common horizon). Values: mean ± sample std (ddof=1) over the runs "
                 f"(seeds) of each algorithm, and the Student-t 95 % interval of the mean; n = number of runs; "
                 f"{final} (at step(s)); best = best so far up to the horizon (reward/score/accuracy and held-out "
                 "metrics); auc = area under the curve per step, the mean level over training (held-out metrics); "
                 "initial = the evaluation before the first training step (held-out metrics; verl's "
                 "val_before_train): every algorithm evaluates the same starting policy there, so its differences "
                 "show how large evaluation noise alone makes them (a placebo). A held-out metric's standard error "
                 "(`_se`) and sample sizes (`eval/n_*`) describe the evaluation: their final value only."
                 + (f" Δ: difference of means to **{c.baseline}**, with Welch's 95 % interval and two-sided p-value "
                    "(scipy.stats.ttest_ind, equal_var=False); no correction for multiple comparisons."
                    if c.baseline else ""))
    lines += ["", "## Runs", "", "| algorithm | seed | run | log | steps |", "|---|---|---|---|---|"]
    for label, members in c.groups.items():
        for r in sorted(members, key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0, r.display)):
            seed = "—" if r.seed is None else f"{r.seed} ({r.seed_source})"
            steps = r.steps
            lines.append(f"| {label} | {seed} | {r.display} | {r.source}: {r.log_paths[-1].name}"
                         f"{f' (+{len(r.log_paths) - 1} earlier segment(s))' if len(r.log_paths) > 1 else ''} "
                         f"| {len(steps)} ({steps[0]}..{steps[-1]}) |")
    lines += ["", f"## Results (steps ≤ {c.horizon})", ""]
    vs = f" | Δ vs {c.baseline} [95 % CI] | p (Welch)" if c.baseline else ""
    lines += [f"| metric | statistic | algorithm | n | mean ± sd | 95 % CI | at step{vs} |",
              "|---|---|---|---|---|---|---|" + ("---|---|" if c.baseline else "")]
    for row in c.summary_rows():
        ci = "—" if not math.isfinite(row.ci_low) else f"[{row.ci_low:.4g}, {row.ci_high:.4g}]"
        at = (_steps_text(row.steps) if row.statistic in ("final", "initial")
              else ("all" if row.statistic == "auc" else "max"))
        line = (f"| `{row.metric}` | {row.statistic} | {row.label} | {row.n} | "
                f"{format_mean_std(row.mean, row.std, row.n)} | {ci} | {at} |")
        if c.baseline:
            if row.diff is None:
                line += " — | — |"
            else:  # welch_difference: diff_low and p_value are floats, NaN without an interval
                interval = f" [{row.diff_low:.3g}, {row.diff_high:.3g}]" if math.isfinite(row.diff_low) else ""
                p = f"{row.p_value:.3g}" if math.isfinite(row.p_value) else "—"
                line += f" {row.diff:+.4g}{interval} | {p} |"
        lines.append(line)
    keys, table = c.config_table()
    lines += ["", "## Config keys that differ between algorithms", ""]
    labels = [label for label in c.labels if any(r.config for r in c.groups[label])]
    if not keys:
        lines.append("None." if len(labels) > 1 else "Fewer than two algorithms have a resolved config.")
    else:
        lines += ["| key | kind | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
        for key in keys[:60]:
            kind = "algorithm" if is_algorithm_key(key) else "**base** ⚠"
            lines.append(f"| `{key}` | {kind} | " + " | ".join(table[key].get(label, "") for label in labels) + " |")
        if len(keys) > 60:
            lines.append(f"\n… and {len(keys) - 60} more keys.")
    notes = list(c.warnings) + [f"run {r.display}: {n}" for r in c.runs for n in r.notes]
    if notes:
        lines += ["", "## Warnings", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def summary_markdown(runs: Union[Sequence[Run], Comparison], **compare_kwargs) -> str:
    """The Markdown summary (runs, results table, differing config keys, warnings) of ``runs``."""
    comparison = runs if isinstance(runs, Comparison) else compare(runs, **compare_kwargs)
    return comparison.markdown()
