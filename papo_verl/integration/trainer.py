"""The PAPO trainer mode for verl's v1 trainer (``trainer.v1.trainer_mode=papo``).

``PapoTrainer`` is verl's synchronous v1 trainer with four PAPO stages:

1. ``_compute_old_log_prob``: the θ_old forward also returns ``Σπ²``, ``Σπ² log π`` and the
   polarity coefficient ``P_t`` (flag :data:`papo_verl.integration.engine.STATS_FLAG`; the entropy comes from the
   same single pass over the logits).
2. ``_compute_advantage``: the token-mean entropy of the batch and its standard error (prompts as
   sampling units) feed the driver-side :class:`~papo_verl.algorithm.tracker.EntropyTracker`; the registered ``papo`` estimator turns the GRPO base
   advantage and the polarity statistics into reweighted advantages and per-token branch labels,
   which are written back to TransferQueue with the returns.
3. ``_update_actor``: the step's phase weights are broadcast to the actor workers with the batch
   (``extra_info["papo"]``); the installed :class:`~papo_verl.integration.loss.PapoPolicyLoss` wraps verl's
   ``ppo_loss`` and reports per-branch metrics, turned into shares here. Every ``validate_every``
   steps two extra actor calls validate polarity on the same batch (:mod:`papo_verl.algorithm.validation`): the
   branch response at θ_old before the update, the same batch's entropies at θ_new after it.
4. ``_save_checkpoint`` / ``_load_checkpoint``: the tracker and validation history are saved as
   ``global_step_N/papo_state.json`` before verl marks the checkpoint complete, and restored on resume.

Everything logged goes through verl's ``Tracking`` (console, wandb, tensorboard, file) as ``papo/*``
and ``actor/papo/*`` (README: metrics glossary).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

import numpy as np
import torch
import transfer_queue as tq
from tensordict import TensorDict

from verl import DataProto
from verl.trainer.ppo.core_algos import get_adv_estimator_fn
from verl.trainer.ppo.ray_trainer import apply_kl_penalty
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer
from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.utils.padding import response_from_nested, response_to_nested

from papo_verl.algorithm import group_ids, ratio_mean_stderr
from papo_verl.algorithm.config import PapoConfig
from papo_verl.integration.fields import (
    BRANCH_FIELD,
    PHASE_KEY,
    POLARITY_KEY,
    STATS_FLAG,
    VAL_ADVANTAGES_FIELD,
    VAL_BRANCH_KEY,
    VAL_FIRST_ORDER_KEY,
    VAL_OUTPUT_PREFIX,
    VAL_POLARITY_FIELD,
    VALIDATE_FLAG,
)
from papo_verl.integration.estimator import ESTIMATOR_NAME, papo_config_from_algorithm
from papo_verl.kernels.advantage import response_sums
from papo_verl.integration.loss import PapoPolicyLoss, branch_shares
from papo_verl.integration.preflight import TRAINER_MODE
from papo_verl.algorithm.tracker import EntropyTracker, PhaseWeights
from papo_verl.algorithm.validation import ValidationHistory, branch_response_metrics, same_batch_metrics

__all__ = ["PAPO_STATE_FILE", "PAPO_STATE_VERSION", "PapoState", "PapoTrainer", "register"]

logger = logging.getLogger("papo_verl")

PAPO_STATE_FILE = "papo_state.json"
PAPO_STATE_VERSION = 2


class PapoState:
    """Everything PAPO keeps on the driver between steps: tracker, validation history and the current phase."""

    def __init__(self, config: PapoConfig):
        self.config = config
        self.tracker: Optional[EntropyTracker] = None
        self.validation = ValidationHistory(config.validate_window)
        self.phase = PhaseWeights()

    def ensure_tracker(self, total_steps: Optional[int]) -> EntropyTracker:
        if self.tracker is None:
            cfg = self.config
            if cfg.total_steps is None and total_steps is not None:
                cfg = PapoConfig(**{**cfg.to_dict(), "total_steps": int(total_steps)})
            self.tracker = EntropyTracker(cfg)
        return self.tracker

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": PAPO_STATE_VERSION,
            "tracker": None if self.tracker is None else self.tracker.state_dict(),
            "validation": self.validation.state_dict(),
            "phase": self.phase.as_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], total_steps: Optional[int] = None) -> None:
        if state.get("version") != PAPO_STATE_VERSION:
            raise ValueError(f"{PAPO_STATE_FILE} version {state.get('version')!r} is not supported "
                             f"(expected {PAPO_STATE_VERSION})")
        if state.get("tracker") is not None:
            self.ensure_tracker(total_steps).load_state_dict(state["tracker"])
        self.validation.load_state_dict(state["validation"])
        self.phase = PhaseWeights(**state["phase"])

    def save(self, folder: str) -> str:
        """Write ``folder/papo_state.json`` atomically (temporary file + rename); returns the path."""
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, PAPO_STATE_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.state_dict(), fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path

    def load(self, folder: str, total_steps: Optional[int] = None) -> bool:
        path = os.path.join(folder, PAPO_STATE_FILE)
        if not os.path.isfile(path):
            return False
        with open(path, encoding="utf-8") as fh:
            self.load_state_dict(json.load(fh), total_steps)
        return True


class PapoTrainer(PPOTrainerSync):
    """verl's synchronous v1 trainer with PAPO's advantage (see the module docstring)."""

    # trainer_mode is both the registry key and the sync/async switch of the base class: the
    # PAPO trainer is looked up as "papo" but must behave as "sync" everywhere else.
    @property
    def trainer_mode(self) -> str:
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:
        if value not in ("sync", TRAINER_MODE):
            raise ValueError(f"PapoTrainer runs in sync mode; got trainer_mode={value!r}")

    def __init__(self, config):
        if config.algorithm.adv_estimator != ESTIMATOR_NAME:
            raise ValueError(f"trainer.v1.trainer_mode=papo needs algorithm.adv_estimator=papo, "
                             f"got {config.algorithm.adv_estimator!r}")
        self.papo = PapoState(papo_config_from_algorithm(config.algorithm))
        super().__init__(config)

    # ---------------------------------------------------------------- set-up
    def _stats_options(self, during_update: bool) -> dict:
        actor = self.config.actor_rollout_ref.actor
        return {
            "backend": self.papo.config.stats_backend,
            "chunk_size": self.papo.config.stats_chunk_size,
            "entropy_needs_grad": bool(during_update and actor.entropy_coeff != 0),
            "correction": self.papo.config.correction,
        }

    def on_init_end(self):
        actor_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
        self.actor_rollout_wg.set_loss_fn(PapoPolicyLoss(actor_config, self.papo.config.correction))
        logger.info("papo_verl: PAPO policy-loss hook installed in the actor workers")
        super().on_init_end()

    # ---------------------------------------------------------------- step stages
    def _compute_old_log_prob(self, batch, metrics):
        batch.extra_info[STATS_FLAG] = self._stats_options(during_update=False)
        batch = super()._compute_old_log_prob(batch, metrics)
        batch.extra_info.pop(STATS_FLAG, None)  # the reference pass must not overwrite θ_old's statistics
        return batch

    def _compute_advantage(self, batch, metrics):
        """verl's ``_compute_advantage`` with the polarity inputs passed to the ``papo`` estimator."""
        fields = ["uid", "response_mask", "rm_scores", "rollout_log_probs", "old_log_probs", "ref_log_prob",
                  "values", "entropy", POLARITY_KEY]
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        response_mask = data["response_mask"]
        if POLARITY_KEY not in data.keys():
            raise RuntimeError(
                f"papo_verl: the actor did not return '{POLARITY_KEY}'. The PAPO engine is not active in the actor "
                "workers: is papo_verl installed on every node (the verl.plugins entry point), and is the actor "
                "strategy fsdp/fsdp2 on a cuda/rocm or cpu platform?")
        data[POLARITY_KEY] = response_from_nested(data[POLARITY_KEY], response_mask)
        data = DataProto(batch=data.to_padded_tensor())
        data.batch["token_level_scores"] = data.batch["rm_scores"]
        data.non_tensor_batch["uid"] = np.array(data.batch.pop("uid").tolist(), dtype=object)
        original_mask = data.batch["response_mask"].clone()

        # 1. KL in reward, 2. rollout correction: exactly as verl's trainer does
        if self.config.algorithm.use_kl_in_reward:
            data, kl_metrics = apply_kl_penalty(data, kl_ctrl=self.kl_ctrl_in_reward,
                                                kl_penalty=self.config.algorithm.kl_penalty)
            metrics.update(kl_metrics)
        else:
            data.batch["token_level_rewards"] = data.batch["token_level_scores"]
        rollout_corr_config = self.config.algorithm.get("rollout_correction", None)
        bypass = rollout_corr_config and rollout_corr_config.get("bypass_mode", False)
        rollout_correction = rollout_corr_config is not None and "rollout_log_probs" in data.batch and not bypass
        if rollout_correction:
            data, is_metrics = compute_rollout_correction_and_add_to_batch(data, rollout_corr_config)
            metrics.update(is_metrics)

        # 3. the phase controller sees the batch's token-mean θ_old entropy (what actor/entropy reports) and its
        #    standard error, with the prompts' response groups as sampling units
        sums = response_sums(data.batch["entropy"], original_mask)
        mean_entropy, stderr = ratio_mean_stderr(*sums, group_ids(data.non_tensor_batch["uid"]))
        _, stderr_responses = ratio_mean_stderr(*sums)
        # with few prompts the cluster estimate has few degrees of freedom: never below the response-level one
        stderr = max(stderr, stderr_responses) if np.isfinite(stderr_responses) else stderr
        tracker = self.papo.ensure_tracker(getattr(self, "total_training_steps", None))
        self.papo.phase = tracker.update(mean_entropy, stderr if np.isfinite(stderr) else None)

        # 4. PAPO advantage through the registered estimator
        details: dict = {}
        advantages, returns = get_adv_estimator_fn(self.config.algorithm.adv_estimator)(
            token_level_rewards=data.batch["token_level_rewards"],
            response_mask=data.batch["response_mask"],
            index=data.non_tensor_batch["uid"],
            config=self.config.algorithm,
            rollout_is_weights=data.batch.get("rollout_is_weights", None),
            old_log_probs=data.batch["old_log_probs"],
            entropys=data.batch["entropy"],
            polarity_coefficient=data.batch[POLARITY_KEY],  # P_t from the actor's θ_old pass
            phase_weights=self.papo.phase,
            details=details,
        )
        papo_metrics = details["metrics"]
        self._papo_broadcast = {
            "expand": papo_metrics["papo/expand_weight"],
            "contract": papo_metrics["papo/contract_weight"],
            "tilt": self.papo.phase.tilt,
            "step": int(self.global_steps),
        }
        metrics.update(papo_metrics)
        metrics.update(tracker.metrics())
        metrics["papo/entropy_stderr_responses"] = stderr_responses

        # 5. write advantages, returns and branch labels (every key, padding rows included)
        data.batch["advantages"], data.batch["returns"] = advantages, returns
        data.batch[BRANCH_FIELD] = details["branch"]
        out_fields = ["advantages", "returns", BRANCH_FIELD]
        self._papo_validation = None
        every = self.papo.config.validate_every
        if every > 0 and int(self.global_steps) % every == 0:
            # what the actor needs for the branch response, and what the driver needs after the update
            result = details["result"]
            data.batch[VAL_ADVANTAGES_FIELD] = result.base_advantages
            data.batch[VAL_POLARITY_FIELD] = torch.sign(result.rho).to(torch.int8)
            out_fields += [VAL_ADVANTAGES_FIELD, VAL_POLARITY_FIELD]
            self._papo_validation = {
                "mask": original_mask.bool(), "entropy": data.batch["entropy"], "log_prob": data.batch["old_log_probs"],
                "base": result.base_advantages, "advantages": advantages, "coefficient": result.coefficient,
                "weights": (papo_metrics["papo/expand_weight"], papo_metrics["papo/contract_weight"]),
            }
        if self.config.algorithm.use_kl_in_reward:
            out_fields.append("token_level_rewards")
        if rollout_correction:
            out_fields.append("response_mask")
            if "rollout_is_weights" in data.batch:
                out_fields.append("rollout_is_weights")
        output = TensorDict({f: response_to_nested(data.batch[f], response_mask) for f in out_fields},
                            batch_size=len(batch))
        return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=output)

    def _update_actor(self, batch, metrics):
        validation = getattr(self, "_papo_validation", None)
        if validation is not None:
            self._validation_call(batch, "branch_response")
            values = self._first_row(batch, VAL_BRANCH_KEY)
            metrics.update(branch_response_metrics(values, *validation["weights"], split=self.papo.config.split))
        batch.extra_info[PHASE_KEY] = dict(getattr(self, "_papo_broadcast", {}))
        if self.papo.config.track_polarity_flips and self.papo.config.split == "polarity":
            batch.extra_info[STATS_FLAG] = self._stats_options(during_update=True)
        try:
            batch = super()._update_actor(batch, metrics)
        finally:
            batch.extra_info.pop(STATS_FLAG, None)
        branch_shares(metrics)
        if validation is not None:
            metrics.update(self._same_batch_validation(batch, validation))
            self._papo_validation = None
        return batch

    # ---------------------------------------------------------------- validation of polarity
    def _validation_call(self, batch, stage: str) -> None:
        """One extra ``compute_log_prob`` on the step's batch with the validation flag (outputs go to TransferQueue)."""
        flags = {VALIDATE_FLAG: {"stage": stage}, "calculate_entropy": True, "compute_loss": False,
                 "temperature": self.config.actor_rollout_ref.rollout.temperature}
        if stage == "after_update":
            flags[STATS_FLAG] = self._stats_options(during_update=False)
        saved = {k: batch.extra_info[k] for k in flags if k in batch.extra_info}
        batch.extra_info.update(flags)
        try:
            self.actor_rollout_wg.compute_log_prob(batch)
        finally:
            for key in flags:
                batch.extra_info.pop(key, None)
            batch.extra_info.update(saved)

    @staticmethod
    def _first_row(batch, field: str):
        """A worker output replicated per sample: the row of the first sample that is not balance padding."""
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=[field])
        row = next((i for i, tag in enumerate(batch.tags) if not tag.get("is_padding", False)), 0)
        return data[field][row]

    def _same_batch_validation(self, batch, validation: dict) -> dict:
        self._validation_call(batch, "after_update")
        fields = [VAL_OUTPUT_PREFIX + "entropy", "response_mask"]
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=fields + [VAL_FIRST_ORDER_KEY])
        key = VAL_OUTPUT_PREFIX + "entropy"
        data[key] = response_from_nested(data[key], data["response_mask"])
        entropy_after = data.select(key, "response_mask").to_padded_tensor()[key]
        if entropy_after.shape != validation["entropy"].shape:
            raise RuntimeError(f"papo_verl validation: θ_new entropies have shape {tuple(entropy_after.shape)}, "
                               f"θ_old ones {tuple(validation['entropy'].shape)}")
        first_order = float(self._first_row(batch, VAL_FIRST_ORDER_KEY).reshape(-1)[0])
        out = same_batch_metrics(validation["entropy"], entropy_after, validation["log_prob"], validation["base"],
                                 validation["advantages"], validation["coefficient"], validation["mask"],
                                 first_order=first_order)
        out.update(self.papo.validation.add(out["papo/val/dH_predicted"], out["papo/val/dH_measured"]))
        return out

    # ---------------------------------------------------------------- checkpoints
    def _save_checkpoint(self):
        # PAPO's state first: verl writes latest_checkpointed_iteration.txt last, so a crash in
        # between never leaves a "complete" checkpoint without PAPO state.
        folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
        path = self.papo.save(folder)
        logger.info("papo_verl: saved PAPO state to %s", path)
        super()._save_checkpoint()

    def _load_checkpoint(self):
        super()._load_checkpoint()
        total_steps = getattr(self, "total_training_steps", None)
        self.papo.ensure_tracker(total_steps)
        if self.global_steps <= 0:
            return
        # the global_step_N folder verl's _load_checkpoint resumed from (same rules)
        trainer_cfg = self.config.trainer
        if trainer_cfg.resume_mode == "resume_path":
            folder = trainer_cfg.resume_from_path
            folder = folder if os.path.isabs(folder) else os.path.join(os.getcwd(), folder)
        else:
            root = trainer_cfg.default_local_dir
            folder = find_latest_ckpt_path(root if os.path.isabs(root) else os.path.join(os.getcwd(), root))
        if folder is None or not self.papo.load(folder, total_steps):
            logger.warning("papo_verl: resumed at step %d but %s has no %s; the entropy tracker restarts its "
                           "warm-up", self.global_steps, folder, PAPO_STATE_FILE)
        else:
            logger.info("papo_verl: restored PAPO state from %s", os.path.join(folder, PAPO_STATE_FILE))


def register() -> list[str]:
    """Register ``PapoTrainer`` under ``trainer.v1.trainer_mode=papo`` (idempotent)."""
    register_trainer(TRAINER_MODE)(PapoTrainer)
    return [f"trainer:{TRAINER_MODE}"]


# if this module's own imports loaded verl (and so this plugin) while it was half-defined, register now
from papo_verl.integration import plugin as _plugin  # noqa: E402

_plugin.complete_registration(__name__)
