"""Hydra configs: papo_trainer.yaml (extends verl's ppo_trainer), papo_trainer_cpu.yaml and the algorithm presets.

A package so that Hydra finds them as ``pkg://papo_verl.config``. The ``algorithm.papo`` dataclass is
:class:`papo_verl.algorithm.config.PapoConfig`."""
