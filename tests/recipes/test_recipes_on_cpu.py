"""The math RLVR recipes (recipes/*.sh).

* Every recipe's dry run composes and passes papo_verl's pre-Ray checks and verl's own
  ``validate_config``; all recipes are composed in ONE Python process (tests/recipes/_compose_recipes.py,
  fed with ``bash recipes/<x>.sh --print-args``), and one real ``bash recipes/papo_math.sh --dry-run``
  subprocess is checked to print exactly the same resolved config.
* The compared recipes differ ONLY in algorithm keys: on the fully resolved configs, every key whose
  value differs from the GRPO recipe's lies in the allowlist below, and the differences are pinned
  per recipe (they are the table in recipes/README.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .hf_samples import build_math_rl_data

REPO = Path(__file__).resolve().parents[2]
RECIPES_DIR = REPO / "recipes"
COMPOSER = Path(__file__).with_name("_compose_recipes.py")

RECIPES = {
    "papo": "papo_math.sh",
    "grpo": "grpo_math.sh",
    "dapo": "dapo_math.sh",
    "papo-dapo": "papo_dapo_math.sh",
    "clip-cov": "clip_cov_math.sh",
    "kl-cov": "kl_cov_math.sh",
}

# --- The "algorithm keys": the only keys in which two compared recipes may differ --------------------
ALGORITHM_KEY_PREFIXES = (
    "algorithm.",                            # estimator, GRPO std normalisation, dynamic sampling, papo.*
    "actor_rollout_ref.actor.policy_loss.",  # loss_mode and its parameters (clip_cov_*, kl_cov_ratio, ...)
    "reward.reward_kwargs.",                 # DAPO overlong shaping: overlong_buffer_cfg.*, max_resp_len
)
ALGORITHM_KEYS = frozenset({
    "actor_rollout_ref.actor.clip_ratio",       # PPO ratio clip (symmetric form)
    "actor_rollout_ref.actor.clip_ratio_low",   # decoupled clip (DAPO's clip-higher, Clip-Cov's 1.0/1.0)
    "actor_rollout_ref.actor.clip_ratio_high",
    "actor_rollout_ref.actor.clip_ratio_c",     # dual-clip bound for negative advantages
    "actor_rollout_ref.actor.loss_agg_mode",    # token-mean / seq-mean-... aggregation
    "reward.reward_manager.name",               # naive, or dapo (the manager applying overlong shaping)
    "trainer.experiment_name",                  # the run's name (and the paths derived from it)
    "trainer.v1.trainer_mode",                  # papo_verl sets 'papo' for algorithm.adv_estimator=papo
})

# The exact differences from grpo_math.sh (besides trainer.experiment_name); = recipes/README.md's table.
_A = "actor_rollout_ref.actor."
_DAPO_KEYS = {
    _A + "clip_ratio_high", _A + "clip_ratio_c",
    "algorithm.filter_groups.enable", "algorithm.filter_groups.metric",
    "reward.reward_manager.name",
    "reward.reward_kwargs.overlong_buffer_cfg.enable", "reward.reward_kwargs.overlong_buffer_cfg.len",
    "reward.reward_kwargs.overlong_buffer_cfg.penalty_factor", "reward.reward_kwargs.overlong_buffer_cfg.log",
    "reward.reward_kwargs.max_resp_len",
}
_PAPO_KEYS = {"algorithm.adv_estimator", "trainer.v1.trainer_mode"}
EXPECTED_DIFF_FROM_GRPO = {
    "papo": _PAPO_KEYS,
    "dapo": _DAPO_KEYS,
    "papo-dapo": _PAPO_KEYS | _DAPO_KEYS,
    "clip-cov": {_A + "policy_loss.loss_mode", _A + "clip_ratio_low", _A + "clip_ratio_high"},
    "kl-cov": {_A + "policy_loss.loss_mode", _A + "policy_loss.kl_cov_ratio", _A + "policy_loss.ppo_kl_coef"},
}

CKPT_ROOT = "/papo-recipe-test/ckpts"  # never written: dry runs and --print-args only
DATA_DIR = "/papo-recipe-test/data"
# Every variable the recipes read, scrubbed from the caller's environment so that the tests see defaults.
RECIPE_VARS = sorted(
    set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):-", (RECIPES_DIR / "common.sh").read_text())) | {"EXPERIMENT_NAME"})


def recipe_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RECIPE_VARS and k not in ("PAPO_DRY_RUN", "HF_HUB_OFFLINE")}
    env.update(PYTHON=sys.executable, CKPT_ROOT=CKPT_ROOT, DATA_DIR=DATA_DIR)
    env.update(overrides)
    return env


def run_recipe(script: str, *args: str, env: dict | None = None, cwd: Path | None = None):
    return subprocess.run(["bash", str(RECIPES_DIR / script), *args], env=env or recipe_env(), cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=300)


def print_args(script: str, *extra: str, **env: str) -> list[str]:
    proc = run_recipe(script, "--print-args", *extra, env=recipe_env(**env))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("\0")
    return proc.stdout[:-1].split("\0")


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def normalized(config: dict) -> dict:
    """Flat config with the run's experiment name replaced in derived strings (checkpoint dir, trace name)."""
    flat = flatten(config)
    name = flat["trainer.experiment_name"]
    return {k: (v.replace(name, "<experiment>") if isinstance(v, str) and k != "trainer.experiment_name" else v)
            for k, v in flat.items()}


def config_diff(a: dict, b: dict) -> set[str]:
    fa, fb = normalized(a), normalized(b)
    return {k for k in fa.keys() | fb.keys() if k not in fa or k not in fb or fa[k] != fb[k]}


def is_algorithm_key(key: str) -> bool:
    return key in ALGORITHM_KEYS or key.startswith(ALGORITHM_KEY_PREFIXES)


@pytest.fixture(scope="module")
def composed(tmp_path_factory) -> dict[str, dict]:
    """All recipes (plus variants) composed and dry-run in one subprocess; {case: {"config"/"yaml"/"error"}}."""
    tmp = tmp_path_factory.mktemp("recipes")
    data = build_math_rl_data(tmp / "data")
    cases = [{"name": name, "args": print_args(script)} for name, script in RECIPES.items()]
    cases += [
        {"name": "papo@qwen3-8b-base", "args": print_args("papo_math.sh", MODEL_PRESET="qwen3-8b-base", NNODES="2")},
        {"name": "dapo@qwen3-4b-base", "args": print_args("dapo_math.sh", MODEL_PRESET="qwen3-4b-base")},
        {"name": "papo+cli",
         "args": print_args("papo_math.sh", "algorithm.papo.alpha=0.3", "data.max_response_length=2048")},
        {"name": "dapo+cli", "args": print_args("dapo_math.sh", "data.max_response_length=2048")},
        {"name": "grpo+odd-paths", "args": print_args("grpo_math.sh", MODEL_PATH="/models/Qwen 2.5=7B,x",
                                                      CKPT_ROOT="/ckpt root", TRAIN_FILES="/data dir/t=1.parquet")},
        # verl's validate_config must reject this (no micro-batch size without dynamic batching).
        {"name": "grpo+invalid", "args": print_args("grpo_math.sh", "actor_rollout_ref.actor.use_dynamic_bsz=False")},
        # Real parquet files from examples/data_preprocess, checked by papo_verl's preflight.
        {"name": "grpo+data", "check_files": True,
         "args": print_args("grpo_math.sh", TRAIN_FILES=str(data["train"]),
                            VAL_FILES=f"{data['aime2024']},{data['aime2025']}")},
    ]
    cases_path, out_path = tmp / "cases.json", tmp / "results.json"
    cases_path.write_text(json.dumps(cases))
    env = recipe_env()
    proc = subprocess.run([sys.executable, str(COMPOSER), str(cases_path), str(out_path)], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out_path.read_text())


def _config(composed: dict, name: str) -> dict:
    result = composed[name]
    assert "error" not in result, f"{name}: {result.get('error')}"
    return result["config"]


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_dry_run_composes_and_passes_verl_validation(composed, name):
    cfg = _config(composed, name)
    algo, actor = cfg["algorithm"], cfg["actor_rollout_ref"]["actor"]
    estimator, loss_mode, mode = {
        "papo": ("papo", "vanilla", "papo"), "grpo": ("grpo", "vanilla", "sync"), "dapo": ("grpo", "vanilla", "sync"),
        "papo-dapo": ("papo", "vanilla", "papo"), "clip-cov": ("grpo", "clip_cov", "sync"),
        "kl-cov": ("grpo", "kl_cov", "sync"),
    }[name]
    assert algo["adv_estimator"] == estimator
    assert actor["policy_loss"]["loss_mode"] == loss_mode
    assert cfg["trainer"]["v1"]["trainer_mode"] == mode
    assert cfg["trainer"]["experiment_name"] == f"{name}-qwen2.5-math-7b-seed1"


def test_bash_dry_run_prints_the_same_resolved_config(composed, tmp_path):
    proc = run_recipe("papo_math.sh", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    expected = composed["papo"]["yaml"].rstrip()
    assert proc.stdout.rstrip().endswith(expected)
    assert "[validate_config] All configuration checks passed" in proc.stdout[: -len(expected)]
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing (no Hydra outputs/ folder)


@pytest.mark.parametrize("name", [n for n in RECIPES if n != "grpo"])
def test_recipes_differ_from_grpo_only_in_algorithm_keys(composed, name):
    diff = config_diff(_config(composed, name), _config(composed, "grpo"))
    assert {k for k in diff if not is_algorithm_key(k)} == set(), "non-algorithm keys differ"
    assert diff - {"trainer.experiment_name"} == EXPECTED_DIFF_FROM_GRPO[name]


def test_pairwise_differences_are_algorithm_keys_only(composed):
    names = list(RECIPES)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            bad = {k for k in config_diff(_config(composed, a), _config(composed, b)) if not is_algorithm_key(k)}
            assert bad == set(), f"{a} vs {b}: {sorted(bad)}"


def test_algorithm_values(composed):
    actor = lambda n: _config(composed, n)["actor_rollout_ref"]["actor"]  # noqa: E731
    dapo = _config(composed, "dapo")
    assert tuple(actor("dapo")[k] for k in ("clip_ratio_low", "clip_ratio_high", "clip_ratio_c")) == (0.2, 0.28, 10.0)
    assert actor("dapo")["loss_agg_mode"] == "token-mean"
    assert dapo["algorithm"]["filter_groups"] | {"_target_": None} == {
        "_target_": None, "enable": True, "metric": "acc", "max_num_gen_batches": 0, "max_inflight_gen_batches": 1}
    assert dapo["reward"]["reward_manager"]["name"] == "dapo"
    assert dapo["reward"]["reward_kwargs"] == {
        "overlong_buffer_cfg": {"enable": True, "len": 512, "penalty_factor": 1.0, "log": False}, "max_resp_len": 3072}
    clip_cov = actor("clip-cov")
    assert (clip_cov["policy_loss"]["clip_cov_ratio"], clip_cov["policy_loss"]["clip_cov_lb"],
            clip_cov["policy_loss"]["clip_cov_ub"]) == (0.0002, 1.0, 5.0)
    assert (clip_cov["clip_ratio_low"], clip_cov["clip_ratio_high"]) == (1.0, 1.0)
    kl_cov = actor("kl-cov")["policy_loss"]
    assert (kl_cov["kl_cov_ratio"], kl_cov["ppo_kl_coef"]) == (0.002, 1.0)
    for name in RECIPES:  # shared by all: no KL, no entropy bonus, no reference model
        a = actor(name)
        kl_in_reward = _config(composed, name)["algorithm"]["use_kl_in_reward"]
        assert (a["use_kl_loss"], a["entropy_coeff"], kl_in_reward) == (False, 0, False)


def test_base_settings(composed):
    cfg = _config(composed, "grpo")
    arr, data, trainer = cfg["actor_rollout_ref"], cfg["data"], cfg["trainer"]
    assert arr["model"]["path"] == "Qwen/Qwen2.5-Math-7B"
    assert arr["model"]["use_fused_kernels"] is False  # papo_trainer.yaml, for every recipe
    assert arr["actor"]["strategy"] == arr["ref"]["strategy"] == "fsdp2"
    assert arr["rollout"]["name"] == "vllm" and arr["rollout"]["n"] == 8
    assert (data["max_prompt_length"], data["max_response_length"]) == (1024, 3072)
    assert arr["rollout"]["response_length"] == 3072
    assert (data["train_batch_size"], arr["actor"]["ppo_mini_batch_size"]) == (256, 32)
    assert arr["actor"]["use_dynamic_bsz"] is True and arr["actor"]["ppo_max_token_len_per_gpu"] == 8192
    assert data["train_files"] == [f"{DATA_DIR}/dapo-math-17k/train.parquet"]
    assert data["val_files"] == [f"{DATA_DIR}/aime/aime-2024.parquet", f"{DATA_DIR}/aime/aime-2025.parquet"]
    assert (data["seed"], arr["rollout"]["seed"], arr["actor"]["data_loader_seed"]) == (1, 1, 1)
    assert arr["rollout"]["val_kwargs"] | {"_target_": None} == {
        "_target_": None, "top_k": -1, "top_p": 0.7, "temperature": 1.0, "n": 16, "do_sample": True}
    assert trainer["logger"] == ["console", "wandb"]
    assert trainer["project_name"] == "papo-math"
    assert trainer["default_local_dir"] == f"{CKPT_ROOT}/papo-math/grpo-qwen2.5-math-7b-seed1"
    assert (trainer["nnodes"], trainer["n_gpus_per_node"]) == (1, 8)
    assert (trainer["total_training_steps"], trainer["test_freq"], trainer["save_freq"]) == (500, 10, 50)
    assert cfg["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"] == {"WANDB_RUN_GROUP": "papo-math-qwen2.5-math-7b"}


def test_model_presets(composed):
    papo = _config(composed, "papo@qwen3-8b-base")
    assert papo["actor_rollout_ref"]["model"]["path"] == "Qwen/Qwen3-8B-Base"
    assert (papo["data"]["max_response_length"], papo["trainer"]["nnodes"]) == (8192, 2)
    assert papo["trainer"]["experiment_name"] == "papo-qwen3-8b-base-seed1"
    dapo = _config(composed, "dapo@qwen3-4b-base")
    assert dapo["actor_rollout_ref"]["model"]["path"] == "Qwen/Qwen3-4B-Base"
    assert dapo["reward"]["reward_kwargs"]["overlong_buffer_cfg"]["len"] == 1536
    assert dapo["reward"]["reward_kwargs"]["max_resp_len"] == 8192


def test_extra_arguments_pass_through_as_hydra_overrides(composed):
    papo = _config(composed, "papo+cli")
    assert papo["algorithm"]["papo"]["alpha"] == 0.3
    assert papo["data"]["max_response_length"] == papo["actor_rollout_ref"]["rollout"]["response_length"] == 2048
    # DAPO's overlong shaping follows data.max_response_length (an interpolation, not a copy).
    assert _config(composed, "dapo+cli")["reward"]["reward_kwargs"]["max_resp_len"] == 2048


def test_paths_with_hydra_syntax_characters_arrive_verbatim(composed):
    cfg = _config(composed, "grpo+odd-paths")
    assert cfg["actor_rollout_ref"]["model"]["path"] == "/models/Qwen 2.5=7B,x"
    assert cfg["trainer"]["default_local_dir"] == "/ckpt root/papo-math/grpo-qwen2.5-math-7b-seed1"
    assert cfg["data"]["train_files"] == ["/data dir/t=1.parquet"]


def test_verl_validation_runs_on_the_recipes(composed):
    assert "ppo_micro_batch_size" in composed["grpo+invalid"].get("error", "")


def test_recipe_accepts_the_preprocessed_data(composed):
    cfg = _config(composed, "grpo+data")  # preflight.check_model_and_data passed on the real files
    assert [Path(p).name for p in cfg["data"]["val_files"]] == ["aime-2024.parquet", "aime-2025.parquet"]


# --- shell behaviour (bash only, no Python start-up) -------------------------------------------------
def test_environment_variables_reach_the_arguments(tmp_path):
    args = print_args("grpo_math.sh", NNODES="2", GPUS_PER_NODE="4", EXPERIMENT_NAME="my-run", SEED="7",
                      CKPT_ROOT="relative/ckpts", LOGGER="console", TRAIN_FILES="/a.parquet,/b c.parquet")
    assert "trainer.nnodes=2" in args and "trainer.n_gpus_per_node=4" in args
    assert "trainer.experiment_name='my-run'" in args and "data.seed=7" in args
    ckpt_dir = f"{REPO}/relative/ckpts/${{trainer.project_name}}/${{trainer.experiment_name}}"
    assert f"trainer.default_local_dir='{ckpt_dir}'" in args
    assert "trainer.logger=[console]" in args
    assert "data.train_files=['/a.parquet','/b c.parquet']" in args


@pytest.mark.parametrize("env,message", [
    ({"MODEL_PRESET": "llama"}, "unknown MODEL_PRESET"),
    ({"ROLLOUT_TP": "3"}, "not divisible by ROLLOUT_TP"),
    ({"MAX_TOKENS_PER_GPU": "1000"}, "cannot hold one sequence"),
    ({"TRAIN_FILES": "/it's.parquet"}, "single quote"),
])
def test_bad_settings_fail_before_python(env, message):
    proc = run_recipe("papo_math.sh", "--print-args", env=recipe_env(**env))
    assert proc.returncode == 2 and message in proc.stderr


def test_help_and_direct_use_of_common():
    proc = run_recipe("dapo_math.sh", "--help")
    assert proc.returncode == 0 and "--dry-run" in proc.stdout and "MODEL_PRESET=qwen2.5-math-7b" in proc.stdout
    proc = subprocess.run(["bash", str(RECIPES_DIR / "common.sh")], capture_output=True, text=True)
    assert proc.returncode == 2 and "sourced" in proc.stderr


@pytest.mark.parametrize("script", sorted(RECIPES.values()))
def test_recipe_scripts_share_the_base_and_the_entry_point(script):
    text = (RECIPES_DIR / script).read_text()
    assert subprocess.run(["bash", "-n", str(RECIPES_DIR / script)]).returncode == 0
    assert "set -euo pipefail" in text and 'common.sh"' in text
    assert re.search(r"^papo_recipe_main \S+ \"\$@\"$", text, re.M)
    assert not re.search(r"^\s*(exec\s+)?\S*python", text, re.M)  # launched by common.sh only
    assert "-m papo_verl.main" in (RECIPES_DIR / "common.sh").read_text()
