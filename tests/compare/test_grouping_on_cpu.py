"""Algorithm labels, seeds and config checks from the runs' resolved configs."""

from __future__ import annotations

import warnings

import pytest

from papo_verl.compare import CompareError, CompareWarning, compare, load_runs
from papo_verl.compare.configs import algorithm_label, label_from_experiment, run_seed, seed_from_experiment
from tests.compare.helpers import ALGORITHM_KEYS, run_config, synthetic_metrics, write_file_run

STEPS = range(1, 4)


def _load(paths, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CompareWarning)
        runs = load_runs(paths, **kwargs)
        comparison = compare(runs)
    return runs, comparison, [str(w.message) for w in caught if issubclass(w.category, CompareWarning)]


@pytest.mark.parametrize("algorithm", sorted(ALGORITHM_KEYS))
def test_label_of_each_recipe_algorithm_from_the_resolved_config(algorithm):
    """The recipes' algorithm keys on papo_verl's composed config give the expected label."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(run_config(algorithm, 1, f"{algorithm}-x"), resolve=True)
    assert algorithm_label(config) == algorithm


@pytest.mark.slow  # renders figures / runs the CLI (seconds each)
def test_runs_group_by_algorithm_and_seed_from_configs(tmp_path):
    for algorithm in ("papo", "grpo", "dapo"):
        for seed in (1, 2, 3):
            # experiment names deliberately carry neither algorithm nor seed: both come from the config
            write_file_run(tmp_path, run_config(algorithm, seed, f"run{algorithm[0]}{seed * 7}"),
                           synthetic_metrics(algorithm, seed, STEPS))
    runs, comparison, messages = _load([tmp_path])
    assert {label: sorted(r.seed for r in members) for label, members in comparison.groups.items()} == \
        {"papo": [1, 2, 3], "grpo": [1, 2, 3], "dapo": [1, 2, 3]}
    assert {r.seed_source for r in runs} == {"data.seed"}
    assert {r.label_source for r in runs} == {"resolved config"}
    assert messages == []
    keys, table = comparison.config_table()
    assert set(keys) == {"algorithm.adv_estimator", "trainer.v1.trainer_mode",
                         "actor_rollout_ref.actor.clip_ratio_high", "actor_rollout_ref.actor.clip_ratio_c",
                         "algorithm.filter_groups.enable", "algorithm.filter_groups.metric"}
    assert table["algorithm.adv_estimator"] == {"papo": "papo", "grpo": "grpo", "dapo": "grpo"}
    assert table["actor_rollout_ref.actor.clip_ratio_high"] == {"papo": "0.2", "grpo": "0.2", "dapo": "0.28"}
    markdown = comparison.markdown()
    estimators = {"papo": "papo", "grpo": "grpo", "dapo": "grpo"}
    row = "| `algorithm.adv_estimator` | algorithm | " + " | ".join(estimators[lb] for lb in comparison.labels) + " |"
    assert f"| key | kind | {' | '.join(comparison.labels)} |" in markdown
    assert row in markdown
    assert "**base**" not in markdown


def test_seed_rule():
    assert run_seed({"data": {"seed": 5}, "actor_rollout_ref": {"rollout": {"seed": 42}}}, "x-seed9") == (5, "data.seed")
    assert run_seed({"data": {"seed": None}, "actor_rollout_ref": {"rollout": {"seed": 7}}}, "x-seed9") == \
        (7, "actor_rollout_ref.rollout.seed")
    assert run_seed({"data": {"seed": None}, "actor_rollout_ref": {"rollout": {"seed": 42}}}, "x-seed9") == \
        (9, "experiment name")
    assert run_seed({"data": {"seed": None}, "actor_rollout_ref": {"rollout": {"seed": 42}}}, "x") == \
        (42, "actor_rollout_ref.rollout.seed (verl's default)")
    assert run_seed(None, "papo_seed_12") == (12, "experiment name")
    assert run_seed(None, "papo") == (None, "none")
    assert [seed_from_experiment(n) for n in ("a-seed3", "a_Seed-4", "seed=5-b", "a")] == [3, 4, 5, None]
    assert label_from_experiment("papo-qwen3-4b-seed2") == "papo-qwen3-4b"
    assert label_from_experiment("seed2_grpo") == "grpo"


def test_seed_from_the_experiment_name_when_the_config_sets_none(tmp_path):
    for seed in (1, 2):
        write_file_run(tmp_path, run_config("papo", seed, f"papo-seed{seed}", seed_keys=False),
                       synthetic_metrics("papo", seed, STEPS))
    runs, _, messages = _load([tmp_path])
    assert sorted((r.seed, r.seed_source) for r in runs) == [(1, "experiment name"), (2, "experiment name")]
    assert messages == []


@pytest.mark.slow  # renders figures / runs the CLI (seconds each)
def test_label_from_experiment_and_from_regex(tmp_path):
    for name in ("papoA-seed1", "papoA-seed2", "grpoB-seed1"):
        write_file_run(tmp_path, run_config("grpo", int(name[-1]), name), synthetic_metrics("grpo", 1, STEPS))
    runs, comparison, _ = _load([tmp_path], label_from="experiment")
    assert {k: sorted(r.name for r in v) for k, v in comparison.groups.items()} == \
        {"papoA": ["papoA-seed1", "papoA-seed2"], "grpoB": ["grpoB-seed1"]}
    assert {r.label_source for r in runs} == {"experiment name"}
    runs, comparison, _ = _load([tmp_path], label_regex=r"^(?P<label>[a-z]+)[A-Z]")
    assert sorted(comparison.groups) == ["grpo", "papo"]
    assert {r.label_source for r in runs} == {"regex on the experiment name"}
    with pytest.raises(CompareError, match=r"run grpoB-seed1: its experiment name does not match the label regex '\^papo'"):
        load_runs([tmp_path], label_regex="^papo")
    with pytest.raises(CompareError, match="invalid label regex"):
        load_runs([tmp_path], label_regex="(")


def test_same_algorithm_runs_differing_in_non_seed_keys_are_warned_about(tmp_path):
    write_file_run(tmp_path, run_config("papo", 1, "papo-seed1"), synthetic_metrics("papo", 1, STEPS))
    write_file_run(tmp_path, run_config("papo", 2, "papo-seed2", **{"actor_rollout_ref.actor.optim.lr": 3e-6,
                                                                      "algorithm.papo.alpha": 0.3}),
                   synthetic_metrics("papo", 2, STEPS))
    _, comparison, messages = _load([tmp_path])
    (message,) = [m for m in messages if "differ in non-seed config keys" in m]
    assert message.startswith("runs of papo differ in non-seed config keys: ")
    assert "actor_rollout_ref.actor.optim.lr (1e-06 / 3e-06)" in message
    assert "algorithm.papo.alpha (0.3 / 0.5)" in message
    assert "data.seed" not in message and "experiment_name" not in message and "default_local_dir" not in message
    assert message in comparison.markdown()


def test_base_config_mismatch_between_algorithms_is_warned_with_the_keys(tmp_path):
    write_file_run(tmp_path, run_config("papo", 1, "papo-seed1"), synthetic_metrics("papo", 1, STEPS))
    # val_before_train is not a base-config difference: a resumed run sets it to validate first
    write_file_run(tmp_path, run_config("grpo", 1, "grpo-seed1", **{"data.max_response_length": 1024,
                                                                      "trainer.val_before_train": False,
                                                                      "actor_rollout_ref.actor.optim.lr": 2e-6}),
                   synthetic_metrics("grpo", 1, STEPS))
    _, comparison, messages = _load([tmp_path])
    (message,) = [m for m in messages if m.startswith("base configs differ")]
    # the resolved configs also carry the keys interpolated from data.max_response_length
    assert message == ("base configs differ between algorithms (not algorithm keys): "
                       "actor_rollout_ref.actor.optim.lr, actor_rollout_ref.rollout.response_length, "
                       "data.max_response_length, distillation.teacher_models.teacher_model.inference.response_length; "
                       "the algorithms were not run on one base config")
    assert comparison.labels == ["grpo", "papo"]  # discovery order: grpo-seed1.jsonl, papo-seed1.jsonl
    markdown = comparison.markdown()
    assert "| `data.max_response_length` | **base** ⚠ | 1024 | 512 |" in markdown
    assert "| `algorithm.adv_estimator` | algorithm | grpo | papo |" in markdown


def test_experiment_name_is_masked_only_in_derived_strings():
    from papo_verl.compare.configs import normalized

    config = {"trainer": {"experiment_name": "papo", "project_name": "e2e", "log_dir": "runs/e2e/papo",
                          "v1": {"trainer_mode": "papo"}},
              "actor_rollout_ref": {"rollout": {"trace": {"experiment_name": "papo"}, "file": "out/papo.jsonl"}},
              "custom": {"target": "papo_verl.integration.loss.fn"},
              "algorithm": {"adv_estimator": "papo"}}
    assert normalized(config) == {
        "trainer.log_dir": "runs/e2e/<experiment>", "trainer.v1.trainer_mode": "papo",
        "actor_rollout_ref.rollout.file": "out/<experiment>.jsonl",
        "custom.target": "papo_verl.integration.loss.fn", "algorithm.adv_estimator": "papo"}


def test_runs_named_like_their_algorithm_still_show_the_algorithm_keys(tmp_path):
    """As the e2e runs: experiments 'papo' and 'grpo'."""
    for algorithm in ("papo", "grpo"):
        write_file_run(tmp_path / algorithm, run_config(algorithm, 1, algorithm), synthetic_metrics(algorithm, 1, STEPS))
    _, comparison, messages = _load([tmp_path / "papo", tmp_path / "grpo"])
    keys, table = comparison.config_table()
    assert keys == ["algorithm.adv_estimator", "trainer.v1.trainer_mode"]
    assert table["trainer.v1.trainer_mode"] == {"papo": "papo", "grpo": "sync"}
    assert messages == []


def test_papo_ablations_are_their_own_algorithms():
    from papo_verl.compare.configs import algorithm_label

    base = {"algorithm": {"adv_estimator": "papo", "papo": {"controller": "trend", "split": "polarity",
                                                             "correction": "exact", "alpha": 0.3}}}
    assert algorithm_label(base) == "papo"  # alpha is a tuning, not another algorithm
    sign = {"algorithm": {**base["algorithm"], "papo": {**base["algorithm"]["papo"], "split": "advantage_sign"}}}
    assert algorithm_label(sign) == "papo[split=advantage_sign]"
    both = {"algorithm": {**base["algorithm"], "papo": {**base["algorithm"]["papo"], "controller": "target",
                                                        "correction": "none"}}}
    assert algorithm_label(both) == "papo[controller=target,correction=none]"
