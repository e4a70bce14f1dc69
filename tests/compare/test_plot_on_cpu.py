"""The panels: valid PNG/SVG files, PAPO panels only for PAPO, curves = mean over seeds with a std band."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from papo_verl.compare import CompareWarning, compare, load_runs, plot_runs
from papo_verl.compare.plot import _colors, _draw_panel, _grid_figure, panels_for
from tests.compare.helpers import png_size, run_config, synthetic_metrics, write_file_run

PAPO_PANELS = {"papo_tilt", "papo_weights", "papo_token_share", "papo_entropy_filter", "papo_slope_snr",
               "papo_branch_response", "papo_same_batch_dH", "papo_sign_agreement"}
COMMON_PANELS = {"train_score", "val_gsm8k_acc_mean1", "entropy", "response_length", "pg_clipfrac"}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    written = {}
    for algorithm in ("papo", "grpo"):
        for seed in (1, 2):
            metrics = synthetic_metrics(algorithm, seed, range(1, 9))
            written[(algorithm, seed)] = (write_file_run(root, run_config(algorithm, seed, f"{algorithm}-seed{seed}"),
                                                         metrics), metrics)
    return root, written


def _runs(paths):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompareWarning)
        return load_runs(paths)


@pytest.mark.slow  # renders figures / runs the CLI (seconds each)
def test_png_and_panels_with_papo_only_for_papo(runs_dir, tmp_path):
    root, _ = runs_dir
    result = plot_runs(_runs([root]), tmp_path / "cmp.png", panel_dir=tmp_path / "panels")
    assert set(result.panels) == PAPO_PANELS | COMMON_PANELS
    for key in PAPO_PANELS:
        assert set(result.panels[key]) == {"papo"}, key
    for key in COMMON_PANELS:
        assert set(result.panels[key]) == {"papo", "grpo"}, key
    assert result.panels["papo_weights"]["papo"] == ["papo/expand_weight", "papo/contract_weight"]
    assert result.panels["papo_entropy_filter"]["papo"] == ["papo/entropy", "papo/entropy_level",
                                                            "papo/entropy_level_sd"]  # level ± 2 sd band
    assert result.panels["papo_same_batch_dH"]["papo"] == ["papo/val/dH_measured", "papo/val/dH_first_order"]

    width, height = png_size(tmp_path / "cmp.png")
    assert (width, height) == (int(5.2 * 3 * 110), int(3.6 * 5 * 110))  # 13 panels: a 5 x 3 grid at 110 dpi
    assert (tmp_path / "cmp.png").stat().st_size > 50_000
    assert sorted(p.name for p in (tmp_path / "panels").iterdir()) == sorted(f"{k}.png" for k in result.panels)
    for path in (tmp_path / "panels").iterdir():
        assert png_size(path) == (660, 440)
    assert not list(tmp_path.rglob("*.svg"))
    assert result.files[0] == tmp_path / "cmp.png" and len(result.files) == 1 + len(result.panels)


@pytest.mark.slow  # renders figures / runs the CLI (seconds each)
def test_svg_when_asked(runs_dir, tmp_path):
    root, _ = runs_dir
    result = plot_runs(_runs([root]), tmp_path / "cmp.png", svg=True)  # per-panel SVGs: see test_cli_on_cpu
    svgs = sorted(p for p in result.files if p.suffix == ".svg")
    assert svgs == [tmp_path / "cmp.svg"]
    assert png_size(tmp_path / "cmp.png")[0] > 1000
    for path in svgs:
        text = path.read_text()
        assert text.startswith("<?xml") and "<svg" in text and "</svg>" in text
    assert (tmp_path / "cmp.svg").stat().st_size > 50_000


def test_curve_is_the_mean_over_seeds_with_a_std_band(runs_dir):
    root, written = runs_dir
    comparison = compare(_runs([root]))
    (panel,) = [p for p in panels_for(comparison) if p.key == "papo_tilt"]
    ax = Figure().subplots()
    _draw_panel(ax, panel, comparison, _colors(comparison.labels), {})
    (line,) = ax.get_lines()[:1]
    values = np.array([[written[("papo", s)][1][step]["papo/tilt"] for s in (1, 2)] for step in range(1, 9)])
    np.testing.assert_allclose(line.get_xdata(), np.arange(1, 9))
    np.testing.assert_allclose(line.get_ydata(), values.mean(axis=1), rtol=1e-12)
    assert line.get_label() == "papo (n=2)"
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    vertices = band.get_paths()[0].vertices
    upper = values.mean(axis=1) + values.std(axis=1, ddof=1)
    lower = values.mean(axis=1) - values.std(axis=1, ddof=1)
    assert vertices[:, 1].max() == pytest.approx(upper.max(), rel=1e-9)
    assert vertices[:, 1].min() == pytest.approx(lower.min(), rel=1e-9)


def test_grid_names_each_algorithm_once_and_panels_only_their_line_styles(runs_dir):
    root, _ = runs_dir
    comparison = compare(_runs([root]))
    panels = [p for p in panels_for(comparison) if p.key in ("entropy", "papo_weights", "papo_tilt", "train_score")]
    fig = _grid_figure(comparison, panels, _colors(comparison.labels), None, {})
    legends = {ax: ax.get_legend() for ax in fig.axes if ax.get_legend() is not None}
    by_title = {ax.get_title(): legend for ax, legend in legends.items()}
    # 4 panels in a 2 x 3 grid: the algorithms' legend in the first empty cell, with each one's run count
    (spare,) = [ax for ax in legends if not ax.axison]
    assert [t.get_text() for t in legends[spare].get_texts()] == ["grpo (n=2)", "papo (n=2)"]
    assert [t.get_text() for t in by_title["PAPO branch weights"].get_texts()] == ["w₊ expand", "w₋ contract"]
    assert set(by_title) == {"PAPO branch weights", ""}  # "": the spare cell; single-series panels have none
    # with no empty cell the algorithms go under the grid, in the figure's own legend
    fig = _grid_figure(comparison, panels[:3], _colors(comparison.labels), None, {})
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["grpo (n=2)", "papo (n=2)"]


def test_held_out_pass_at_k_gets_one_panel_per_k():
    from papo_verl.compare.plot import PANELS

    keys = [p.key for p in PANELS if p.key.startswith("eval_pass")]
    assert keys == ["eval_pass16", "eval_pass4", "eval_pass1"]  # the primary metric first
    assert [p.metrics for p in PANELS if p.key in keys] == [("eval/pass@16",), ("eval/pass@4",), ("eval/pass@1",)]


@pytest.mark.slow  # renders figures / runs the CLI (seconds each)
def test_single_run_figure_for_the_demo(runs_dir, tmp_path):
    """The CPU demo's use: one PAPO run's reward, entropy and phase weights in one PNG."""
    _, written = runs_dir
    log, _ = written[("papo", 1)]
    runs = load_runs([log])
    assert [(r.name, r.label, r.seed) for r in runs] == [("papo-seed1", "papo", 1)]
    result = plot_runs(runs, tmp_path / "demo.png")
    assert {"train_score", "entropy", "papo_weights", "papo_tilt"} <= set(result.panels)
    assert result.panels["papo_weights"] == {"papo": ["papo/expand_weight", "papo/contract_weight"]}
    assert png_size(tmp_path / "demo.png")[0] > 1000
    assert result.files == [tmp_path / "demo.png"]
