"""The demo launcher's pieces without a training run: task knobs, finished-run detection, new file names."""

import json

import pytest

from papo_verl.demo.assets import DemoRecipe, recipe_key
from papo_verl.demo.run import _new_path, finished_run, main, parse_task
from papo_verl.demo.task import TaskConfigError


def test_task_knobs_apply_to_test_and_rl_tasks_and_change_the_cache_key():
    recipe = DemoRecipe().with_task(parse_task(["n_numbers=5", "target_max=60", "ops=+*"]))
    assert recipe.task.n_numbers == (5,) and recipe.rl_task.n_numbers == (5,)
    assert recipe.task.target_max == 60 == recipe.rl_task.target_max and recipe.rl_task.ops == "+*"
    assert recipe.rl_task.max_shortest_steps == 1  # the RL prompts keep their own constraint
    assert recipe_key(recipe) != recipe_key(DemoRecipe()) and DemoRecipe().with_task({}) == DemoRecipe()
    with pytest.raises(ValueError, match="unknown task field.*n_number.*TaskConfig has"):
        DemoRecipe().with_task({"n_number": 5})
    with pytest.raises(TaskConfigError, match="n_numbers must be integers in"):
        DemoRecipe().with_task({"n_numbers": 9})
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        parse_task(["n_numbers"])


def test_bad_task_knob_stops_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--task", "n_number=5", "--out", str(tmp_path / "x"), "--steps", "1"])
    assert "--task: unknown task field(s) n_number" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def _log(path, steps):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"step": s, "data": {"training/global_step": s}}) + "\n" for s in steps))


def test_finished_run_needs_the_last_step_and_the_held_out_evaluation(tmp_path):
    logs = tmp_path / "logs" / "papo_demo"
    _log(logs / "papo-seed0.jsonl", [1, 2, 3])
    assert finished_run(tmp_path, "papo-seed0", 3) is None  # no held-out evaluation yet
    (logs / "papo-seed0.eval.jsonl").write_text("")
    assert finished_run(tmp_path, "papo-seed0", 5) is None  # interrupted at step 3
    _log(logs / "papo-seed0-2.jsonl", [3, 4, 5])  # the resumed segment
    assert finished_run(tmp_path, "papo-seed0", 5) == str(logs / "papo-seed0-2.jsonl")
    assert finished_run(tmp_path, "grpo-seed0", 5) is None


def test_new_path_never_reuses_a_name(tmp_path):
    first = tmp_path / "run.log"
    assert _new_path(first) == first
    first.write_text("x")
    assert _new_path(first) == tmp_path / "run-2.log"
    (tmp_path / "run-2.log").write_text("y")
    assert _new_path(first) == tmp_path / "run-3.log"


def test_protocol_counts_committed_runs_as_finished_and_never_overwrites(tmp_path):
    """examples/protocol.sh seeds the output folder from docs/runs before the launcher decides what to run.

    A stand-in interpreter (this test is about the shell script, not about training) records what the demo
    launcher would find: the committed runs, so a fresh clone resumes instead of starting over.
    """
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    runs, out = tmp_path / "runs" / "harder", tmp_path / "out"
    runs.mkdir(parents=True)
    for name in ("grpo-seed0.jsonl", "grpo-seed0.eval.jsonl", "grpo-seed0.config.yaml"):
        (runs / name).write_text(f"committed {name}\n")
    (out / "harder" / "logs" / "papo_demo").mkdir(parents=True)
    (out / "harder" / "logs" / "papo_demo" / "grpo-seed0.config.yaml").write_text("local\n")  # kept as it is
    record = tmp_path / "record.txt"
    fake = tmp_path / "python"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'if [[ "$2" == papo_verl.demo ]]; then ls "{out}/harder/logs/papo_demo" > "{record}"; '
        f'echo "new run" > "{out}/harder/logs/papo_demo/papo-seed1.jsonl"; fi\n')
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "OUT_ROOT": str(out), "RUNS_ROOT": str(tmp_path / "runs"),
           "FIGURES_ROOT": str(tmp_path / "figures")}
    subprocess.run(["bash", str(repo / "examples" / "protocol.sh"), "harder"], cwd=repo, env=env, check=True,
                   capture_output=True)
    assert record.read_text().split() == ["grpo-seed0.config.yaml", "grpo-seed0.eval.jsonl", "grpo-seed0.jsonl"]
    logs = out / "harder" / "logs" / "papo_demo"
    assert (logs / "grpo-seed0.config.yaml").read_text() == "local\n"
    assert (logs / "grpo-seed0.jsonl").read_text() == "committed grpo-seed0.jsonl\n"
    # afterwards the new run's log is copied to the committed folder, nothing there is overwritten
    assert (runs / "papo-seed1.jsonl").read_text() == "new run\n"
    assert (runs / "grpo-seed0.config.yaml").read_text() == "committed grpo-seed0.config.yaml\n"


class _Assets:
    def verl_overrides(self):
        return []


@pytest.mark.parametrize("dumped,validates_first", [(True, False), (False, True)])
def test_a_resumed_run_validates_first_unless_its_checkpoints_validation_was_dumped(tmp_path, monkeypatch, dumped,
                                                                                     validates_first):
    """verl saves a step's checkpoint before that step's validation: an interruption in between must not lose it."""
    import papo_verl.demo.run as run_module

    checkpoints = tmp_path / "checkpoints" / "papo-seed0"
    checkpoints.mkdir(parents=True)
    (checkpoints / "latest_checkpointed_iteration.txt").write_text("15")
    validation = tmp_path / "validation" / "papo-seed0"
    validation.mkdir(parents=True)
    (validation / "0.jsonl").write_text("{}\n")
    if dumped:
        (validation / "15.jsonl").write_text("{}\n")
    seen = {}

    def run_training(overrides, **kwargs):  # records what verl would be started with
        seen["overrides"] = overrides
        return run_module.TrainingRun(name=kwargs["name"], rc=1, wall_s=0.0, log_file="", metrics_file=None)

    monkeypatch.setattr(run_module, "run_training", run_training)
    run_module.demo_training(_Assets(), "papo", 0, 60, tmp_path, [], echo=False)
    resolved = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in seen["overrides"]}
    assert resolved.get("trainer.val_before_train") == ("true" if validates_first else "false")


@pytest.mark.slow  # papo-compare twice on written runs (figures: tens of seconds)
def test_protocol_compares_with_grpo_and_the_ablations_with_papo(tmp_path):
    """``COMPARE_ONLY=1 bash examples/protocol.sh harder`` on committed logs: the figure and tables against GRPO,
    and the tables against the default PAPO (the split ablation) without a second figure."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.compare.helpers import run_config, synthetic_metrics, write_file_run

    repo = Path(__file__).resolve().parents[2]
    runs = tmp_path / "runs" / "harder"
    for algorithm, extra in (("grpo", {}), ("papo", {}), ("papo", {"algorithm.papo.split": "advantage_sign"})):
        name = "papo_sign" if extra else algorithm
        for seed in (0, 1):
            config = run_config(algorithm, seed, f"{name}-seed{seed}", project="papo_demo", extra=extra)
            write_file_run(runs, config, synthetic_metrics(name, seed, range(0, 7)))
    env = {**os.environ, "PYTHON": sys.executable, "COMPARE_ONLY": "1", "RUNS_ROOT": str(tmp_path / "runs"),
           "FIGURES_ROOT": str(tmp_path / "figures")}
    subprocess.run(["bash", str(repo / "examples" / "protocol.sh"), "harder"], cwd=repo, env=env, check=True,
                   capture_output=True)
    figures = tmp_path / "figures" / "harder"
    assert sorted(p.name for p in figures.iterdir()) == ["compare.png", "panels", "stats.csv", "summary.md", "vs_papo"]
    assert sorted(p.name for p in (figures / "vs_papo").iterdir()) == ["stats.csv", "summary.md"]
    against_grpo = (figures / "summary.md").read_text(encoding="utf-8")
    against_papo = (figures / "vs_papo" / "summary.md").read_text(encoding="utf-8")
    assert "| Δ vs grpo [95 % CI] | p (Welch) |" in against_grpo
    assert "| Δ vs papo [95 % CI] | p (Welch) |" in against_papo
    row = "| `critic/score/mean` | final | papo[split=advantage_sign] | 2 |"
    assert row in against_grpo and row in against_papo
    # the same per-arm statistics, only the difference column changes
    strip = lambda text: [line.rsplit("|", 3)[0] for line in text.splitlines() if line.startswith("| `critic")]
    assert strip(against_grpo) == strip(against_papo)
