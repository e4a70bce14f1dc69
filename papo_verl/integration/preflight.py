"""Checks that run in the driver before Ray starts, and the PAPO trainer-mode selection.

Every error names the offending key (or file) and the fix. :func:`prepare` is called by
``python -m papo_verl.main`` and, through a version-guarded wrapper of
``verl.utils.config.validate_config`` installed by the plugin, by ``python -m verl.trainer.main_ppo``,
so both entry points select the PAPO trainer when ``algorithm.adv_estimator=papo``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf, open_dict

from papo_verl.algorithm.config import PapoConfig, PapoConfigError

__all__ = ["PreflightError", "TRAINER_MODE", "install_validate_config_guard", "prepare", "register_check"]

logger = logging.getLogger("papo_verl")

TRAINER_MODE = "papo"
_SYNC_MODES = ("sync", TRAINER_MODE)
_EXTRA_CHECKS: list[Callable[[DictConfig], None]] = []


class PreflightError(PapoConfigError):
    """The run configuration cannot work; raised before Ray starts."""


def register_check(fn: Callable[[DictConfig], None]) -> Callable[[DictConfig], None]:
    """Add a pre-Ray check (e.g. the CPU backend's accelerator check); it raises PreflightError."""
    if fn not in _EXTRA_CHECKS:
        _EXTRA_CHECKS.append(fn)
    return fn


def _select(config: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(config, key, default=default)


def uses_papo(config: DictConfig) -> bool:
    return _select(config, "algorithm.adv_estimator") == "papo" or _select(config, "trainer.v1.trainer_mode") == TRAINER_MODE


def select_trainer_mode(config: DictConfig) -> None:
    """``adv_estimator=papo`` ⇒ ``trainer.v1.trainer_mode=papo`` (PAPO's synchronous trainer)."""
    estimator = _select(config, "algorithm.adv_estimator")
    mode = _select(config, "trainer.v1.trainer_mode", "sync")
    if estimator == "papo":
        if mode not in _SYNC_MODES:
            raise PreflightError(
                f"trainer.v1.trainer_mode={mode} is not supported with algorithm.adv_estimator=papo: PAPO runs on "
                "verl's synchronous v1 trainer. Remove the override (papo_verl selects trainer_mode=papo itself)."
            )
        if not _select(config, "trainer.use_v1", True):
            raise PreflightError("trainer.use_v1=false: PAPO needs verl's v1 trainer; set trainer.use_v1=true.")
        if mode != TRAINER_MODE:
            with open_dict(config):
                config.trainer.v1.trainer_mode = TRAINER_MODE
            logger.warning("papo_verl: algorithm.adv_estimator=papo selects trainer.v1.trainer_mode=papo")
    elif mode == TRAINER_MODE:
        raise PreflightError(
            f"trainer.v1.trainer_mode=papo needs algorithm.adv_estimator=papo (got {estimator!r}); for a baseline "
            "remove the trainer_mode override."
        )


def check_papo_config(config: DictConfig) -> PapoConfig:
    papo = PapoConfig.from_mapping(_select(config, "algorithm.papo"))
    a = "actor_rollout_ref"
    if _select(config, "critic.enable") or _select(config, "algorithm.adv_estimator") == "gae":
        raise PreflightError("critic.enable=true: PAPO is a critic-free group estimator (no GAE); set critic.enable=false.")
    if _select(config, f"{a}.model.use_fused_kernels", False):
        raise PreflightError(
            f"{a}.model.use_fused_kernels=true hides the logits that PAPO's vocabulary statistics need; "
            f"set {a}.model.use_fused_kernels=false."
        )
    for role in ("actor", "ref"):
        if _select(config, f"{a}.{role}.strategy") == "megatron":
            raise PreflightError(
                f"{a}.{role}.strategy=megatron: PAPO's actor-side statistics are not supported with the Megatron "
                "engine yet; use strategy=fsdp2 (or fsdp)."
            )
    world = int(_select(config, "trainer.n_gpus_per_node", 1) or 1) * int(_select(config, "trainer.nnodes", 1) or 1)
    if papo.validate_every > 0 and _select(config, f"{a}.actor.strategy") != "fsdp2" and world > 1:
        raise PreflightError(
            f"algorithm.papo.validate_every={papo.validate_every} with {a}.actor.strategy="
            f"{_select(config, f'{a}.actor.strategy')} on {world} ranks: the validation reduces gradients through "
            f"FSDP2's sharded parameters; set {a}.actor.strategy=fsdp2 or algorithm.papo.validate_every=0."
        )
    n = _select(config, f"{a}.rollout.n", 1)
    if n is None or int(n) < 2:
        raise PreflightError(f"{a}.rollout.n={n}: PAPO's group-relative advantage needs at least 2 responses per prompt.")
    if _select(config, "algorithm.rollout_correction.bypass_mode", False):
        raise PreflightError(
            "algorithm.rollout_correction.bypass_mode=true skips the θ_old forward pass that yields PAPO's entropy and "
            "Σπ² statistics; set bypass_mode=false."
        )
    if _select(config, "distillation.enabled", False):
        raise PreflightError("distillation.enabled=true: PAPO installs its own policy loss and cannot run with on-policy "
                             "distillation yet; disable distillation.")
    plugins = os.getenv("VERL_USE_EXTERNAL_PLUGINS", "auto").strip().lower()
    modules = os.getenv("VERL_USE_EXTERNAL_MODULES", "")
    if plugins != "auto" and "papo_verl" not in plugins.split(",") and "papo_verl" not in modules:
        raise PreflightError(
            f"VERL_USE_EXTERNAL_PLUGINS={plugins} disables the papo_verl entry point, so Ray workers would not register "
            "PAPO; add papo_verl to it or set VERL_USE_EXTERNAL_MODULES=papo_verl.integration.plugin."
        )
    return papo


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_model_and_data(config: DictConfig) -> None:
    """Local model folder, tokenizer chat template and parquet columns, checked without loading anything big."""
    path = _select(config, "actor_rollout_ref.model.path")
    if path:
        expanded = os.path.expanduser(str(path))
        if os.path.isdir(expanded):
            if not os.path.isfile(os.path.join(expanded, "config.json")):
                raise PreflightError(f"actor_rollout_ref.model.path={path}: the folder has no config.json (not a HF model folder).")
            _check_chat_template(config, expanded)
        elif os.path.exists(expanded) or not _HUB_ID.match(str(path)) or os.getenv("HF_HUB_OFFLINE") == "1":
            raise PreflightError(
                f"actor_rollout_ref.model.path={path}: no model folder there. Point it at a local HF folder "
                "(config.json, weights, tokenizer) or a hub id that is in the local HF cache."
            )
    for key in ("data.train_files", "data.val_files"):
        files = _select(config, key)
        if files is None:
            continue
        for f in ([files] if isinstance(files, str) else list(files)):
            _check_parquet(config, key, os.path.expanduser(str(f)))


def _check_chat_template(config: DictConfig, folder: str) -> None:
    if _select(config, "data.apply_chat_template_kwargs") is None and not _select(config, "data.return_raw_chat", True):
        return
    cfg_path = os.path.join(folder, "tokenizer_config.json")
    template = None
    if os.path.isfile(cfg_path):
        with open(cfg_path, encoding="utf-8") as fh:
            template = json.load(fh).get("chat_template")
    if template is None and os.path.isfile(os.path.join(folder, "chat_template.jinja")):
        template = "file"
    if template is None and os.path.isfile(os.path.join(folder, "tokenizer.json")):
        raise PreflightError(
            f"actor_rollout_ref.model.path={folder}: the tokenizer has no chat template, but verl formats prompts with "
            "tokenizer.apply_chat_template; add a chat_template to tokenizer_config.json (or chat_template.jinja)."
        )


def _check_parquet(config: DictConfig, key: str, path: str) -> None:
    if not path.endswith(".parquet"):
        return
    if not os.path.isfile(path):
        raise PreflightError(f"{key}: file {path} does not exist (prepare the data first, see examples/data_preprocess/).")
    import pyarrow.parquet as pq

    columns = set(pq.read_schema(path).names)
    prompt_key = _select(config, "data.prompt_key", "prompt")
    reward_key = _select(config, "data.reward_fn_key", "data_source")
    missing = [c for c in (prompt_key, reward_key, "reward_model") if c not in columns]
    if missing:
        raise PreflightError(
            f"{key}: {path} lacks verl's column(s) {missing} (has {sorted(columns)}); verl's RL schema needs "
            f"'{prompt_key}' (chat messages), '{reward_key}' and 'reward_model' {{style, ground_truth}}."
        )


def prepare(config: DictConfig, check_files: bool = True) -> DictConfig:
    """Select the trainer mode and run every pre-Ray check; returns the (updated) config.

    ``check_files=False`` (dry runs) reports a missing model folder or data file, or missing host
    hardware, as a warning: a cluster recipe can be checked on a laptop.
    """
    select_trainer_mode(config)
    if uses_papo(config):
        check_papo_config(config)
    for check in [check_model_and_data, *_EXTRA_CHECKS]:  # files and host checks (e.g. an absent accelerator)
        try:
            check(config)
        except PreflightError as err:
            if check_files:
                raise
            logger.warning("papo_verl (dry run): %s", err)
    return config


# ----------------------------------------------------------------------------------------------
# python -m verl.trainer.main_ppo: run the same preparation inside verl's validate_config
# ----------------------------------------------------------------------------------------------
_GUARD_ATTR = "__papo_verl_guard__"


def install_validate_config_guard() -> None:
    """Wrap ``verl.utils.config.validate_config`` (verl 0.9.x only) so main_ppo runs :func:`prepare` first.

    ``verl.trainer.main_ppo`` binds the name at import time, after ``import verl`` has loaded this
    plugin, so it sees the wrapper. Only PAPO configs are touched; every other run is passed through.
    """
    import verl.utils.config as verl_config

    original = verl_config.validate_config
    if getattr(original, _GUARD_ATTR, False):
        return

    def validate_config(config, *args, **kwargs):
        if isinstance(config, DictConfig) and uses_papo(config):
            prepare(config)
        return original(config, *args, **kwargs)

    validate_config.__wrapped__ = original
    validate_config.__doc__ = original.__doc__
    setattr(validate_config, _GUARD_ATTR, True)
    verl_config.validate_config = validate_config


def register() -> list[str]:
    install_validate_config_guard()
    return ["validate_config:papo-preflight"]
