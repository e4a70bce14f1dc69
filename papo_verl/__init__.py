"""papo_verl — PAPO (Polarity-Aware Policy Optimization, arXiv 2605.11775) for verl 0.9.

``from papo_verl import EntropyTracker`` gives the driver-side phase controller; the algorithm core
is :mod:`papo_verl.algorithm` (the reference formulas; the production paths the trainer runs are in
:mod:`papo_verl.kernels`). Importing this package does not import verl; verl imports
:mod:`papo_verl.integration.plugin` through its ``verl.plugins`` entry point.
"""

from papo_verl.algorithm import LogitStats, logit_statistics, papo_advantage, polarity, polarity_coefficient
from papo_verl.algorithm.config import PapoConfig, PapoConfigError
from papo_verl.algorithm.tracker import EntropyTracker, PhaseWeights

__version__ = "0.1.0"

__all__ = [
    "EntropyTracker",
    "LogitStats",
    "PapoConfig",
    "PapoConfigError",
    "PhaseWeights",
    "logit_statistics",
    "papo_advantage",
    "polarity",
    "polarity_coefficient",
]
