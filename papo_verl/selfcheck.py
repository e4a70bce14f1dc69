"""``python -m papo_verl.selfcheck``: what verl sees registered, and a worked polarity example.

The example takes one softmax over free logits, applies one policy-gradient step
``Δz = η A (e_k − π)`` for a high- and a low-probability token with ``A = ±1``, and compares the
measured entropy change with the first-order prediction ``η A P_t`` (docs/algorithm.md §1).
"""

from __future__ import annotations

import torch


def _entropy(z: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(z, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def worked_example(eta: float = 1e-4) -> list[dict]:
    from papo_verl.algorithm import logit_statistics, polarity_coefficient

    z = torch.tensor([2.0, 1.0, 0.5, -0.5, -1.0], dtype=torch.float64)
    pi = torch.softmax(z, -1)
    h = float(_entropy(z))
    rows = []
    for k in (0, 4):
        stats = logit_statistics(z.unsqueeze(0), torch.tensor([k]))
        coeff = float(polarity_coefficient(stats.log_prob, stats.entropy, stats.sum_pi_squared,
                                           stats.sum_pi_squared_log_pi)[0])
        sampled = float(polarity_coefficient(stats.log_prob, stats.entropy, stats.sum_pi_squared,
                                             stats.sum_pi_squared_log_pi, "none")[0])
        for adv in (1.0, -1.0):
            step = eta * adv * (torch.nn.functional.one_hot(torch.tensor(k), 5).double() - pi)
            measured = float(_entropy(z + step)) - h
            rows.append(dict(token=k, pi=float(pi[k]), adv=adv, P=coeff, P_sampled=sampled, rho=adv * coeff,
                             predicted=eta * adv * coeff, measured=measured))
    return rows


def main() -> None:
    import verl  # noqa: F401  -- loads papo_verl.integration.plugin through verl's entry point
    import verl.trainer.ppo.v1  # noqa: F401  -- the trainer and engine components register when these import
    import verl.workers.engine  # noqa: F401
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

    from papo_verl.integration import plugin

    print(f"verl {verl.__version__}; papo_verl registered: {', '.join(plugin.registered) or 'nothing'}")
    print(f"'papo' in verl's advantage-estimator registry: {'papo' in ADV_ESTIMATOR_REGISTRY}")
    z = torch.tensor([2.0, 1.0, 0.5, -0.5, -1.0], dtype=torch.float64)
    h = float(_entropy(z))
    print(f"\nWorked example: π = softmax({z.tolist()}), H = {h:.4f} nats, e^-H = {torch.exp(torch.tensor(-h)):.4f}")
    print(f"{'token':>5} {'π_k':>7} {'A':>5} {'P_t':>9} {'sampled':>9} {'ρ=A·P':>9} {'ηAP':>11} {'measured ΔH':>12}  branch")
    for r in worked_example():
        branch = "expand" if r["rho"] > 0 else "contract"
        print(f"{r['token']:>5} {r['pi']:7.4f} {r['adv']:5.1f} {r['P']:9.5f} {r['P_sampled']:9.5f} {r['rho']:9.5f} "
              f"{r['predicted']:11.3e} {r['measured']:12.3e}  {branch}")
    print("\nReinforcing the frequent token (π_k > e^-H) contracts entropy; reinforcing the rare one expands it.")


if __name__ == "__main__":
    main()
