"""The README's generated sections match their sources; the yaml block matches the dataclass."""

import os
import re

import pytest
import yaml

from papo_verl.algorithm.config import PapoConfig, yaml_block_markdown
from papo_verl.algorithm.metrics import METRICS_GLOSSARY, glossary_markdown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def test_readme_metrics_glossary_is_current():
    assert glossary_markdown() in README, "regenerate with `python -m papo_verl.algorithm.metrics` and paste into README.md"
    for name in METRICS_GLOSSARY:
        assert f"`{name}`" in README


def test_readme_config_block_is_current():
    assert yaml_block_markdown() in README


def test_yaml_papo_block_has_every_knob_with_the_dataclass_default():
    cfg = yaml.safe_load(open(os.path.join(ROOT, "papo_verl", "config", "papo_trainer.yaml"), encoding="utf-8"))
    block = cfg["algorithm"]["papo"]
    assert set(block) == set(PapoConfig.field_names())
    assert PapoConfig.from_mapping(block) == PapoConfig()


def test_readme_names_the_two_setup_commands():
    assert "make demo" in README and "make test" in README
    assert "make test" in open(os.path.join(ROOT, ".ci", "run")).read()


# ---- the results page (docs/results.md) -------------------------------------------------------------

RESULTS = os.path.join(ROOT, "docs", "results.md")
SUMMARY = os.path.join(ROOT, "docs", "figures", "cpu_comparison_summary.md")


def _summary_final(metric: str, algorithm: str) -> float:
    """The 'final (last 5)' mean papo-compare wrote for ``metric`` and ``algorithm``."""
    for line in open(SUMMARY, encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] == f"`{metric}`" and cells[1] == algorithm:
            return float(cells[3].split(" ± ")[0])
    raise AssertionError(f"{metric} / {algorithm} not in {SUMMARY}")


def _table_row(text: str, label: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no table row {label!r}")


def test_results_page_figures_are_the_committed_papo_compare_output():
    """The earlier (superseded) comparison's numbers on docs/results.md are those of the committed summary
    that papo-compare wrote beside its figure (--final-window 5), rounded to 3 decimals."""
    results = open(RESULTS, encoding="utf-8").read()
    assert "--final-window 5" in results and "| final (last 5) |" in open(SUMMARY, encoding="utf-8").read()
    assert "bash examples/cpu_multiseed.sh" in results and "make demo-seeds" in results
    for label in ("PAPO", "GRPO", "DAPO"):
        algorithm = label.lower()
        row = _table_row(results, label)
        entropy = float(row[1].split(" ± ")[0])
        assert abs(entropy - _summary_final("actor/entropy", algorithm)) <= 5e-4 + 1e-9, (label, entropy)
        reward = float(row[2].split(" ± ")[0])
        assert abs(reward - _summary_final("critic/score/mean", algorithm)) <= 5e-4 + 1e-9, (label, reward)
    with open(os.path.join(ROOT, "docs", "figures", "cpu_comparison.png"), "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"


def test_relative_links_of_the_docs_exist():
    for path in (os.path.join(ROOT, "README.md"), RESULTS):
        text = open(path, encoding="utf-8").read()
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert os.path.exists(os.path.join(os.path.dirname(path), target)), f"{path}: broken link {target}"


def _prose_files():
    docs = os.path.join(ROOT, "docs")
    return [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "recipes", "README.md"),
            *(os.path.join(docs, name) for name in sorted(os.listdir(docs)) if name.endswith(".md"))]


def test_every_repository_path_the_docs_and_code_name_exists():
    """`papo_verl/...`, `recipes/...`, `tests/...` named in the docs or in a docstring is a real file or folder."""
    pattern = re.compile(r"(?<![\w./-])((?:papo_verl|recipes|tests|bench|examples|docs)/[\w./-]*\w/?)")
    sources = _prose_files() + [os.path.join(d, f) for d, _, files in os.walk(os.path.join(ROOT, "papo_verl"))
                                for f in files if f.endswith((".py", ".yaml"))]
    missing = []
    for path in sources:
        for target in set(pattern.findall(open(path, encoding="utf-8").read())):
            if "*" in target or "<" in target or not os.path.exists(os.path.join(ROOT, target.rstrip("/"))):
                if "*" not in target and "<" not in target:
                    missing.append(f"{os.path.relpath(path, ROOT)}: {target}")
    assert not missing, "\n".join(sorted(missing))


def test_no_file_cites_a_document_outside_the_repository():
    sources = _prose_files() + [os.path.join(d, f) for top in ("papo_verl", "tests", "recipes", "examples", "bench")
                                for d, _, files in os.walk(os.path.join(ROOT, top))
                                for f in files if f.endswith((".py", ".sh", ".md", ".yaml"))]
    sources.remove(os.path.abspath(__file__))
    offending = [os.path.relpath(path, ROOT) for path in sources if re.search(r"PAPO\.md|\.\./shared|integration map",
                                                                              open(path, encoding="utf-8").read())]
    assert not offending, offending


# ---- the pre-registered comparison (docs/results.md "Results") ------------------------------------------

PROTOCOL_SETTINGS = {"default": ("grpo", "papo", "papo[controller=target]", "papo[split=advantage_sign]",
                                 "papo[correction=none]", "kl_cov"),
                     "harder": ("grpo", "papo", "papo[split=advantage_sign]")}
N_SEEDS = 5  # seeds 0-4 per arm


def _section(text: str, setting: str) -> str:
    start, end = f"<!-- results:{setting} -->", f"<!-- /results:{setting} -->"
    assert text.count(start) == 1 and text.count(end) == 1, f"docs/results.md needs one {start} ... {end} section"
    return text.split(start, 1)[1].split(end, 1)[0]


def _summary_rows(path: str) -> dict[tuple[str, str, str], list[str]]:
    """(metric, statistic, algorithm) -> the cells of each result row of a papo-compare summary.md."""
    rows = {}
    for line in open(path, encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0].startswith("`"):
            rows[(cells[0].strip("`"), cells[1], cells[2])] = cells
    return rows


@pytest.mark.parametrize("setting", sorted(PROTOCOL_SETTINGS))
def test_protocol_results_are_the_committed_papo_compare_output(setting):
    """Every table row of a setting's section in docs/results.md is, verbatim, a row papo-compare wrote to
    docs/figures/<setting>/summary.md (differences to GRPO) or vs_papo/summary.md (differences to PAPO);
    those summaries were computed from exactly the runs committed under docs/runs/<setting>/, every arm
    with its 5 seeds; the figures the section shows are there."""
    figures = os.path.join(ROOT, "docs", "figures", setting)
    summaries = [os.path.join(figures, "summary.md"), os.path.join(figures, "vs_papo", "summary.md")]
    section = _section(open(RESULTS, encoding="utf-8").read(), setting)
    assert f"bash examples/protocol.sh {setting}" in section
    summary_lines = {line.rstrip("\n") for path in summaries for line in open(path, encoding="utf-8")}
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) >= 12, "the section's tables are missing"
    for row in rows:
        assert row in summary_lines, f"not a row of papo-compare's summaries of {setting}: {row}"
    # the summaries cover exactly the committed runs (a resumed run's later segments "-2.jsonl" count once)
    runs_dir = os.path.join(ROOT, "docs", "runs", setting)
    for path in summaries:
        text = open(path, encoding="utf-8").read()
        table = _summary_rows(path)
        for algorithm in PROTOCOL_SETTINGS[setting]:
            for metric in ("eval/pass@16", "eval/distinct_correct"):
                assert table[(metric, "final", algorithm)][3] == str(N_SEEDS), (path, metric, algorithm)
        runs = {re.sub(r"-\d+$", "", name[: -len(".jsonl")]) for name in os.listdir(runs_dir)
                if name.endswith(".jsonl") and not name.endswith(".eval.jsonl")}
        assert len(runs) == len(PROTOCOL_SETTINGS[setting]) * N_SEEDS, sorted(runs)
        for run in runs:
            assert f"| {run} |" in text, f"{path} was not computed from {runs_dir}: rerun COMPARE_ONLY=1"
    for image in re.findall(r"\]\((figures/[^)]+\.png)\)", section):
        with open(os.path.join(ROOT, "docs", image), "rb") as png:
            assert png.read(8) == b"\x89PNG\r\n\x1a\n", image


def test_readme_results_quote_the_protocol_comparisons():
    """Every difference with its interval that the README's results section quotes ("+0.08594 [0.0296, 0.142]")
    is papo-compare's, as printed in a setting's docs/figures/<setting>/summary.md (against GRPO)."""
    section = README.split("## Results on the CPU demo task", 1)[1].split("\n## ", 1)[0]
    assert "docs/results.md" in section
    for setting in PROTOCOL_SETTINGS:
        assert f"bash examples/protocol.sh {setting}" in section, setting
    summary = "".join(open(os.path.join(ROOT, "docs", "figures", setting, "summary.md"), encoding="utf-8").read()
                      for setting in PROTOCOL_SETTINGS)
    quoted = re.findall(r"[+\u2212-][0-9.]+ \[[\u2212-]?[0-9.]+, [\u2212-]?[0-9.]+\]", section)
    assert len(quoted) >= 4, quoted
    for difference in quoted:
        assert difference.replace("\u2212", "-") in summary, difference

