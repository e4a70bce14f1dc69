"""The CPU demo's task, data, reward and tiny pre-trained policy (built once, cached).

Entry point: :func:`ensure_assets` (:mod:`papo_verl.demo.assets`). Modules: ``task`` (generator
and brute-force solver), ``reward`` (exact verifier and verl ``compute_score``), ``data`` (verl
RL parquet files and their checker), ``pretrain`` (supervised pre-training), ``evaluate``
(pass@k, distinct answers and token entropy). Imports are lazy so that ``import papo_verl.demo``
stays cheap.
"""

__all__ = ["ensure_assets"]


def ensure_assets(*args, **kwargs):
    """See :func:`papo_verl.demo.assets.ensure_assets`."""
    from papo_verl.demo.assets import ensure_assets as _ensure_assets

    return _ensure_assets(*args, **kwargs)
