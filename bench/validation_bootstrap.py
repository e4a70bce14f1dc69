"""What verl's validation metrics cost the driver: verl's ``bootstrap_metric`` vs the CPU backend's vectorised one
(``papo_verl.cpu.compat.vectorised_bootstrap``), on the demo's and the protocol's validation sizes.

At every validation verl 0.9.1's trainer calls ``process_validation_metrics``, which bootstraps ``best@n`` and
``worst@n`` (n = 2, 4, 8, 16) of every numeric reward field of every prompt with 1,000 Python-level ``np.max`` /
``np.min`` calls each. The demo's reward has five such fields (``score``, ``acc``, ``well_formed``, and verl's
``reward`` and ``acc_success_only``). This script builds reward fields of that shape, runs
``process_validation_metrics`` both ways in one process, checks that the results are identical, and prints the
process CPU time of each (robust to other load on the machine):

    python bench/validation_bootstrap.py [--prompts 64 256] [--samples 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def reward_fields(prompts: int, samples: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    n = prompts * samples
    acc = [float(x) for x in rng.random(n) < 0.25]
    well_formed = [float(x) for x in rng.random(n) < 0.9]
    score = [a if w else -0.1 for a, w in zip(acc, well_formed)]
    infos = {"score": score, "acc": acc, "well_formed": well_formed, "reward": list(score)}
    return ["countdown"] * n, [f"p{i // samples}" for i in range(n)], infos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[64, 256], help="validation prompts (demo 64, protocol 256)")
    parser.add_argument("--samples", type=int, default=16, help="samples per prompt (val_kwargs.n)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import verl.trainer.ppo.metric_utils as metric_utils

    from benchinfo import git_commit
    from papo_verl.cpu.compat import vectorised_bootstrap

    verls = getattr(metric_utils.bootstrap_metric, "__wrapped__", metric_utils.bootstrap_metric)
    ways = {"verl": verls, "vectorised": vectorised_bootstrap(verls)}
    print(f"commit: {git_commit()}; {args.samples} samples per prompt; best of {args.repeats} process CPU times")
    for prompts in args.prompts:
        sources, uids, infos = reward_fields(prompts, args.samples)
        seconds, results = {}, {}
        for name, bootstrap in ways.items():
            metric_utils.bootstrap_metric = bootstrap
            times = []
            for _ in range(args.repeats):
                start = time.process_time()
                results[name] = metric_utils.process_validation_metrics(sources, uids, infos,
                                                                        expected_acc_counts={("countdown", u): args.samples
                                                                                             for u in set(uids)})
                times.append(time.process_time() - start)
            seconds[name] = min(times)
        metric_utils.bootstrap_metric = verls
        assert results["vectorised"] == results["verl"], "the vectorised bootstrap changed a number"
        fields = len(results["verl"]["countdown"])
        print(f"{prompts} prompts x {args.samples} samples, {fields} numeric fields (identical results): "
              f"verl {seconds['verl']:.2f} s, vectorised {seconds['vectorised']:.3f} s CPU per validation")
        print(f"ratio_verl_vs_vectorised_validation_metrics_cpu_time_{prompts}x{args.samples}: "
              f"{seconds['verl'] / seconds['vectorised']:.1f}")


if __name__ == "__main__":
    main()
