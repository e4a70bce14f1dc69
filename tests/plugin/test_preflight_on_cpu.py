"""Configuration errors are caught before Ray starts, naming the key and the fix; main_ppo selects PAPO."""

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

import papo_verl
import verl  # noqa: F401
from papo_verl.algorithm.config import PapoConfigError
from papo_verl.cpu.detect import accelerator_evidence
from papo_verl.integration.preflight import PreflightError, prepare
from papo_verl.demo.tiny import build_tokenizer

CONFIG_DIR = os.path.join(os.path.dirname(papo_verl.__file__), "config")
VERL_CONFIG_DIR = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")


# the config that can run on this host (these tests run on CPU-only CI machines and on GPU hosts)
HOST_CONFIG = "papo_trainer" if accelerator_evidence() else "papo_trainer_cpu"


def papo_config(*overrides, name=HOST_CONFIG, config_dir=CONFIG_DIR):
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name=name, overrides=["actor_rollout_ref.rollout.n=4", *overrides])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("model"))
    build_tokenizer(d)
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump({"model_type": "qwen2"}, fh)
    return d


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    good = str(d / "good.parquet")
    pd.DataFrame([{"data_source": "x", "prompt": [{"role": "user", "content": "1+1"}], "ability": "math",
                   "reward_model": {"style": "rule", "ground_truth": "2"}, "extra_info": {"index": 0}}]).to_parquet(good)
    bad = str(d / "bad.parquet")
    pd.DataFrame([{"question": "1+1", "answer": "2"}]).to_parquet(bad)
    return good, bad


def files(model_dir, good):
    return [f"actor_rollout_ref.model.path={model_dir}", f"data.train_files={good}", f"data.val_files={good}"]


def test_papo_selects_its_trainer_mode(model_dir, parquet):
    cfg = papo_config(*files(model_dir, parquet[0]))
    prepare(cfg)
    assert cfg.trainer.v1.trainer_mode == "papo"
    grpo = papo_config("algorithm.adv_estimator=grpo", *files(model_dir, parquet[0]))
    prepare(grpo)
    assert grpo.trainer.v1.trainer_mode == "sync"


@pytest.mark.parametrize("overrides,match", [
    (["algorithm.papo.alpha=1.5"], r"algorithm\.papo\.alpha"),
    (["+algorithm.papo.alfa=0.3"], r"algorithm\.papo\.alfa"),
    (["critic.enable=true"], r"critic\.enable"),
    (["algorithm.adv_estimator=papo", "actor_rollout_ref.model.use_fused_kernels=true"], "use_fused_kernels"),
    (["actor_rollout_ref.actor.strategy=megatron"], "Megatron"),
    (["actor_rollout_ref.rollout.n=1"], r"rollout\.n=1"),
    (["trainer.v1.trainer_mode=colocate_async"], "trainer_mode=colocate_async"),
    (["trainer.use_v1=false"], "use_v1"),
    (["algorithm.adv_estimator=grpo", "trainer.v1.trainer_mode=papo"], "needs algorithm.adv_estimator=papo"),
    (["algorithm.rollout_correction.bypass_mode=true"], "bypass_mode"),
    (["algorithm.papo.controller=pid"], r"algorithm\.papo\.controller: must be one of \('trend', 'target'\)"),
    (["algorithm.papo.split=sign"], r"algorithm\.papo\.split"),
    (["algorithm.papo.target_knots=[[0,1],[1,0.5]]"], "controller=target"),
    (["actor_rollout_ref.actor.strategy=fsdp", "trainer.n_gpus_per_node=2", "actor_rollout_ref.rollout.n=8",
      "algorithm.papo.validate_every=5"], r"validate_every=5 with actor_rollout_ref\.actor\.strategy=fsdp"),
])
def test_bad_configs_fail_with_the_key(model_dir, parquet, overrides, match):
    cfg = papo_config(*files(model_dir, parquet[0]), *overrides)
    config_error = "papo." in overrides[0] and "validate_every" not in " ".join(overrides)
    with pytest.raises(PapoConfigError if config_error else PreflightError, match=match):
        prepare(cfg)


@pytest.mark.slow  # a child python imports verl
def test_bad_files_fail_clearly(model_dir, parquet, tmp_path):
    good, bad = parquet
    with pytest.raises(PreflightError, match=r"lacks verl's column\(s\) \['prompt', 'data_source', 'reward_model'\]"):
        prepare(papo_config(*files(model_dir, good), f"data.train_files={bad}"))
    with pytest.raises(PreflightError, match="does not exist"):
        prepare(papo_config(*files(model_dir, good), f"data.val_files={tmp_path}/missing.parquet"))
    with pytest.raises(PreflightError, match="no model folder"):
        prepare(papo_config(*files(model_dir, good), f"actor_rollout_ref.model.path={tmp_path}/nope"))
    empty = tmp_path / "empty_model"
    empty.mkdir()
    with pytest.raises(PreflightError, match="no config.json"):
        prepare(papo_config(*files(model_dir, good), f"actor_rollout_ref.model.path={empty}"))
    no_template = tmp_path / "no_template"
    build_tokenizer(str(no_template))
    (no_template / "chat_template.jinja").unlink()
    tok_cfg = json.load(open(no_template / "tokenizer_config.json"))
    tok_cfg.pop("chat_template", None)
    json.dump(tok_cfg, open(no_template / "tokenizer_config.json", "w"))
    (no_template / "config.json").write_text('{"model_type": "qwen2"}')
    with pytest.raises(PreflightError, match="no chat template"):
        prepare(papo_config(*files(model_dir, good), f"actor_rollout_ref.model.path={no_template}"))
    # dry runs only warn about files
    prepare(papo_config(*files(model_dir, good), f"data.train_files={tmp_path}/missing.parquet"), check_files=False)


CPU_OVERRIDES = [] if accelerator_evidence() else [
    "actor_rollout_ref.rollout.name=vllm", "+actor_rollout_ref.rollout.enable_sleep_mode=false",
    "actor_rollout_ref.rollout.free_cache_engine=false", "actor_rollout_ref.actor.strategy=fsdp2",
    "actor_rollout_ref.ref.strategy=fsdp2", "trainer.device=cpu", "+ray_kwargs.ray_init.num_gpus=1", "trainer.n_gpus_per_node=1",
    "+actor_rollout_ref.model.override_config.attn_implementation=sdpa", "actor_rollout_ref.rollout.tensor_model_parallel_size=1"]


def test_main_ppo_validate_config_is_wrapped_and_selects_papo(model_dir, parquet):
    import verl.trainer.main_ppo as main_ppo

    assert getattr(main_ppo.validate_config, "__papo_verl_guard__", False)
    cfg = papo_config("algorithm.adv_estimator=papo", *files(model_dir, parquet[0]),
                      "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
                      "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
                      "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=4", *CPU_OVERRIDES,
                      name="ppo_trainer", config_dir=VERL_CONFIG_DIR)
    main_ppo.validate_config(cfg, use_reference_policy=False, use_critic=False)
    assert cfg.trainer.v1.trainer_mode == "papo"
    grpo = papo_config("algorithm.adv_estimator=grpo", *files(model_dir, parquet[0]),
                       "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
                       "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2", *CPU_OVERRIDES,
                       name="ppo_trainer", config_dir=VERL_CONFIG_DIR)
    main_ppo.validate_config(grpo, use_reference_policy=False, use_critic=False)
    assert grpo.trainer.v1.trainer_mode == "sync"


@pytest.mark.slow  # starts the training entry points in a child python
@pytest.mark.parametrize("module,args", [
    ("papo_verl.main", ["algorithm.papo.alpha=2"]),
    ("verl.trainer.main_ppo", ["algorithm.adv_estimator=papo", "+algorithm.papo.alpha=2"]),
])
@pytest.mark.slow  # a child python imports verl
def test_entry_points_fail_before_ray_starts(module, args):
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", module, *args, "actor_rollout_ref.rollout.n=4"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "algorithm.papo.alpha" in out and "must be in [0, 1)" in out
    assert "ray init kwargs" not in out and "Started a local Ray instance" not in out
    assert time.time() - start < 120
