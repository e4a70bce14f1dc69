#!/usr/bin/env python
"""Driver-side PAPO advantage versus verl's GRPO advantage, on CPU (the driver runs there).

PAPO's driver work per step (what ``papo_verl.integration.trainer`` does between the θ_old pass and the
update) is timed against verl's registered ``grpo`` estimator on the same batch:

* ``grpo``              — ``core_algos.get_adv_estimator_fn("grpo")`` (verl's default GRPO path).
* ``grpo_vectorized``   — verl's ``grpo_vectorized`` estimator, for reference.
* ``tracker_only``      — the trainer's token-mean θ_old entropy + ``EntropyTracker.update`` (part of
                          every PAPO line below; listed to show the breakdown).
* ``papo``              — **the PAPO trainer's driver work**: token-mean θ_old entropy →
                          ``EntropyTracker.update`` → the registered ``papo`` estimator with the
                          actor's per-token polarity coefficients (``polarity_coefficient=``, computed
                          by the PAPO engine in the θ_old forward, where the logits are), group
                          advantage, polarity signs, pressure-conserving reweighting, branch labels,
                          without metrics.
* ``papo+metrics``      — the same with ``details={}``, exactly as the PAPO trainer calls it (adds the
                          ``papo/*`` metrics).
* ``papo_from_statistics`` — the estimator given the four raw statistics instead (log π_k, H, Σπ²,
                          Σπ² log π): what a user's own trainer pays when it does not pass ``P_t``.

The batch: ``--responses`` × ``--tokens`` (default 4096 × 4096), groups of ``--group-size``,
random response lengths, one outcome reward per response, per-token statistics of real
(two-level) softmax distributions. Methods run interleaved, ``--repeats`` times; medians are
reported. The last lines are ``ratio_<what>: <number>`` (time of the first / time of the second);
``ratio_papo_vs_grpo_advantage_time`` = ``papo`` / ``grpo`` (the PAPO trainer's driver-side advantage
versus verl's registered GRPO estimator on the same batch; target ≤ 1).

Threads: 1 by default (``--threads 0`` for torch's default): on an oversubscribed machine torch's
OpenMP barriers stall every parallel op for a scheduler quantum, which says nothing about the
algorithms. PyTorch's ``THP_MEM_ALLOC_ENABLE=1`` (huge pages for large CPU tensors) removes most
of the page-fault cost of fresh [B, T] outputs, for every method.

    python bench/advantage.py                 # ~1 minute on 2 cores
    python bench/advantage.py --threads 0     # torch's default thread count
    python bench/advantage.py --responses 512 --tokens 1024 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchinfo import git_commit  # noqa: E402  (bench/ is the script's own folder)


def make_batch(responses: int, tokens: int, group_size: int, seed: int = 0) -> dict:
    """A PAPO/GRPO batch: rewards, mask, uids and θ_old statistics consistent with one softmax each."""
    g = torch.Generator().manual_seed(seed)
    n_groups = max(1, responses // group_size)
    uids = np.array([f"uid-{i // group_size}" for i in range(n_groups * group_size)], dtype=object)
    b = len(uids)
    lengths = torch.randint(1, tokens + 1, (b,), generator=g)
    mask = (torch.arange(tokens).unsqueeze(0) < lengths.unsqueeze(1)).float()
    scores = torch.randint(0, 2, (b,), generator=g).float()
    rewards = torch.zeros(b, tokens)
    rewards[torch.arange(b), lengths - 1] = scores
    # per-token statistics of a two-level softmax (one token of probability p, the rest uniform over
    # K−1): exact H, Σπ², Σπ² log π, and log π_k of either the head or a tail token
    p = torch.rand(b, tokens, generator=g) * 0.98 + 0.01
    k = 2.0 ** torch.randint(2, 12, (b, tokens), generator=g).float()
    q = (1 - p) / (k - 1)
    entropy = -(p * p.log() + (1 - p) * q.log())
    s2 = p * p + (k - 1) * q * q
    s2l = p * p * p.log() + (k - 1) * q * q * q.log()
    head = torch.rand(b, tokens, generator=g) < p
    log_prob = torch.where(head, p.log(), q.log())
    stats = {name: (v * mask).float() for name, v in (("old_log_probs", log_prob), ("entropys", entropy),
                                                      ("sum_pi_squared", s2), ("sum_pi_squared_log_pi", s2l))}
    return dict(token_level_rewards=rewards, response_mask=mask, index=uids, **stats)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--responses", type=int, default=4096)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: reproducible on shared machines, and what Ray gives "
                             "CPU workers; 0 = torch's default)")
    parser.add_argument("--skip-metrics", action="store_true", help="do not time the trainer's call with metrics")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    import warnings

    warnings.filterwarnings("ignore", message=".*engine is not available.*")
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    from papo_verl.algorithm import group_ids, ratio_mean_stderr
    from papo_verl.algorithm.config import PapoConfig
    from papo_verl.integration.estimator import register
    from papo_verl.kernels.advantage import response_sums
    from papo_verl.algorithm.tracker import EntropyTracker

    register()
    grpo = get_adv_estimator_fn("grpo")
    grpo_vec = get_adv_estimator_fn("grpo_vectorized")
    papo = get_adv_estimator_fn("papo")
    algo_config = {"norm_adv_by_std_in_grpo": True, "papo": {}}
    batch = make_batch(args.responses, args.tokens, args.group_size)
    mask = batch["response_mask"]
    common = dict(token_level_rewards=batch["token_level_rewards"], response_mask=mask, index=batch["index"])
    stats = dict(old_log_probs=batch["old_log_probs"], entropys=batch["entropys"],
                 sum_pi_squared=batch["sum_pi_squared"], sum_pi_squared_log_pi=batch["sum_pi_squared_log_pi"])
    papo_kwargs = dict(common, config=algo_config, **stats)
    tracker = EntropyTracker(PapoConfig(warmup_steps=1))
    tracker.update(2.0)  # past warm-up: the weights are tilted, the full reweighting runs

    def tracker_step():  # the trainer's controller input: H̄ and its standard error (prompts and responses as units)
        sums = response_sums(batch["entropys"], mask)
        mean, stderr = ratio_mean_stderr(*sums, group_ids(batch["index"]))
        _, stderr_responses = ratio_mean_stderr(*sums)
        return tracker.update(mean * 0.97, max(stderr, stderr_responses))

    from papo_verl.algorithm import polarity_coefficient

    # what the PAPO engine returns with old_log_probs: P_t of the same tokens
    coefficient = polarity_coefficient(*stats.values())

    def run_estimator(with_metrics: bool, from_statistics: bool = False):
        weights = tracker_step()
        inputs = dict(papo_kwargs)
        if not from_statistics:
            inputs.pop("sum_pi_squared")
            inputs.pop("sum_pi_squared_log_pi")
            inputs["polarity_coefficient"] = coefficient
        return papo(**inputs, phase_weights=weights, details={} if with_metrics else None)

    methods = {
        "grpo": lambda: grpo(**common, norm_adv_by_std_in_grpo=True),
        "grpo_vectorized": lambda: grpo_vec(**common, norm_adv_by_std_in_grpo=True),
        "tracker_only": tracker_step,
        "papo": lambda: run_estimator(False),
        "papo+metrics": lambda: run_estimator(True),
        "papo_from_statistics": lambda: run_estimator(True, from_statistics=True),
    }
    if args.skip_metrics:
        methods.pop("papo+metrics")
    times = {name: [] for name in methods}
    cpu_times = {name: [] for name in methods}
    for name, fn in methods.items():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in methods.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - cpu_start)

    # semantics check: without tilt, PAPO's advantages are GRPO's (up to D1: zero-variance groups → 0)
    neutral = papo(**papo_kwargs, phase_weights=(1.0, 1.0))[0]
    reference = grpo_vec(**common, norm_adv_by_std_in_grpo=True)[0]
    max_diff = float((neutral - reference).abs().max())

    print(f"# bench/advantage.py  {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}  commit {git_commit()}")
    print(f"# machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}, "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}")
    print(f"# batch: {mask.shape[0]} responses x {mask.shape[1]} tokens ({int(mask.sum())} valid), "
          f"groups of {args.group_size}; {args.repeats} interleaved repeats, median")
    print(f"# neutral-weight PAPO vs grpo_vectorized advantages: max |diff| = {max_diff:.2e}")
    print(f"{'method':<18}{'median ms':>12}{'min ms':>10}{'CPU ms':>10}")
    med, cpu = {}, {}
    for name, ts in times.items():
        med[name] = statistics.median(ts)
        cpu[name] = statistics.median(cpu_times[name])
        print(f"{name:<18}{med[name] * 1e3:>12.1f}{min(ts) * 1e3:>10.1f}{cpu[name] * 1e3:>10.1f}")
    print("# CPU ms: process CPU time (user + system, all threads), less sensitive to other load than wall time")
    ratios = {
        "ratio_papo_vs_grpo_vectorized_advantage_time": med["papo"] / med["grpo_vectorized"],
        "ratio_papo_from_statistics_vs_grpo_advantage_time": med["papo_from_statistics"] / med["grpo"],
        "ratio_papo_vs_grpo_advantage_cpu_time": cpu["papo"] / cpu["grpo"],
    }
    if "papo+metrics" in med:
        ratios["ratio_papo_with_metrics_vs_grpo_advantage_time"] = med["papo+metrics"] / med["grpo"]
    ratios["ratio_papo_vs_grpo_advantage_time"] = med["papo"] / med["grpo"]
    for name, value in ratios.items():
        print(f"{name}: {value:.3f}")

if __name__ == "__main__":
    main()
