"""Pre-Ray check: a run asking for an absent accelerator (or a setting CPU cannot run) fails early,
naming the key and pointing at papo_trainer_cpu; the shipped CPU config passes it; dry runs (which
validate configs for another machine) only warn."""

import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from papo_verl.cpu import checks
from papo_verl.cpu.checks import check_cpu_backend
from papo_verl.preflight import PreflightError

CONFIG_DIR = os.path.join(os.path.dirname(__import__("papo_verl").__file__), "config")


def cpu_config(**changes):
    """The CPU settings of papo_trainer_cpu.yaml as a plain config, with dotted-key ``changes``."""
    cfg = OmegaConf.create({
        "actor_rollout_ref": {
            "model": {"override_config": {"attn_implementation": "sdpa"}},
            "actor": {"strategy": "fsdp2"}, "ref": {"strategy": "fsdp2"},
            "rollout": {"name": "hf_cpu", "engine_kwargs": {"hf_cpu": {"max_batch_size": 8}}},
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
    ("actor_rollout_ref.rollout.name", "vllm", "actor_rollout_ref.rollout.name=vllm needs a GPU"),
    ("actor_rollout_ref.rollout.name", "sglang", "actor_rollout_ref.rollout.name=sglang needs a GPU"),
    ("trainer.device", "cuda", "trainer.device=cuda"),
    ("actor_rollout_ref.actor.strategy", "fsdp", "actor_rollout_ref.actor.strategy=fsdp (FSDP1)"),
    ("actor_rollout_ref.ref.strategy", "megatron", "actor_rollout_ref.ref.strategy=megatron"),
    ("actor_rollout_ref.model.override_config.attn_implementation", "flash_attention_2", "attn_implementation"),
    ("ray_kwargs.ray_init.num_gpus", 1, "ray_kwargs.ray_init.num_gpus=1"),
    ("actor_rollout_ref.rollout.engine_kwargs.hf_cpu.batch_size", 8, "engine_kwargs.hf_cpu.batch_size"),
    ("actor_rollout_ref.rollout.engine_kwargs.hf_cpu.dtype", "fp8", "engine_kwargs.hf_cpu.dtype"),
    ("trainer.v1.trainer_mode", "separate_async", "trainer.v1.trainer_mode=separate_async"),
])
def test_accelerator_requests_and_cpu_incompatible_settings_fail_naming_the_key(cpu_host, key, value, named):
    with pytest.raises(PreflightError) as err:
        check_cpu_backend(cpu_config(**{key: value}))
    assert named in str(err.value)
    if key == "actor_rollout_ref.rollout.name":
        assert "--config-name papo_trainer_cpu" in str(err.value)


def test_configs_without_a_rollout_choice_are_left_to_verl(cpu_host):
    check_cpu_backend(cpu_config(**{"actor_rollout_ref.rollout.name": None, "trainer.device": "cuda",
                                    "actor_rollout_ref.actor.strategy": "fsdp"}))


def test_dry_runs_warn_instead_of_failing(cpu_host, monkeypatch, caplog):
    """A cluster recipe (vllm) dry-run on a laptop: prepare(check_files=False) (PAPO_DRY_RUN=1) only warns."""
    import papo_verl.plugin  # noqa: F401  -- registers the check with preflight, as in every verl process
    from papo_verl.preflight import prepare

    gpu_run = cpu_config(**{"actor_rollout_ref.rollout.name": "vllm", "algorithm.adv_estimator": "grpo"})
    with caplog.at_level("WARNING", logger="papo_verl"):
        prepare(gpu_run, check_files=False)
    assert "rollout.name=vllm needs a GPU" in caplog.text and "dry run" in caplog.text
    with pytest.raises(PreflightError, match="rollout.name=vllm needs a GPU"):
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
        check_cpu_backend(cpu_config(**{"actor_rollout_ref.rollout.name": "vllm"}))


def test_accelerator_host_gpu_runs_pass_and_hf_cpu_asks_for_the_force_flag(gpu_host, monkeypatch):
    check_cpu_backend(cpu_config(**{"actor_rollout_ref.rollout.name": "vllm", "trainer.device": "cuda",
                                    "actor_rollout_ref.actor.strategy": "fsdp"}))
    with pytest.raises(PreflightError, match="VERL_PLATFORM=cpu"):
        check_cpu_backend(cpu_config())
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    check_cpu_backend(cpu_config())


def test_the_check_is_registered_with_preflight():
    import papo_verl.plugin  # noqa: F401
    from papo_verl import preflight

    assert check_cpu_backend in preflight._EXTRA_CHECKS


def compose(name, overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return hydra_compose(config_name=name, overrides=overrides)


def test_papo_trainer_cpu_composes_on_papo_trainer_and_passes_every_pre_ray_check(cpu_host):
    from papo_verl import preflight

    cfg = compose("papo_trainer_cpu", ["actor_rollout_ref.rollout.n=2", "trainer.n_gpus_per_node=2"])
    base = OmegaConf.load(os.path.join(CONFIG_DIR, "papo_trainer.yaml"))
    assert cfg.algorithm.papo == base.algorithm.papo and cfg.algorithm.adv_estimator == "papo"
    assert cfg.actor_rollout_ref.rollout.name == "hf_cpu" and cfg.actor_rollout_ref.actor.strategy == "fsdp2"
    assert OmegaConf.select(cfg, "ray_kwargs.ray_init.num_gpus") == 2  # follows trainer.n_gpus_per_node
    preflight.prepare(cfg, check_files=False)  # PAPO's checks + the CPU check


def test_main_refuses_a_gpu_rollout_before_starting_ray(tiny_model_dir, tmp_path):
    """`python -m papo_verl.main` (base config, vllm rollout) on this CPU host: exit 2, message, no Ray."""
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
    assert "actor_rollout_ref.rollout.name=vllm needs a GPU" in proc.stderr
    assert "--config-name papo_trainer_cpu" in proc.stderr
    assert "ray init kwargs" not in proc.stdout + proc.stderr
