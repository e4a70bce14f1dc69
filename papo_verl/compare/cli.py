"""``papo-compare`` / ``python -m papo_verl.compare``: the command line (see the package docstring)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

from papo_verl.compare.analysis import CONTRASTS, compare, contrast_name, load_runs
from papo_verl.compare.logs import CompareError, CompareWarning
from papo_verl.compare.plot import plot_runs

PROG = "papo-compare"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Compare PAPO / GRPO / DAPO / ... runs (several seeds each) from their metric logs: verl "
                    "file-logger <experiment>.jsonl (+ <experiment>.config.yaml, -2/-3 segments merged), "
                    "and tensorboard event directories. Writes mean ± std panels and a "
                    "Markdown summary; prints the summary.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="run logs or directories (searched recursively for runs)")
    parser.add_argument("-o", "--out", type=Path, default=Path("papo-compare"),
                        help="output directory (default: ./papo-compare): compare.png, panels/*.png, "
                             "summary.md, aggregate.csv, stats.csv")
    parser.add_argument("--svg", action="store_true", help="also write every figure as SVG")
    parser.add_argument("--label-from", choices=("config", "experiment"), default="config",
                        help="algorithm label from the resolved config (default) or from the experiment name "
                             "without its seed<N> part")
    parser.add_argument("--label-regex", metavar="REGEX",
                        help="algorithm label = this regex's 'label' group (else group 1, else the match) in the "
                             "experiment name; overrides --label-from")
    parser.add_argument("--max-step", type=int, metavar="N", help="compare on steps <= N (at most the common horizon)")
    parser.add_argument("--final-window", type=int, default=1, metavar="K",
                        help="the table's 'final' value of a run = mean of its last K logged steps (default 1: "
                             "the last value; 5-10 averages out the step-to-step noise of small batches)")
    parser.add_argument("--baseline", metavar="ALGORITHM",
                        help="compare every other algorithm with this one: difference of means, Welch 95 %% interval "
                             "and p-value per metric and statistic (e.g. --baseline grpo)")
    parser.add_argument("--metric", action="append", default=[], metavar="NAME",
                        help="also plot and tabulate this metric (repeatable)")
    parser.add_argument("--contrast", action="append", nargs=2, default=[], metavar=("A", "B"),
                        help="also tabulate A − B paired within each run (at the steps both were logged, e.g. two "
                             "measurements of the same batch), its statistics over the runs (repeatable). Built in, "
                             "where logged: " + ", ".join(contrast_name(*pair) for pair in CONTRASTS))
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip runs that cannot be read (no metrics log, unreadable file) with a warning "
                             "instead of stopping")
    parser.add_argument("--title", help="figure title")
    return parser


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, CompareWarning):
        print(f"{PROG}: warning: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), file=sys.stderr, end="")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    load_messages: list[str] = []

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, CompareWarning):
            load_messages.append(str(message))
        _print_warning(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", CompareWarning)
        warnings.showwarning = show
        try:
            runs = load_runs(args.paths, label_from=args.label_from, label_regex=args.label_regex,
                             skip_invalid=args.skip_invalid)
            warnings.showwarning = _print_warning
            comparison = compare(runs, max_step=args.max_step, extra_metrics=args.metric,
                                 final_window=args.final_window, baseline=args.baseline,
                                 contrasts=[tuple(pair) for pair in args.contrast])
            # warnings about the collection (skipped runs, duplicate logs) go into the summary too;
            # per-run ones are there already as the runs' notes
            per_run = {f"run {r.name}: {note}" for r in runs for note in r.notes}
            comparison.warnings[:0] = [m for m in load_messages if m not in per_run]
            out = args.out
            out.mkdir(parents=True, exist_ok=True)
            result = plot_runs(comparison, out / "compare.png", svg=args.svg, panel_dir=out / "panels",
                               title=args.title)
            comparison.aggregate_table().to_csv(out / "aggregate.csv", index=False)
            comparison.stats_table().to_csv(out / "stats.csv", index=False)
            markdown = comparison.markdown()
            (out / "summary.md").write_text(markdown, encoding="utf-8")
        except (CompareError, OSError) as err:
            print(f"{PROG}: error: {err}", file=sys.stderr)
            return 2
    print(markdown)
    print(f"{PROG}: wrote {out / 'summary.md'}, {out / 'aggregate.csv'}, {out / 'stats.csv'} and {len(result.files)} figure file(s) "
          f"({', '.join(result.panels)}) under {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
