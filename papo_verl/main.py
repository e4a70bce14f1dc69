"""``python -m papo_verl.main [hydra overrides]``: verl's v1 PPO entry point with PAPO's config.

Composes ``papo_verl/config/papo_trainer.yaml`` (verl's ``ppo_trainer`` + ``algorithm.papo``),
runs every check before Ray starts (:mod:`papo_verl.preflight`), then hands over to verl's
``run_ppo`` with its ``TaskRunnerV1``. ``algorithm.adv_estimator=papo`` selects the PAPO trainer;
any other estimator runs verl's stock synchronous trainer on the same base config.

``PAPO_DRY_RUN=1`` composes, validates (PAPO's and verl's own checks) and prints the fully resolved
config as YAML without starting Ray.
"""

from __future__ import annotations

import os
import sys

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from papo_verl.config import PapoConfigError

DRY_RUN_ENV = "PAPO_DRY_RUN"


def run(config: DictConfig, dry_run: bool | None = None) -> None:
    import papo_verl.plugin  # noqa: F401  -- registrations in this (driver) process, even without the entry point
    from papo_verl import preflight
    from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    if dry_run is None:
        dry_run = os.getenv(DRY_RUN_ENV, "0").lower() in ("1", "true", "yes")
    preflight.prepare(config, check_files=not dry_run)
    auto_set_device(config)
    verl_validate = getattr(validate_config, "__wrapped__", validate_config)  # preflight already ran
    try:
        verl_validate(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    except (AssertionError, ValueError, InstantiationException) as err:
        raise preflight.PreflightError(f"verl's config validation failed: {_root_cause(err)}") from err
    if dry_run:
        print(OmegaConf.to_yaml(config, resolve=True))
        return
    run_ppo(config, task_runner_class=TaskRunnerV1)


def _root_cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return str(err) or type(err).__name__


@hydra.main(config_path="config", config_name="papo_trainer", version_base=None)
def main(config: DictConfig) -> None:
    try:
        run(config)
    except PapoConfigError as err:  # PreflightError included: a clean message, no traceback
        print(f"papo_verl: configuration error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
