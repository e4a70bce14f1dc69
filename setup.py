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
        "psutil",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-timeout"],
        # Cluster extras: never installed on CPU machines (they pull CUDA builds of torch).
        "gpu": ["vllm", "flash-attn"],
    },
    entry_points={
        "verl.plugins": ["papo_verl = papo_verl.plugin"],
    },
)
