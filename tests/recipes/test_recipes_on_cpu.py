"""The math RLVR recipes (recipes/*.sh) and the algorithm presets they select.

* Every recipe's dry run composes and passes papo_verl's pre-Ray checks and verl's own
  ``validate_config``; all recipes are composed in ONE Python process (tests/recipes/_compose_recipes.py,
  fed with ``bash recipes/<x>.sh --print-args``), and one real ``bash recipes/papo_math.sh --dry-run``
  subprocess is checked to print exactly the same resolved config.
* The compared recipes differ ONLY under their presets' keys (papo_verl/config/algorithm_preset/): on
  the fully resolved configs, every key whose value differs between two recipes is set by one of
  their presets (or is the run's name, or the trainer mode papo_verl derives from the estimator).
* The CPU demo's runs of an algorithm resolve the same preset keys as its recipe.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from papo_verl.compare.configs import algorithm_label
from papo_verl.demo.run import ALGORITHMS, DEMO_OVERLONG_BUFFER_LEN, OVERLONG_BUFFER_KEY, demo_overrides, preset_keys

from .hf_samples import build_math_rl_data

REPO = Path(__file__).resolve().parents[2]
RECIPES_DIR = REPO / "recipes"
COMPOSER = Path(__file__).with_name("_compose_recipes.py")

# preset (papo_verl/config/algorithm_preset/<preset>.yaml) -> its recipe
RECIPES = {preset: f"{preset}_math.sh" for preset in ("papo", "grpo", "dapo", "papo_dapo", "clip_cov", "kl_cov")}
VARIANTS = ("papo_target", "papo_sign", "papo_nocorr")  # PAPO's ablations: presets without a recipe of their own
# Keys that differ between runs without being a preset's: the run's name (and the strings derived from
# it, masked by normalized()), and the trainer mode papo_verl derives from algorithm.adv_estimator.
NAME_AND_MODE = {"trainer.experiment_name", "trainer.v1.trainer_mode"}
# papo-compare's labels (papo_verl/compare/configs.py) of each preset's resolved config
LABELS = {"grpo": "grpo", "papo": "papo", "dapo": "dapo", "papo_dapo": "papo+dapo", "clip_cov": "clip_cov",
          "kl_cov": "kl_cov", "papo_target": "papo[controller=target]", "papo_sign": "papo[split=advantage_sign]",
          "papo_nocorr": "papo[correction=none]"}

CKPT_ROOT = "/papo-recipe-test/ckpts"  # never written: dry runs and --print-args only
DATA_DIR = "/papo-recipe-test/data"
# Every variable the recipes read, scrubbed from the caller's environment so that the tests see defaults.
RECIPE_VARS = sorted(
    set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):-", (RECIPES_DIR / "common.sh").read_text())) | {"EXPERIMENT_NAME"})


def recipe_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RECIPE_VARS and k not in ("PAPO_DRY_RUN", "HF_HUB_OFFLINE")}
    env.update(PYTHON=sys.executable, CKPT_ROOT=CKPT_ROOT, DATA_DIR=DATA_DIR)
    # this checkout's papo_verl (and its configs), also where the subprocess runs in a temporary folder
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
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


def keys_outside_presets(a: dict, b: dict, *presets: str) -> set[str]:
    """Keys whose resolved values differ between configs ``a`` and ``b`` and that none of ``presets`` sets."""
    allowed = set().union(*(preset_keys(p) for p in presets)) | NAME_AND_MODE
    return config_diff(a, b) - allowed


@pytest.fixture(scope="module")
def composed(tmp_path_factory) -> dict[str, dict]:
    """All recipes (plus variants) composed and dry-run in one subprocess; {case: {"config"/"yaml"/"error"}}."""
    tmp = tmp_path_factory.mktemp("recipes")
    data = build_math_rl_data(tmp / "data")
    cases = [{"name": name, "args": print_args(script)} for name, script in RECIPES.items()]
    cases += [{"name": name, "args": print_args("papo_math.sh", f"algorithm_preset={name}")} for name in VARIANTS]
    # the CPU demo's runs (papo_trainer_cpu + its settings), composed and resolved only
    cases += [{"name": f"demo:{name}", "dry_run": False,
               "args": ["--config-name=papo_trainer_cpu", *demo_overrides(name, 0, 5, f"{name}-seed0", f"/ck/c/{name}")]}
              for name in ALGORITHMS]
    cases += [
        {"name": "papo@qwen3-8b-base", "args": print_args("papo_math.sh", MODEL_PRESET="qwen3-8b-base", NNODES="2")},
        {"name": "dapo@qwen3-4b-base", "args": print_args("dapo_math.sh", MODEL_PRESET="qwen3-4b-base")},
        {"name": "papo_dapo@qwen3-4b-base", "args": print_args("papo_dapo_math.sh", MODEL_PRESET="qwen3-4b-base")},
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


@pytest.mark.slow  # a child python imports verl
@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_dry_run_composes_and_passes_verl_validation(composed, name):
    cfg = _config(composed, name)
    algo, actor = cfg["algorithm"], cfg["actor_rollout_ref"]["actor"]
    estimator, loss_mode, mode = {
        "papo": ("papo", "vanilla", "papo"), "grpo": ("grpo", "vanilla", "sync"), "dapo": ("grpo", "vanilla", "sync"),
        "papo_dapo": ("papo", "vanilla", "papo"), "clip_cov": ("grpo", "clip_cov", "sync"),
        "kl_cov": ("grpo", "kl_cov", "sync"),
    }[name]
    assert algo["adv_estimator"] == estimator
    assert actor["policy_loss"]["loss_mode"] == loss_mode
    assert cfg["trainer"]["v1"]["trainer_mode"] == mode
    assert cfg["trainer"]["experiment_name"] == f"{name.replace('_', '-')}-qwen2.5-math-7b-seed1"


@pytest.mark.slow  # a child python imports verl
def test_bash_dry_run_prints_the_same_resolved_config(composed, tmp_path):
    proc = run_recipe("papo_math.sh", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    expected = composed["papo"]["yaml"].rstrip()
    assert proc.stdout.rstrip().endswith(expected)
    assert "[validate_config] All configuration checks passed" in proc.stdout[: -len(expected)]
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing (no Hydra outputs/ folder)


@pytest.mark.slow  # the composed configs come from child interpreters (bash dry runs)
def test_resolved_configs_differ_only_under_the_preset_keys(composed):
    """Any two recipes (and PAPO's ablations, selected on papo_math.sh) differ only in keys of their presets."""
    names = [*RECIPES, *VARIANTS]
    for a, b in itertools.combinations(names, 2):
        outside = keys_outside_presets(_config(composed, a), _config(composed, b), a, b)
        assert outside == set(), f"{a} vs {b}: keys outside their presets differ: {sorted(outside)}"
        assert algorithm_label(_config(composed, a)) == LABELS[a]
    # the check sees a difference of a shared setting
    outside = keys_outside_presets(_config(composed, "papo+cli"), _config(composed, "papo"), "papo")
    assert {"data.max_response_length", "actor_rollout_ref.rollout.response_length", "algorithm.papo.alpha"} <= outside


@pytest.mark.slow  # the composed configs come from child interpreters (bash dry runs)
@pytest.mark.parametrize("name", ALGORITHMS)
def test_demo_and_recipes_resolve_the_same_preset_keys(composed, name):
    """The CPU demo's run of an algorithm and its recipe agree on every key of the preset, and there are
    the preset's values (resolved): one set of files for both. DAPO's overlong buffer is sized to the
    response budget (the demo's ~24 tokens, the recipe's model's); its max_resp_len follows it."""
    recipe, demo = flatten(_config(composed, name)), flatten(_config(composed, f"demo:{name}"))
    assert algorithm_label(_config(composed, f"demo:{name}")) == LABELS[name]
    for key, value in preset_keys(name).items():
        if key == OVERLONG_BUFFER_KEY:
            assert (demo[key], recipe[key]) == (DEMO_OVERLONG_BUFFER_LEN, 512)
        elif key == "reward.reward_kwargs.max_resp_len":
            assert (demo[key], recipe[key]) == (demo["data.max_response_length"], recipe["data.max_response_length"])
        else:
            assert demo[key] == recipe[key] == value, (key, demo[key], recipe[key], value)


@pytest.mark.slow  # the composed configs come from child interpreters (bash dry runs)
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
    clip_cov = actor("clip_cov")
    assert (clip_cov["policy_loss"]["clip_cov_ratio"], clip_cov["policy_loss"]["clip_cov_lb"],
            clip_cov["policy_loss"]["clip_cov_ub"]) == (0.0002, 1.0, 5.0)
    assert (clip_cov["clip_ratio_low"], clip_cov["clip_ratio_high"]) == (1.0, 1.0)
    kl_cov = actor("kl_cov")["policy_loss"]
    assert (kl_cov["kl_cov_ratio"], kl_cov["ppo_kl_coef"]) == (0.002, 1.0)
    for name in RECIPES:  # shared by all: no KL, no entropy bonus, no reference model
        a = actor(name)
        kl_in_reward = _config(composed, name)["algorithm"]["use_kl_in_reward"]
        assert (a["use_kl_loss"], a["entropy_coeff"], kl_in_reward) == (False, 0, False)


@pytest.mark.slow  # the composed configs come from child interpreters (bash dry runs)
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


@pytest.mark.slow  # the composed configs come from child interpreters (bash dry runs)
def test_model_presets(composed):
    papo = _config(composed, "papo@qwen3-8b-base")
    assert papo["actor_rollout_ref"]["model"]["path"] == "Qwen/Qwen3-8B-Base"
    assert (papo["data"]["max_response_length"], papo["trainer"]["nnodes"]) == (8192, 2)
    assert papo["trainer"]["experiment_name"] == "papo-qwen3-8b-base-seed1"
    for name in ("dapo", "papo_dapo"):  # the presets with overlong shaping take the model's buffer
        dapo = _config(composed, f"{name}@qwen3-4b-base")
        assert dapo["actor_rollout_ref"]["model"]["path"] == "Qwen/Qwen3-4B-Base"
        assert dapo["reward"]["reward_kwargs"]["overlong_buffer_cfg"]["len"] == 1536
        assert dapo["reward"]["reward_kwargs"]["max_resp_len"] == 8192


@pytest.mark.slow  # the composed configs come from child interpreters (bash dry runs)
def test_extra_arguments_pass_through_as_hydra_overrides(composed):
    papo = _config(composed, "papo+cli")
    assert papo["algorithm"]["papo"]["alpha"] == 0.3
    assert papo["data"]["max_response_length"] == papo["actor_rollout_ref"]["rollout"]["response_length"] == 2048
    # DAPO's overlong shaping follows data.max_response_length (an interpolation, not a copy).
    assert _config(composed, "dapo+cli")["reward"]["reward_kwargs"]["max_resp_len"] == 2048


@pytest.mark.slow  # the composed configs come from child interpreters (bash dry runs)
def test_paths_with_hydra_syntax_characters_arrive_verbatim(composed):
    cfg = _config(composed, "grpo+odd-paths")
    assert cfg["actor_rollout_ref"]["model"]["path"] == "/models/Qwen 2.5=7B,x"
    assert cfg["trainer"]["default_local_dir"] == "/ckpt root/papo-math/grpo-qwen2.5-math-7b-seed1"
    assert cfg["data"]["train_files"] == ["/data dir/t=1.parquet"]


@pytest.mark.slow  # the composed configs come from child interpreters (bash dry runs)
def test_verl_validation_runs_on_the_recipes(composed):
    assert "ppo_micro_batch_size" in composed["grpo+invalid"].get("error", "")


@pytest.mark.slow  # the composed configs come from child interpreters (bash dry runs)
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
    # a recipe selects its preset and nothing else: no override, no launch of its own
    code = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert code == ["set -euo pipefail", 'source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"',
                    f'papo_recipe_main {script.removesuffix("_math.sh")} "$@"']
    assert "-m papo_verl.main" in (RECIPES_DIR / "common.sh").read_text()
