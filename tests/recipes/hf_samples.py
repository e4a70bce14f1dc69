"""Tiny local files in the Hugging Face datasets' own formats, and the preprocessing scripts as modules.

The rows imitate the public datasets' columns (openai/gsm8k ``main``, DigitalLearningGmbH/MATH-lighteval,
BytedTsinghua-SIA/DAPO-Math-17k, HuggingFaceH4/aime_2024); no hub access is needed.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
PREPROCESS_DIR = REPO / "examples" / "data_preprocess"

DAPO_TEMPLATE = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{problem}\n\n"
    'Remember to put your answer on its own line after "Answer:".'
)

GSM8K_ROWS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
               "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"},
    {"question": "A school has 1,200 students and 34 more joined. How many students are there now?",
     "answer": "1,200 + 34 = <<1200+34=1234>>1,234\n#### 1,234"},
    {"question": "The temperature was 5 degrees and fell by 8 degrees. What is it now?",
     "answer": "5 - 8 = <<5-8=-3>>-3\n#### -3"},
]

MATH_ROWS = [
    {"problem": "What is $\\frac{1}{4} + \\frac{1}{4}$?", "level": "Level 1", "type": "Prealgebra",
     "solution": "We have $\\frac{1}{4}+\\frac{1}{4}=\\frac{2}{4}=\\boxed{\\frac{1}{2}}$."},
    {"problem": "Compute $\\sin 60^\\circ$.", "level": "Level 2", "type": "Precalculus",
     "solution": "A 30-60-90 triangle gives $\\sin 60^\\circ = \\boxed{\\frac{\\sqrt{3}}{2}}$."},
    {"problem": "How many positive divisors does 6 have?", "level": "Level 2", "type": "Number Theory",
     "solution": "They are 1, 2, 3, 6, so the answer is $\\boxed{4}$."},
]

DAPO_PROBLEMS = [
    ("In triangle $ABC$, $AB = 13$, $BC = 14$ and $CA = 15$. Find the area of the triangle.", "84"),
    ("Find the remainder when $2^{10}$ is divided by $7$.", "2"),
    ("Let $x$ satisfy $3x + 5 = 107$. Find $x$.", "34"),
]

AIME_ROWS = [
    {"id": 60, "problem": "Find the number of ordered pairs $(m, n)$ of positive integers with $m + n = 34$.",
     "solution": "There are 33 of them.", "answer": "033", "url": "https://example.org/1", "year": 2024},
    {"id": 61, "problem": "Find the least positive integer $N$ such that $N \\equiv 204 \\pmod{1000}$.",
     "solution": "N = 204.", "answer": 204, "url": "https://example.org/2", "year": 2024},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def dapo_hf_rows(repeats: int = 3) -> list[dict]:
    """BytedTsinghua-SIA/DAPO-Math-17k rows: already verl-shaped, every problem repeated."""
    rows = []
    for r in range(repeats):
        for k, (problem, answer) in enumerate(DAPO_PROBLEMS):
            rows.append({
                "data_source": "math_dapo",
                "prompt": [{"content": DAPO_TEMPLATE.format(problem=problem), "role": "user"}],
                "ability": "MATH",
                "reward_model": {"ground_truth": answer, "style": "rule-lighteval/MATH_v2"},
                "extra_info": {"index": f"{k:08d}-0000-4000-8000-{r:012d}"},
            })
    return rows


def load_script(name: str) -> ModuleType:
    """examples/data_preprocess/<name>.py as a module (its folder goes on sys.path, as when run)."""
    if str(PREPROCESS_DIR) not in sys.path:
        sys.path.insert(0, str(PREPROCESS_DIR))
    if name == "preprocess_utils":  # the very module the scripts import (same DataFormatError class)
        return importlib.import_module(name)
    module_name = f"papo_data_preprocess_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, PREPROCESS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def build_math_rl_data(root: Path) -> dict[str, Path]:
    """DAPO-Math-17k train + AIME 2024/2025 eval parquet files, made by the preprocessing scripts."""
    src = root / "hf"
    src.mkdir(parents=True, exist_ok=True)
    dapo_in = write_parquet(src / "dapo-math-17k.parquet", dapo_hf_rows())
    aime24 = write_jsonl(src / "aime_2024.jsonl", AIME_ROWS)
    aime25 = write_jsonl(src / "aime_2025.jsonl", [dict(r, year=2025, id=r["id"] + 100) for r in AIME_ROWS])
    train = load_script("dapo_math").main(["--input", str(dapo_in), "--local_dir", str(root / "dapo-math-17k")])
    out = {"train": Path(train)}
    written = load_script("aime").main(["--input", f"2024={aime24}", "--input", f"2025={aime25}",
                                        "--local_dir", str(root / "aime")])
    out.update({f"aime{y}": Path(p) for y, p in written.items()})
    return out
