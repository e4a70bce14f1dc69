"""The patches of verl internals refuse any verl outside 0.9.x, loudly and without touching verl."""

import pytest

from papo_verl.cpu import activate
from papo_verl.cpu.compat import (
    UnsupportedVerlInternals,
    map_engine_device,
    patch_process_group_backend,
    register_rollout_adapter,
    require_verl_internals,
)


@pytest.mark.parametrize("version", ["0.10.0", "0.8.5", "1.0.0", "0.10.0.dev0"])
def test_other_verl_versions_are_refused_with_a_clear_message(version):
    with pytest.raises(UnsupportedVerlInternals) as err:
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
    with pytest.raises(UnsupportedVerlInternals, match="initialize_global_process_group_ray"):
        patch_process_group_backend(version="0.10.0")
    with pytest.raises(UnsupportedVerlInternals, match="_ROLLOUT_REGISTRY"):
        register_rollout_adapter("probe_backend", "a.b.C", version="0.10.0")
    with pytest.raises(UnsupportedVerlInternals):
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
