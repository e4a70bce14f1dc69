"""``python -m papo_verl.main [hydra overrides]``: verl's v1 PPO entry point with PAPO's config.

Composes ``papo_verl/config/papo_trainer.yaml`` (verl's ``ppo_trainer`` + ``algorithm.papo``),
runs every check before Ray starts (:mod:`papo_verl.integration.preflight`), then hands over to verl's
``run_ppo`` with its ``TaskRunnerV1``. ``algorithm_preset=<name>`` picks an algorithm's keys
(``papo_verl/config/algorithm_preset/``: grpo, papo, dapo, ...; default papo).
``algorithm.adv_estimator=papo`` selects the PAPO trainer; any other estimator runs verl's stock
synchronous trainer on the same base config.

``PAPO_DRY_RUN=1`` composes, validates (PAPO's and verl's own checks) and prints the fully resolved
config as YAML without starting Ray.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict

from papo_verl.algorithm.config import PapoConfigError

DRY_RUN_ENV = "PAPO_DRY_RUN"
FILE_LOGGER_ENV = "VERL_FILE_LOGGER_PATH"
logger = logging.getLogger("papo_verl")


def reserve_run_files(config: DictConfig) -> Optional[str]:
    """Give this run a metrics log that no earlier run wrote, and store the resolved config beside it.

    verl's ``file`` logger opens ``<VERL_FILE_LOGGER_ROOT>/<project>/<experiment>.jsonl`` in write mode,
    so a resumed or repeated run would erase the earlier log. If that file exists, this run logs to
    ``<experiment>-2.jsonl`` (``-3``, …) instead; the absolute path reaches every Ray process through
    ``ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH``. The resolved config is written
    to the same stem with ``.config.yaml`` (``papo-compare`` reads it). Returns the log path, or None
    when the file logger is not configured.
    """
    loggers = OmegaConf.select(config, "trainer.logger", default=[]) or []
    if "file" not in ([loggers] if isinstance(loggers, str) else list(loggers)):
        return None
    path = os.environ.get(FILE_LOGGER_ENV)
    if not path:
        root = os.path.expanduser(os.getenv("VERL_FILE_LOGGER_ROOT", "."))
        path = os.path.join(root, str(config.trainer.project_name), f"{config.trainer.experiment_name}.jsonl")
    path = os.path.abspath(path)
    stem, ext = os.path.splitext(path)
    candidate, k = path, 1
    while os.path.exists(candidate) or os.path.exists(os.path.splitext(candidate)[0] + ".config.yaml"):
        k += 1
        candidate = f"{stem}-{k}{ext}"
    if candidate != path:
        logger.warning("papo_verl: %s already exists; this run logs to %s (nothing is overwritten)", path, candidate)
    os.makedirs(os.path.dirname(candidate), exist_ok=True)
    with open_dict(config):
        OmegaConf.update(config, f"ray_kwargs.ray_init.runtime_env.env_vars.{FILE_LOGGER_ENV}", candidate,
                         force_add=True)
    with open(os.path.splitext(candidate)[0] + ".config.yaml", "x", encoding="utf-8") as fh:
        fh.write(OmegaConf.to_yaml(config, resolve=True))
    open(candidate, "x").close()  # reserve the name now; verl's logger reopens it for writing
    return candidate


def run(config: DictConfig, dry_run: bool | None = None) -> None:
    import papo_verl.integration.plugin  # noqa: F401  -- registrations in this (driver) process, even without the entry point
    from papo_verl.integration import preflight
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
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise preflight.PreflightError(
            f"verl's config validation failed: {str(cause) or type(cause).__name__}") from err
    if dry_run:
        print(OmegaConf.to_yaml(config, resolve=True))
        return
    log_path = reserve_run_files(config)
    if log_path:
        print(f"papo_verl: metrics log {log_path} (resolved config beside it)")
    run_ppo(config, task_runner_class=TaskRunnerV1)


@hydra.main(config_path="config", config_name="papo_trainer", version_base=None)
def main(config: DictConfig) -> None:
    try:
        run(config)
    except PapoConfigError as err:  # PreflightError included: a clean message, no traceback
        print(f"papo_verl: configuration error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
