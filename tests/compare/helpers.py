"""Writing run logs for the papo-compare tests with the real writers.

* resolved configs: papo_verl's real ``papo_trainer`` composition (Hydra), varied per algorithm with
  the recipes' algorithm keys, and stored by ``papo_verl.main.reserve_run_files`` (the ``-2`` names);
* metrics: verl's ``Tracking`` with its ``file`` (FileLogger), ``tensorboard`` (SummaryWriter) and
  ``wandb`` (``wandb.init`` in offline mode) backends.
"""

from __future__ import annotations

import copy
import math
import os
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Optional
from unittest import mock

import numpy as np
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "papo_verl" / "config"
A = "actor_rollout_ref.actor."

# Algorithm keys as the presets set them (papo_verl/config/algorithm_preset/); seeds as recipes/common.sh sets them.
ALGORITHM_KEYS: dict[str, dict[str, object]] = {
    "grpo": {"algorithm.adv_estimator": "grpo"},
    "papo": {"algorithm.adv_estimator": "papo", "trainer.v1.trainer_mode": "papo"},
    "dapo": {"algorithm.adv_estimator": "grpo", A + "clip_ratio_high": 0.28, A + "clip_ratio_c": 10.0,
             "algorithm.filter_groups.enable": True, "algorithm.filter_groups.metric": "acc"},
    "papo+dapo": {"algorithm.adv_estimator": "papo", "trainer.v1.trainer_mode": "papo",
                  A + "clip_ratio_high": 0.28, A + "clip_ratio_c": 10.0,
                  "algorithm.filter_groups.enable": True, "algorithm.filter_groups.metric": "acc"},
    "clip_cov": {"algorithm.adv_estimator": "grpo", A + "policy_loss.loss_mode": "clip_cov",
                 A + "clip_ratio_low": 1.0, A + "clip_ratio_high": 1.0},
    "kl_cov": {"algorithm.adv_estimator": "grpo", A + "policy_loss.loss_mode": "kl_cov"},
}

_BASE: Optional[DictConfig] = None


def base_config() -> DictConfig:
    """papo_verl's composed ``papo_trainer`` config (verl's ppo_trainer + algorithm.papo), once per session."""
    global _BASE
    if _BASE is None:
        from hydra import compose, initialize_config_dir

        import papo_verl.config  # noqa: F401  -- puts verl's config directory on Hydra's search path

        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            _BASE = compose("papo_trainer", overrides=["trainer.logger=[console,file]"])
    return copy.deepcopy(_BASE)


def run_config(algorithm: str, seed: Optional[int], experiment: str, project: str = "cmp",
               seed_keys: bool = True, **overrides) -> DictConfig:
    """A resolved-config-to-be for one run: base + the algorithm's keys + seeds + ``overrides``
    (dotted keys with ``__`` for ``.``, or pass a dict as ``extra``)."""
    config = base_config()
    values: dict[str, object] = {"trainer.project_name": project, "trainer.experiment_name": experiment}
    values.update(ALGORITHM_KEYS[algorithm])
    if seed is not None and seed_keys:
        values.update({"data.seed": seed, "actor_rollout_ref.rollout.seed": seed, A + "data_loader_seed": seed})
    values.update(overrides.pop("extra", {}))
    values.update({k.replace("__", "."): v for k, v in overrides.items()})
    for key, value in values.items():
        OmegaConf.update(config, key, value, force_add=True)
    return config


@contextmanager
def env(**values: Optional[str]):
    """Set (or, with None, remove) environment variables for the block."""
    with mock.patch.dict(os.environ):
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield


def synthetic_metrics(algorithm: str, seed: int, steps: Iterable[int], val_every: int = 2,
                      nan_step: Optional[int] = None) -> dict[int, dict[str, float]]:
    """Per step, the metrics verl (and PAPO, for papo runs) log, with seeded random values.

    ``val_every``: validation metrics at steps divisible by it. ``nan_step``: ``actor/entropy`` is
    NaN there (orjson writes null, wandb NaN).
    """
    rng = np.random.default_rng([seed, zlib.crc32(algorithm.encode())])
    out: dict[int, dict[str, float]] = {}
    for step in steps:
        m = {
            "training/global_step": float(step),
            "critic/score/mean": float(rng.uniform(0, 1)),
            "critic/rewards/mean": float(rng.uniform(0, 1)),
            "actor/entropy": float(rng.uniform(0.5, 2.0)) if step != nan_step else math.nan,
            "response_length/mean": float(rng.uniform(10, 200)),
            "actor/pg_clipfrac": float(rng.uniform(0, 0.1)),
        }
        if step % val_every == 0:
            m["val-core/gsm8k/acc/mean@1"] = float(rng.uniform(0, 1))
        if algorithm.startswith("papo"):
            m.update({
                "papo/tilt": float(rng.uniform(-1, 1)),
                "papo/expand_weight": float(rng.uniform(0.5, 1.5)),
                "papo/contract_weight": float(rng.uniform(0.5, 1.5)),
                "papo/token_share_expand": float(rng.uniform(0, 1)),
                "papo/entropy": float(rng.uniform(0.5, 2.0)),
                "papo/entropy_level": float(rng.uniform(0.5, 2.0)),
                "papo/entropy_level_sd": float(rng.uniform(0.01, 0.05)),
                "papo/entropy_slope_snr": float(rng.normal(0, 2)),
            })
            if step % val_every == 0:  # the same-batch validation runs every few steps
                m.update({
                    "papo/val/branch_dH_expand": float(rng.uniform(0, 1e-3)),
                    "papo/val/branch_dH_contract": float(rng.uniform(-1e-3, 0)),
                    "papo/val/sign_split_dH_neg_adv": float(rng.normal(0, 1e-3)),
                    "papo/val/sign_split_dH_pos_adv": float(rng.normal(0, 1e-3)),
                    "papo/val/dH_measured": float(rng.normal(0, 1e-2)),
                    "papo/val/dH_first_order": float(rng.normal(0, 1e-2)),
                    "papo/val/sign_agreement": float(rng.uniform(0.4, 0.6)),
                    "papo/val/sign_agreement_sampled_only": float(rng.uniform(0.4, 0.6)),
                    "papo/val/token_corr_pearson": float(rng.uniform(0, 0.5)),
                })
        out[step] = m
    return out


def _log(tracking, metrics: dict[int, dict[str, float]]) -> None:
    for step in sorted(metrics):
        tracking.log(data=metrics[step], step=step)
    tracking.finish()


def write_file_run(root: Path, config: DictConfig, metrics: dict[int, dict[str, float]]) -> Path:
    """papo_verl.main's reserve_run_files (name + resolved config) then verl's FileLogger; returns the log."""
    from verl.utils.tracking import Tracking

    from papo_verl.main import reserve_run_files

    with env(VERL_FILE_LOGGER_ROOT=str(root), VERL_FILE_LOGGER_PATH=None):
        path = reserve_run_files(config)
    with env(VERL_FILE_LOGGER_PATH=path):
        tracking = Tracking(config.trainer.project_name, config.trainer.experiment_name, default_backend=["file"],
                            config=OmegaConf.to_container(config, resolve=True))
        _log(tracking, metrics)
    return Path(path)


def write_tensorboard_run(directory: Path, project: str, experiment: str, metrics: dict[int, dict[str, float]]) -> Path:
    """verl's tensorboard backend (torch SummaryWriter.add_scalar) into ``directory``."""
    from verl.utils.tracking import Tracking

    with env(TENSORBOARD_DIR=str(directory)):
        _log(Tracking(project, experiment, default_backend=["tensorboard"]), metrics)
    return directory


def write_wandb_run(wandb_root: Path, config: DictConfig, metrics: dict[int, dict[str, float]],
                    backends: tuple[str, ...] = ("wandb",)) -> Path:
    """verl's wandb backend (wandb.init offline, the config as a dict); returns the offline-run directory."""
    from verl.utils.tracking import Tracking

    wandb_root.mkdir(parents=True, exist_ok=True)
    before = set((wandb_root / "wandb").glob("offline-run-*")) if (wandb_root / "wandb").exists() else set()
    import wandb

    with env(WANDB_MODE="offline", WANDB_DIR=str(wandb_root), WANDB_SILENT="true", WANDB_CONSOLE="off",
             WANDB_DISABLE_GIT="true", WANDB_ENTITY=None, WANDB_API_KEY=None):
        wandb.teardown()  # wandb reads WANDB_DIR once per process set-up: start a fresh one for this root
        try:
            tracking = Tracking(config.trainer.project_name, config.trainer.experiment_name,
                                default_backend=list(backends), config=OmegaConf.to_container(config, resolve=True))
            _log(tracking, metrics)
        finally:
            wandb.teardown()
    (run_dir,) = set((wandb_root / "wandb").glob("offline-run-*")) - before
    deadline = time.monotonic() + 60  # wandb's service writes the log asynchronously
    while not list(run_dir.glob("run-*.wandb")):
        assert time.monotonic() < deadline, f"wandb did not write its log into {run_dir} within 60 s"
        time.sleep(0.1)
    return run_dir


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (asserting the PNG signature)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def write_plain_file_log(path: Path, metrics: dict[int, dict[str, float]]) -> Path:
    """verl's FileLogger at ``path`` without a resolved config beside it (e.g. a plain main_ppo run)."""
    from verl.utils.tracking import Tracking

    path.parent.mkdir(parents=True, exist_ok=True)
    with env(VERL_FILE_LOGGER_PATH=str(path)):
        _log(Tracking("plain", path.stem, default_backend=["file"]), metrics)
    return path
