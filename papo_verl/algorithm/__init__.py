"""The PAPO algorithm as pure torch (no verl import): :mod:`papo_verl.algorithm.papo` is the reference."""

from papo_verl.algorithm.papo import CORRECTIONS, SPLITS, LogitStats, ReweightedAdvantage, apply_branch_weights, \
    branch_masses, conserve_pressure, entropy_mean_stderr, group_advantage, group_ids, logit_statistics, \
    papo_advantage, polarity, polarity_coefficient, ratio_mean_stderr

__all__ = ["CORRECTIONS", "SPLITS", "LogitStats", "ReweightedAdvantage", "apply_branch_weights", "branch_masses",
           "conserve_pressure", "entropy_mean_stderr", "group_advantage", "group_ids", "logit_statistics",
           "papo_advantage", "polarity", "polarity_coefficient", "ratio_mean_stderr"]
