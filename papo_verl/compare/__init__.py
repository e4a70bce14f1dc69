"""``papo-compare``: compare runs (PAPO vs GRPO vs DAPO …, several seeds) from their metric logs.

Command line (``python -m papo_verl.compare`` or the ``papo-compare`` console script)::

    papo-compare RUN_OR_DIR [RUN_OR_DIR ...] [-o OUT] [--svg] [--label-from config|experiment] [--label-regex REGEX]
                 [--max-step N] [--final-window K] [--baseline ALGORITHM] [--metric NAME ...]
                 [--contrast A B ...] [--skip-invalid] [--title T]

writes into ``OUT`` (default ``./papo-compare``):

* ``compare.png`` (``.svg`` with ``--svg``): a grid of panels (:data:`PANELS`, plus train score and one
  validation ``val-core/<source>/<var>/mean@N`` panel per source and N), each algorithm's mean over its
  runs per step with a ± sample-std band (ddof=1, where ≥ 2 runs logged the step). A panel appears when
  some algorithm logs its metric; an algorithm that does not (GRPO for ``papo/*``) is absent from it;
* ``panels/<panel>.png`` (and ``.svg``): the same panels one per file;
* ``summary.md`` (also printed): the runs (algorithm, seed and where it came from, log, steps), the
  final values per algorithm, best-so-far for reward/score/accuracy and held-out metrics, and for held-out
  metrics also the area under the curve and the evaluation before training (a placebo: every algorithm
  evaluates the same policy there), each as mean ± std over seeds, n and the t interval (with
  ``--baseline``, Welch's difference; a held-out standard error ``*_se`` or sample size ``eval/n_*`` gets its
  final value only); paired contrasts ``A − B`` (each run's difference of two metrics logged at the same
  steps, e.g. two measurements of the same batch: :data:`papo_verl.compare.analysis.CONTRASTS` where
  logged, and ``--contrast A B``) get a final row (held-out ones also auc and initial); the config keys that differ
  between algorithms (algorithm keys vs **base** keys) and every warning;
* ``aggregate.csv``: ``algorithm, metric, step, mean, std, n`` for every metric; ``stats.csv``: the
  summary's statistics per metric and algorithm (with ``--baseline``, Welch differences and p-values).

Exit status 0, or 2 with ``papo-compare: error: …`` on stderr; warnings go to stderr as
``papo-compare: warning: …``.

Inputs (a directory is searched recursively):

* verl's ``file`` logger: ``<project>/<experiment>.jsonl`` with the resolved config
  ``<experiment>.config.yaml`` beside it (written by ``papo_verl.main``). ``<experiment>-2.jsonl``, ``-3``
  … (a resumed or repeated run, see ``reserve_run_files``) are merged into one run, later segments
  winning (:func:`papo_verl.compare.logs.merge_segments`);
* tensorboard: a directory of ``events.out.tfevents.*`` files (verl's ``tensorboard`` logger); the
  config is read from ``*.config.yaml`` inside it or ``<dir>.config.yaml`` beside it when present;
* ``<experiment>.eval.jsonl`` beside a file-logger log: metrics computed after the run (the demo's
  held-out evaluation, :mod:`papo_verl.demo.heldout`), merged into it without replacing logged values.

wandb's offline logs are not read (no stable reader): log with verl's ``file`` logger as well. A run
logged by several backends counts once (the file log preferred). Labels and seeds: see
:mod:`papo_verl.compare.configs`.

Checks: a missing path, a path without runs, a run without a metrics log (a config alone, a log with
no step) and an unreadable file are errors (``--skip-invalid`` turns per-run problems into warnings);
runs without a common metric or with non-overlapping steps are errors; different horizons are warned
about and everything is compared on the common horizon (the shortest run's last step); runs of one
algorithm that differ in non-seed config keys, and algorithms whose base (non-algorithm) keys differ,
are warned about with the keys.

Python API (e.g. for a demo's single-run figure)::

    from papo_verl.compare import load_runs, plot_runs, summary_markdown
    runs = load_runs(["logs/papo_demo"])          # list[Run]: .name .label .seed .metrics (DataFrame by step)
    result = plot_runs(runs, "demo.png")          # PlotResult: .files, .panels {panel: {algorithm: [metrics]}}
    print(summary_markdown(runs))

* ``load_runs(paths, *, label_from="config", label_regex=None, skip_invalid=False) -> list[Run]``
* ``compare(runs, *, max_step=None, extra_metrics=(), final_window=1, baseline=None, contrasts=()) -> Comparison`` (``.groups``,
  ``.horizon``, ``.aggregate(metric, label)`` → DataFrame ``mean/std/n`` by step, ``.summary_rows()``,
  ``.stats_table()``, ``.aggregate_table()``, ``.markdown()``, ``.warnings``)
* ``plot_runs(runs_or_comparison, out_png, svg=False, *, panel_dir=None, title=None) -> PlotResult``
* ``summary_markdown(runs_or_comparison) -> str``
* ``CompareError`` (raised), ``CompareWarning`` (warned, also listed in the summary)
"""

from papo_verl.compare.analysis import Comparison, SummaryRow, compare, load_runs, mean_std, summary_markdown
from papo_verl.compare.logs import CompareError, CompareWarning, Run
from papo_verl.compare.plot import PANELS, Panel, PlotResult, plot_runs

__all__ = ["PANELS", "CompareError", "CompareWarning", "Comparison", "Panel", "PlotResult", "Run", "SummaryRow",
           "compare", "load_runs", "mean_std", "plot_runs", "summary_markdown"]
