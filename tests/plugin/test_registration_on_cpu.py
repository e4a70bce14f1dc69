"""The verl.plugins entry point registers PAPO in every process that imports verl; version guard."""

import os
import subprocess
import sys
import textwrap

import pytest


def run_python(code, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, timeout=300)


@pytest.mark.slow  # a child python imports verl
def test_plain_import_verl_registers_papo_in_a_fresh_interpreter():
    proc = run_python("""
        import sys
        import verl
        from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, get_adv_estimator_fn
        assert "papo" in ADV_ESTIMATOR_REGISTRY, sorted(ADV_ESTIMATOR_REGISTRY)
        fn = get_adv_estimator_fn("papo")
        print("OK", fn.__module__, "papo_verl.integration.plugin" in sys.modules)
    """, VERL_USE_EXTERNAL_MODULES="")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK papo_verl.integration.estimator True" in proc.stdout


@pytest.mark.slow  # starts Ray
def test_ray_worker_that_imports_verl_sees_papo():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        @ray.remote
        def probe():
            import os as _os

            import verl  # noqa: F401
            from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

            return _os.getpid(), "papo" in ADV_ESTIMATOR_REGISTRY

        pid, seen = ray.get(probe.remote(), timeout=240)
        assert pid != os.getpid() and seen
    finally:
        ray.shutdown()


def test_unsupported_verl_version_refuses_with_a_clear_message():
    from papo_verl.cpu import compat
    from papo_verl.integration.plugin import UnsupportedVerlVersion, check_verl_version

    assert check_verl_version("0.9.1") == "0.9.1" and check_verl_version("0.9.7") == "0.9.7"
    for bad in ("0.10.0", "0.8.5", "1.0.0"):
        with pytest.raises(UnsupportedVerlVersion) as err:
            check_verl_version(bad)
        msg = str(err.value)
        assert f"the installed verl is {bad}." in msg and "0.9.x" in msg and "NOT registered" in msg
        assert msg.endswith("pip install 'verl[verl-core]==0.9.1'.")
    # the CPU backend's guard is the same check (one version rule, one message)
    assert compat.check_verl_version is check_verl_version


@pytest.mark.slow  # a child python imports verl
def test_import_time_refusal_logs_loudly_and_registers_nothing():
    """Simulate verl 0.10 at plugin import: an ERROR log names both versions; 'papo' stays unregistered."""
    proc = run_python("""
        import sys
        import verl
        from verl.trainer.ppo import core_algos
        core_algos.ADV_ESTIMATOR_REGISTRY.pop("papo", None)
        del sys.modules["papo_verl.integration.plugin"]
        verl.__version__ = "0.10.0"
        try:
            import papo_verl.integration.plugin
        except Exception as e:
            print("RAISED", type(e).__name__)
        print("REGISTERED", "papo" in core_algos.ADV_ESTIMATOR_REGISTRY)
    """)
    assert "RAISED UnsupportedVerlVersion" in proc.stdout
    assert "REGISTERED False" in proc.stdout
    assert "PAPO could not be registered" in proc.stderr and "0.10.0" in proc.stderr and "0.9.1" in proc.stderr


@pytest.mark.slow  # a child python imports verl
@pytest.mark.parametrize("module", ["papo_verl.integration.trainer", "papo_verl.integration.engine", "papo_verl.integration.loss", "papo_verl.cpu"])
def test_importing_a_component_first_still_registers_everything(module):
    """`import papo_verl.integration.trainer` before verl: verl loads the plugin while the module is half-defined."""
    proc = run_python(f"""
        import {module}
        from verl.trainer.ppo.v1 import get_trainer_cls
        from verl.workers.engine.base import EngineRegistry
        from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY
        print("OK", get_trainer_cls("papo").__name__, EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__,
              "papo" in ADV_ESTIMATOR_REGISTRY)
    """)
    assert "OK PapoTrainer PapoFSDPEngineWithLMHead True" in proc.stdout, proc.stderr[-3000:]
    assert "could not be registered" not in proc.stderr
