"""The PAPO advantage (A1)–(A4) as the estimator runs it: two passes over cache-sized row chunks.

Computes what :func:`papo_verl.algorithm.papo.papo_advantage` defines (the tests check it against that
reference in float64) without any whole-batch float32 temporary: on 4096 × 4096 tokens each would be
64 MiB, and the DRAM traffic and page faults per operation cost more than the arithmetic.

Pass 1 (:func:`_branch_labels`) computes ``P_t`` chunk by chunk and keeps only the branch labels
``b_t = sign(ρ_t) = sign(A_b) sign(P_t)`` on valid tokens (int8) and per-response aggregates (float64
``[B, 6]``: counts of ``P ≷ 0``, ΣP, Σ|P|, ...). ``A`` is constant over a response, so the branch masses
``M± = Σ_b |A_b| · #{t : b_t = ±1}`` come from the counts. Pass 2 (:func:`_reweight`) writes
``Â_t = A_b w(b_t)`` as ``mask·c0_b + b·c1_b + |b|·c2_b`` with per-response ``c0 = A_b``,
``c1 = A_b (w₊ − w₋)/2``, ``c2 = A_b((w₊ + w₋)/2 − 1)``. Masking is a multiplication (no ``where``:
several times slower on CPU); if padding holds non-finite garbage the aggregates show it and pass 1 is
repeated on cleaned inputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
from torch import Tensor

from papo_verl.algorithm.papo import CORRECTIONS, SPLITS, conserve_pressure, group_advantage, polarity, \
    polarity_coefficient

__all__ = ["PapoAdvantage", "TokenStatistics", "papo_advantage", "response_sums"]

# Elements per chunk of the advantage passes: the float32 temporaries of a chunk (≈ 1 MiB each) stay in cache.
_ADV_CHUNK_ELEMENTS = 1 << 18

# Columns of PapoAdvantage.row_stats (float64 [B, 6]); read them through PapoAdvantage's properties.
_VALID, _P_POS, _P_NEG, _P_SUM, _P_ABS_SUM, _SAMPLED_DISAGREE = range(6)


@dataclass(frozen=True, eq=False)
class TokenStatistics:
    """The per-token inputs of one ``[B, T]`` batch (values at masked tokens, NaN included, are ignored).

    ``coefficient``: ``P_t`` already computed by the actor with the same ``correction``; then the two
    sums may be None and ``log_prob``/``entropy`` are read only for the sampled-term metric.
    """

    response_mask: Tensor
    log_prob: Tensor
    entropy: Tensor
    sum_pi_squared: Optional[Tensor]
    sum_pi_squared_log_pi: Optional[Tensor]
    coefficient: Optional[Tensor]
    correction: str
    split: str

    def with_padding_zeroed(self) -> TokenStatistics:
        """A copy whose statistics are float32 and 0 on masked tokens (NaN/inf padding garbage removed)."""
        valid = self.response_mask.bool()
        zero = torch.zeros((), dtype=torch.float32, device=valid.device)
        clean = lambda t: None if t is None else torch.where(valid, t.float(), zero)  # noqa: E731
        return dataclasses.replace(self, log_prob=clean(self.log_prob), entropy=clean(self.entropy),
                                   sum_pi_squared=clean(self.sum_pi_squared),
                                   sum_pi_squared_log_pi=clean(self.sum_pi_squared_log_pi),
                                   coefficient=clean(self.coefficient))


@dataclass(eq=False)
class PapoAdvantage:
    """Everything :func:`papo_advantage` computes for a ``[B, T]`` batch.

    Materialised: ``advantages`` (Â, float32), ``branch`` (int8: +1 expanding, −1 contracting, 0 neutral
    or masked), ``row_advantages`` (``[B]`` A per response), ``masses`` (float64 ``[2]`` after
    ``mass_reduce``), the final weights and ``scale``, and per-response aggregates (float64 ``[B]``
    properties: :attr:`valid_tokens`, :attr:`positive_p_tokens`, ...). ``base_advantages``,
    ``coefficient`` and ``rho`` are computed from the inputs when first asked for.
    """

    advantages: Tensor
    branch: Tensor
    row_advantages: Tensor
    row_stats: Tensor  # float64 [B, 6]; columns _VALID, _P_POS, ... (use the properties)
    masses: Tensor
    expand_weight: float
    contract_weight: float
    scale: float
    inputs: TokenStatistics
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def split(self) -> str:
        return self.inputs.split

    def finite(self) -> bool:
        """False when a non-finite input on a valid token (or a non-finite score) reached the result."""
        return bool(torch.isfinite(self.row_stats).all() and torch.isfinite(self.row_advantages).all())

    # ---- per-response aggregates, float64 [B] ----
    @property
    def valid_tokens(self) -> Tensor:
        return self.row_stats[:, _VALID]

    @property
    def positive_p_tokens(self) -> Tensor:
        """Valid tokens with ``P_t > 0``."""
        return self.row_stats[:, _P_POS]

    @property
    def negative_p_tokens(self) -> Tensor:
        """Valid tokens with ``P_t < 0``."""
        return self.row_stats[:, _P_NEG]

    @property
    def p_sum(self) -> Tensor:
        """``Σ_t P_t`` over valid tokens (float32 sums)."""
        return self.row_stats[:, _P_SUM]

    @property
    def p_abs_sum(self) -> Tensor:
        """``Σ_t |P_t|`` over valid tokens (0 unless ``with_row_stats``)."""
        return self.row_stats[:, _P_ABS_SUM]

    @property
    def sampled_term_disagreements(self) -> Tensor:
        """Valid tokens where sign(P_t) differs from the sampled-term-only sign (``correction="exact"`` and
        ``with_row_stats`` only; else 0)."""
        return self.row_stats[:, _SAMPLED_DISAGREE]

    def branch_token_counts(self) -> tuple[Tensor, Tensor]:
        """Per-response token counts ``(n₊, n₋)`` of the expanding and contracting branches, float64 ``[B]``."""
        return _branch_token_counts(self.row_stats, self.row_advantages, self.split)

    # ---- token-level quantities, computed on demand ----
    @property
    def base_advantages(self) -> Tensor:
        """``A_t``: the base advantage broadcast over valid tokens, ``[B, T]`` float32."""
        if "base" not in self._cache:
            self._cache["base"] = self.row_advantages.unsqueeze(-1) * self.inputs.response_mask.bool()
        return self._cache["base"]

    @property
    def coefficient(self) -> Tensor:
        """``P_t`` on valid tokens (0 elsewhere), ``[B, T]`` float32."""
        if "coeff" not in self._cache:
            s = self.inputs
            coeff = s.coefficient.float() if s.coefficient is not None else polarity_coefficient(
                s.log_prob, s.entropy, s.sum_pi_squared, s.sum_pi_squared_log_pi, s.correction)
            self._cache["coeff"] = torch.where(s.response_mask.bool(), coeff, torch.zeros((), dtype=coeff.dtype))
        return self._cache["coeff"]

    @property
    def rho(self) -> Tensor:
        """``ρ_t = A_t P_t``, ``[B, T]`` float32."""
        return polarity(self.base_advantages, self.coefficient)


def _branch_token_counts(row_stats: Tensor, row_advantages: Tensor, split: str) -> tuple[Tensor, Tensor]:
    """``(n₊, n₋)`` per response from the aggregates. ``A`` is constant over a response: under
    ``split="polarity"`` its tokens with ``P > 0`` expand when ``A_b > 0`` and contract when ``A_b < 0`` (the
    reverse for ``P < 0``); under ``"advantage_sign"`` all its valid tokens expand when ``A_b < 0`` and contract
    when ``A_b > 0``. ``A_b = 0`` rows count in neither."""
    positive, negative = row_advantages > 0, row_advantages < 0
    valid = row_stats[:, _VALID]
    zero = torch.zeros_like(valid)
    if split == "polarity":
        p_pos, p_neg = row_stats[:, _P_POS], row_stats[:, _P_NEG]
        return (torch.where(positive, p_pos, torch.where(negative, p_neg, zero)),
                torch.where(positive, p_neg, torch.where(negative, p_pos, zero)))
    return torch.where(negative, valid, zero), torch.where(positive, valid, zero)


def _row_chunks(n_rows: int, n_cols: int) -> Iterator[tuple[int, int]]:
    rows = max(1, _ADV_CHUNK_ELEMENTS // max(1, n_cols))
    for r0 in range(0, n_rows, rows):
        yield r0, min(n_rows, r0 + rows)


def response_sums(values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row sums of ``values`` over the 0/1 ``mask`` (``[B, T]``) and the valid-token counts, float64 ``[B]``.

    Row-chunked, accumulated in float64: the sums do not depend on padding or on how a response's tokens
    were split. Non-finite values where the mask is 0 (padding) are ignored.
    """
    n_rows, n_cols = mask.shape
    sums = torch.empty(n_rows, dtype=torch.float64, device=mask.device)
    counts = torch.empty(n_rows, dtype=torch.float64, device=mask.device)
    zero = torch.zeros((), dtype=values.dtype, device=mask.device)
    for r0, r1 in _row_chunks(n_rows, n_cols):
        valid = mask[r0:r1].bool()
        sums[r0:r1] = torch.where(valid, values[r0:r1], zero).sum(-1, dtype=torch.float64)
        counts[r0:r1] = valid.sum(-1)
    return sums, counts


@torch.no_grad()
def papo_advantage(
    scores: Tensor,
    groups: Tensor,
    response_mask: Tensor,
    log_prob: Tensor,
    entropy: Tensor,
    sum_pi_squared: Optional[Tensor],
    sum_pi_squared_log_pi: Optional[Tensor],
    expand: float,
    contract: float,
    *,
    norm_by_std: bool = True,
    epsilon: float = 1e-6,
    correction: str = "exact",
    split: str = "polarity",
    w_min: float = 0.2,
    w_max: float = 5.0,
    mass_reduce: Optional[Callable[[Tensor], Tensor]] = None,
    with_row_stats: bool = True,
    coefficient: Optional[Tensor] = None,
) -> PapoAdvantage:
    """(A1)–(A4) on one batch; the arguments are those of :func:`papo_verl.algorithm.papo.papo_advantage`, plus:

    Args:
        with_row_stats: also collect the per-response aggregates that :func:`papo_verl.algorithm.metrics.
            advantage_metrics` needs (Σ|P|, sampled-term disagreements).
        coefficient: optional ``[B, T]`` polarity coefficients ``P_t`` already computed by the actor
            (same ``correction``); then ``sum_pi_squared`` and ``sum_pi_squared_log_pi`` may be None.

    A non-finite statistic on a valid token makes the result non-finite (:meth:`PapoAdvantage.finite`).
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if response_mask.dim() != 2:
        raise ValueError(f"response_mask must be [B, T], got shape {tuple(response_mask.shape)}")
    if coefficient is None and (sum_pi_squared is None or sum_pi_squared_log_pi is None):
        raise ValueError("papo_advantage needs sum_pi_squared and sum_pi_squared_log_pi, or the coefficient")
    inputs = TokenStatistics(response_mask, log_prob, entropy, sum_pi_squared, sum_pi_squared_log_pi, coefficient,
                             correction, split)
    row_adv = group_advantage(scores, groups, norm_by_std=norm_by_std, epsilon=epsilon).to(
        device=response_mask.device, dtype=torch.float32)
    branch, row_stats = _branch_labels(inputs, row_adv, with_row_stats)
    if not torch.isfinite(row_stats).all():  # NaN/inf somewhere: clean the padding and repeat; what remains is real
        inputs = inputs.with_padding_zeroed()
        branch, row_stats = _branch_labels(inputs, row_adv, with_row_stats)
    return _reweight(inputs, branch=branch, row_stats=row_stats, row_advantages=row_adv, expand=expand,
                     contract=contract, w_min=w_min, w_max=w_max, mass_reduce=mass_reduce)


def _branch_labels(inputs: TokenStatistics, row_adv: Tensor, with_row_stats: bool) -> tuple[Tensor, Tensor]:
    """Pass 1: the branch labels on valid tokens (int8 ``[B, T]``: ``sign(A_b)·sign(P_t)``, or ``−sign(A_b)``
    with ``split="advantage_sign"``) and the float64 ``[B, 6]`` per-response aggregates."""
    response_mask, coefficient = inputs.response_mask, inputs.coefficient
    n_rows, n_cols = response_mask.shape
    device = response_mask.device
    branch = torch.empty(n_rows, n_cols, dtype=torch.int8, device=device)
    sign_adv = torch.sign(row_adv).unsqueeze(-1)
    row_stats = torch.zeros(n_rows, 6, dtype=torch.float64, device=device)
    exact = inputs.correction == "exact"
    log_prob, entropy = inputs.log_prob, inputs.entropy
    work = torch.empty(min(n_rows, max(1, _ADV_CHUNK_ELEMENTS // max(1, n_cols))), n_cols, dtype=torch.float32,
                       device=device) if coefficient is not None else None
    for r0, r1 in _row_chunks(n_rows, n_cols):
        m = response_mask[r0:r1]
        m = m if m.dtype == torch.float32 else m.to(torch.float32)  # 0/1 response mask
        lh = None
        if coefficient is None:  # polarity_coefficient's operation sequence, in place
            ell, h = log_prob[r0:r1].float(), entropy[r0:r1].float()
            lh = ell + h
            coeff = torch.exp(ell)
            if exact:
                coeff = torch.addcmul(inputs.sum_pi_squared_log_pi[r0:r1].float(), h,
                                      inputs.sum_pi_squared[r0:r1].float()).addcmul_(coeff, lh, value=-1.0)
            else:
                coeff.mul_(lh).neg_()
            coeff.mul_(m)
        else:
            coeff = torch.mul(coefficient[r0:r1], m, out=work[: r1 - r0])
        s = torch.sign(coeff)
        stats = row_stats[r0:r1]
        net = s.sum(-1)  # #(P > 0) − #(P < 0); integer-valued float32 sums, exact below 2**24 tokens
        if inputs.split == "polarity":
            branch[r0:r1] = s * sign_adv[r0:r1]  # sign(ρ) = sign(A) sign(P)
        else:
            branch[r0:r1] = -sign_adv[r0:r1] * m  # penalised samples expand, reinforced ones contract
        if with_row_stats and exact:
            # the sampled-term-only coefficient −π_k(ℓ + H) has the sign of −(ℓ + H): agreement ⇔ s·(ℓ + H) < 0
            if lh is None:
                lh = log_prob[r0:r1].float() + entropy[r0:r1].float()
            stats[:, _SAMPLED_DISAGREE] = -(s * lh < 0).sum(-1)  # minus the agreements; + nonzero below
        nonzero = s.abs_().sum(-1)
        stats[:, _P_POS] = 0.5 * (nonzero + net)
        stats[:, _P_NEG] = 0.5 * (nonzero - net)
        # float32 row sums of P: the metrics' ΣP, and the finiteness check (sign() maps NaN to 0)
        stats[:, _P_SUM] = coeff.sum(-1)
        stats[:, _VALID] = m.sum(-1)
        if with_row_stats:
            stats[:, _P_ABS_SUM] = coeff.abs_().sum(-1)
            if exact:
                stats[:, _SAMPLED_DISAGREE] += nonzero
    return branch, row_stats


def _reweight(inputs: TokenStatistics, *, branch: Tensor, row_stats: Tensor, row_advantages: Tensor, expand: float,
              contract: float, w_min: float, w_max: float,
              mass_reduce: Optional[Callable[[Tensor], Tensor]]) -> PapoAdvantage:
    """Masses (A3), conservation and pass 2 (A4): ``Â = mask·c0 + b·c1 + |b|·c2`` from the branch labels ``b``."""
    response_mask = inputs.response_mask
    n_rows, n_cols = response_mask.shape
    magnitude = row_advantages.abs().double()
    n_plus, n_minus = _branch_token_counts(row_stats, row_advantages, inputs.split)
    masses = torch.stack([(magnitude * n_plus).sum(), (magnitude * n_minus).sum()])
    if mass_reduce is not None:
        masses = mass_reduce(masses)
    w_plus, w_minus, scale = conserve_pressure(masses, expand, contract, w_min=w_min, w_max=w_max)

    # w(b) = 1 + b (w₊ − w₋)/2 + |b| ((w₊ + w₋)/2 − 1) for b ∈ {−1, 0, 1}
    c0 = row_advantages.unsqueeze(-1)
    c1 = (row_advantages * (0.5 * (w_plus - w_minus))).unsqueeze(-1)
    c2 = (row_advantages * (0.5 * (w_plus + w_minus) - 1.0)).unsqueeze(-1)
    advantages = torch.empty(n_rows, n_cols, dtype=torch.float32, device=response_mask.device)
    for r0, r1 in _row_chunks(n_rows, n_cols):
        b = branch[r0:r1].float()
        m = response_mask[r0:r1]
        m = m if m.dtype == torch.float32 else m.to(torch.float32)
        out = torch.mul(m, c0[r0:r1], out=advantages[r0:r1])
        out.addcmul_(b, c1[r0:r1]).addcmul_(b.abs_(), c2[r0:r1])
    return PapoAdvantage(advantages=advantages, branch=branch, row_advantages=row_advantages, row_stats=row_stats,
                         masses=masses, expand_weight=w_plus, contract_weight=w_minus, scale=scale, inputs=inputs)
