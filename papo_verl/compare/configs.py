"""Algorithm labels, seeds and config differences from the runs' resolved verl configs.

Algorithm label (``label_from="config"``, the default), from the resolved config:

* ``papo`` if ``algorithm.adv_estimator=papo``, with PAPO's ablations in brackets when a key that
  makes another algorithm is not at its default (``papo[split=advantage_sign]``,
  ``papo[controller=target]``, ``papo[correction=none]``); any other estimator gives its name (``grpo``,
  ``rloo``, ``gae``, ...), except that GRPO is implied when one of the modifiers below applies;
* ``+<loss_mode>`` for a non-vanilla ``actor_rollout_ref.actor.policy_loss.loss_mode``
  (``clip_cov``, ``kl_cov``, ``gspo``, ...);
* ``+dapo`` when DAPO's keys are set: a decoupled clip (``actor.clip_ratio_high`` ≠
  ``clip_ratio_low``), dynamic sampling (``algorithm.filter_groups.enable``) or overlong reward
  shaping (``reward.reward_kwargs.overlong_buffer_cfg.enable`` or the legacy
  ``reward_model.overlong_buffer.enable``).

So GRPO → ``grpo``, DAPO → ``dapo``, Clip-Cov → ``clip_cov``, KL-Cov → ``kl_cov``, PAPO → ``papo``,
PAPO on DAPO's settings → ``papo+dapo``. ``label_from="experiment"`` uses the experiment name with its
``seed<N>`` part removed; a regex (``label_regex``) takes its ``label`` group, else its first group,
else the whole match, from the experiment name. A run without a resolved config is labelled from its
experiment name (with a warning).

Seed (documented rule, first that applies):

1. ``data.seed`` when set (verl 0.9.1 leaves it ``null``; the recipes set it to ``SEED``);
2. ``actor_rollout_ref.rollout.seed``, then ``actor_rollout_ref.actor.data_loader_seed``, when set to
   something other than verl's default 42;
3. ``seed<N>`` in the experiment name (``seed3``, ``seed-3``, ``seed_3``, ``seed=3``);
4. ``actor_rollout_ref.rollout.seed`` / ``data_loader_seed`` at verl's default 42;
5. none (the run is still one sample of its algorithm).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Optional

__all__ = ["ALGORITHM_KEYS", "ALGORITHM_KEY_PREFIXES", "SEED_KEYS", "algorithm_label", "config_differences", "flatten",
           "is_algorithm_key", "is_bookkeeping_key", "label_from_experiment", "label_from_regex", "normalized",
           "run_seed", "seed_from_experiment", "select"]

_A = "actor_rollout_ref.actor."
SEED_KEYS = ("data.seed", "actor_rollout_ref.rollout.seed", _A + "data_loader_seed")
VERL_DEFAULT_SEED = 42  # actor_rollout_ref.rollout.seed and actor.data_loader_seed in verl 0.9.1's ppo_trainer

# The keys in which compared algorithms may legitimately differ: every key an algorithm preset
# (papo_verl/config/algorithm_preset/) sets is one (tests/demo_runner/test_presets_on_cpu.py checks it);
# any other difference is a base-config mismatch.
ALGORITHM_KEY_PREFIXES = (
    "algorithm.",                   # estimator, GRPO std normalisation, dynamic sampling, papo.*
    _A + "policy_loss.",            # loss_mode and its parameters (clip_cov_*, kl_cov_ratio, ...)
    "reward.reward_kwargs.",        # DAPO overlong shaping: overlong_buffer_cfg.*, max_resp_len
    "reward_model.overlong_buffer.",  # the same, legacy keys
)
ALGORITHM_KEYS = frozenset({
    _A + "clip_ratio", _A + "clip_ratio_low", _A + "clip_ratio_high", _A + "clip_ratio_c",
    _A + "loss_agg_mode",
    "reward.reward_manager.name",
    "trainer.v1.trainer_mode",
})

# Keys that name or place a run rather than configure it; never compared.
_BOOKKEEPING_KEYS = frozenset({
    "trainer.experiment_name", "trainer.project_name", "trainer.default_local_dir",
    "trainer.rollout_data_dir", "trainer.validation_data_dir",
    "trainer.resume_mode", "trainer.resume_from_path",
    # whether step 0 is validated: the demo launcher sets it on a resume whose last validation is missing
    "trainer.val_before_train",
    # checkpointing and logging: where and how often, not what is trained
    "trainer.save_freq", "trainer.max_actor_ckpt_to_keep", "trainer.max_critic_ckpt_to_keep",
    "trainer.default_hdfs_dir", "trainer.del_local_ckpt_after_load", "trainer.logger",
    "ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH",
    # how a DataProto travels between Ray actors (torch.save or raw bytes: the same tensors either way)
    "ray_kwargs.ray_init.runtime_env.env_vars.VERL_DATAPROTO_SERIALIZATION_METHOD",
    # TransferQueue's torch threads for its put/get (the same data either way)
    "ray_kwargs.ray_init.runtime_env.env_vars.TQ_NUM_THREADS",
})

_SEED_IN_NAME = re.compile(r"seed[-_=]?(\d+)", re.IGNORECASE)
_SEED_PART = re.compile(r"[-_.]?seed[-_=]?\d+", re.IGNORECASE)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; empty mappings are kept as ``{}`` leaves."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif prefix:
        out[prefix[:-1]] = tree
    return out


def select(config: Optional[dict], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def is_algorithm_key(key: str) -> bool:
    return key in ALGORITHM_KEYS or key.startswith(ALGORITHM_KEY_PREFIXES)


def is_bookkeeping_key(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return key in _BOOKKEEPING_KEYS or "seed" in last or last in ("experiment_name", "project_name")


def _mask(value: str, name: str) -> str:
    """``name`` replaced by ``<experiment>`` where it is a whole token of a longer string (a path such as
    ``checkpoints/proj/<experiment>``), never inside another word (``papo`` in ``papo_verl``) and never
    when the value is just the name (``algorithm.adv_estimator: papo`` of a run named ``papo``)."""
    if value == name:
        return value
    return re.sub(rf"(?<![A-Za-z0-9_.-]){re.escape(name)}(?![A-Za-z0-9_-])", "<experiment>", value)


def normalized(config: dict) -> dict[str, Any]:
    """Flat config without bookkeeping/seed keys, the run's experiment name masked in derived strings."""
    flat = flatten(config)
    name = flat.get("trainer.experiment_name")
    masked = isinstance(name, str) and name != ""
    return {key: _mask(value, name) if masked and isinstance(value, str) else value
            for key, value in flat.items() if not is_bookkeeping_key(key)}


def config_differences(configs: Iterable[dict]) -> set[str]:
    """Keys whose :func:`normalized` values are not the same in every config."""
    flats = [normalized(c) for c in configs]
    return {k for k in set().union(*flats) if len({repr(f.get(k, "(absent)")) for f in flats}) > 1}


def _is_set(value: Any) -> bool:
    return value is not None and value is not False and value != ""


def is_dapo(config: dict) -> bool:
    """DAPO's keys: decoupled clip, dynamic sampling or overlong reward shaping."""
    base = select(config, _A + "clip_ratio")  # what clip_ratio_low / _high default to
    low, high = (select(config, _A + key) for key in ("clip_ratio_low", "clip_ratio_high"))
    low, high = base if low is None else low, base if high is None else high
    decoupled = low is not None and high is not None and float(high) != float(low)
    dynamic = bool(select(config, "algorithm.filter_groups.enable", False))
    overlong = any(select(config, key, False) for key in ("reward.reward_kwargs.overlong_buffer_cfg.enable",
                                                          "reward_model.overlong_buffer.enable"))
    return decoupled or dynamic or overlong


# the algorithm.papo keys that make a different algorithm (an ablation) rather than a tuning, with their defaults
PAPO_VARIANT_DEFAULTS = {"controller": "trend", "split": "polarity", "correction": "exact"}


def algorithm_label(config: dict) -> Optional[str]:
    """The algorithm of a resolved verl config (module docstring); None without ``adv_estimator``."""
    estimator = select(config, "algorithm.adv_estimator")
    if estimator is None:
        return None
    estimator = str(estimator).lower()
    parts = [] if estimator == "grpo" else [estimator]
    if estimator == "papo":  # PAPO's ablations are different algorithms: papo[split=advantage_sign]
        variant = {key: select(config, "algorithm.papo." + key) for key in PAPO_VARIANT_DEFAULTS}
        ablations = [f"{key}={value}" for key, value in variant.items()
                     if _is_set(value) and str(value) != PAPO_VARIANT_DEFAULTS[key]]
        if ablations:
            parts[0] = f"papo[{','.join(ablations)}]"
    loss_mode = select(config, _A + "policy_loss.loss_mode")
    if _is_set(loss_mode) and str(loss_mode) != "vanilla":
        parts.append(str(loss_mode))
    if is_dapo(config):
        parts.append("dapo")
    return "+".join(parts) if parts else "grpo"


def label_from_experiment(name: str) -> str:
    """The experiment name without its ``seed<N>`` part (``papo-qwen3-seed2`` → ``papo-qwen3``)."""
    stripped = _SEED_PART.sub("", name).strip("-_. ")
    return stripped or name


def label_from_regex(name: str, pattern: "re.Pattern[str]") -> Optional[str]:
    match = pattern.search(name)
    if not match:
        return None
    if "label" in pattern.groupindex and match["label"] is not None:
        return match["label"]
    return match.group(1 if pattern.groups else 0)


def seed_from_experiment(name: str) -> Optional[int]:
    """The N of the last ``seed<N>`` in an experiment name, else None."""
    found = _SEED_IN_NAME.findall(name)
    return int(found[-1]) if found else None


def _int_or_none(value: Any) -> Optional[int]:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def run_seed(config: Optional[dict], experiment: str) -> tuple[Optional[int], str]:
    """(seed, where it came from) by the rule in the module docstring."""
    seeds = {key: _int_or_none(select(config, key)) for key in SEED_KEYS}
    if seeds["data.seed"] is not None:
        return seeds["data.seed"], "data.seed"
    for key in SEED_KEYS[1:]:
        if seeds[key] is not None and seeds[key] != VERL_DEFAULT_SEED:
            return seeds[key], key
    named = seed_from_experiment(experiment)
    if named is not None:
        return named, "experiment name"
    for key in SEED_KEYS[1:]:
        if seeds[key] is not None:
            return seeds[key], f"{key} (verl's default)"
    return None, "none"
