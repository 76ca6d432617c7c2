"""Closed-form multi-concept merge of cross-attention K/V weights (MIMA / Custom Diffusion).

Paper notation: W is c×d and text embeddings are rows (c = text dim, d = output dim); an
``nn.Linear`` weight is Wᵀ (see :meth:`MergePlan.merge_linear`). With target rows C (m×c, the
concepts' rows C_n stacked), regularisation rows C_reg (r×c), base W^p and adapted W_n,

    φ* = argmin ‖C_reg φ − C_reg W^p‖²_F + λ‖φ − W^p‖²_F  s.t.  C φ = O* = concat_n(C_n W_n)
       = W^p + Q⁻¹Cᵀ (C Q⁻¹ Cᵀ)⁻¹ (O* − C W^p),        Q = C_regᵀC_reg + λI.

MIMA's Eq. 8/20 prints (C Q Cᵀ)⁻¹, a slip: substituting φ = W^p + Q⁻¹CᵀM (Eq. 18) into the
constraint gives (C Q⁻¹ Cᵀ)⁻¹, which is also Custom Diffusion's formula.

Ridge λ (default ``ridge_rel·trace(C_regᵀC_reg)/c``): Q is singular whenever r < c, and the public
MIMA code has no ridge (its ``--lam 0.5`` is parsed but unused). The ridge is the penalty
λ‖φ − W^p‖², so directions the regularisation captions never span stay at W^p instead of being
undetermined.

Duplicate rows: CLIP's text encoder is causal, so prompts sharing a prefix give identical
prefix rows across concepts, each with its own target. Rows equal within ``dedup_tol`` are merged
into one constraint whose target is the MEAN of theirs (the least-squares compromise). Custom
Diffusion (``src/diffusers_composenW.py``) instead keeps only the first copy and its target, which
silently favours the first concept. Near-dependent rows that remain make S = C Q⁻¹ Cᵀ
ill-conditioned; S (and Q) then get a jitter relative to their trace so the result stays finite.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MergeConditioningWarning", "MergePlan", "merge_weights", "merge_state_dicts"]


class MergeConditioningWarning(UserWarning):
    """The merge's linear systems were ill-conditioned, regularised, or rows were merged."""


def _cond(M: Tensor) -> float:
    # Diagnostics only: float64 eigenvalues, kept off the autograd graph.
    with torch.no_grad():
        ev = torch.linalg.eigvalsh(M.detach().double())
    lo, hi = ev[0].item(), ev[-1].item()
    return hi / lo if lo > 0 else float("inf")


def _factor(M: Tensor, max_cond: float) -> tuple[Tensor, float, float]:
    """Cholesky of SPD ``M``, jittered by trace(M)/max_cond when cond(M) exceeds ``max_cond``."""
    M = 0.5 * (M + M.mT)  # rounding breaks exact symmetry; Cholesky reads one triangle only
    cond = _cond(M)
    eye = torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
    scale = torch.diagonal(M).sum().clamp_min(torch.finfo(M.dtype).tiny)
    jitter = 0.0 if cond <= max_cond else 1.0 / max_cond
    for _ in range(8):
        L, info = torch.linalg.cholesky_ex(M + (jitter * scale) * eye if jitter else M)
        if int(info) == 0:
            return L, cond, jitter
        jitter = 1.0 / max_cond if jitter == 0.0 else 10.0 * jitter
    raise torch.linalg.LinAlgError("merge: matrix is not positive definite even after jitter")


def _group_rows(C: Tensor, tol: float) -> Tensor:
    """Index of each row's group; rows within ``tol`` (relative) of a group's first row join it."""
    with torch.no_grad():
        X = C.detach()
        norms = X.norm(dim=1)
        # The matmul form of cdist leaves rounding noise on exact copies; tol=0 must still match them.
        dist = torch.cdist(X, X, compute_mode="donot_use_mm_for_euclid_dist")
        close = dist <= tol * torch.maximum(norms[:, None], norms[None, :])
        group = torch.full((X.shape[0],), -1, dtype=torch.long, device=X.device)
        n = 0
        for i in range(X.shape[0]):
            if group[i] < 0:
                group[close[i] & (group < 0)] = n
                n += 1
    return group


def _check_matrix(name: str, t: Tensor, rows: int | None, cols: int | None,
                  dtype: torch.dtype | None = None) -> None:
    if not isinstance(t, Tensor) or t.ndim != 2 or not t.is_floating_point():
        raise ValueError(f"{name} must be a 2-D floating tensor, got {getattr(t, 'shape', type(t))}")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name} has dtype {t.dtype}, the merge plan uses {dtype}")
    if (rows is not None and t.shape[0] != rows) or (cols is not None and t.shape[1] != cols):
        want = f"({'*' if rows is None else rows}, {'*' if cols is None else cols})"
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {want}")


@dataclass
class MergePlan:
    """Precomputed merge operator for one (C, C_reg); reuse it for every K/V layer of a UNet.

    ``P = Q⁻¹C'ᵀS⁻¹`` (c×m') acts on the m' de-duplicated rows ``C_unique``; ``group`` maps each of
    the m stacked rows to its unique row. Built from tensors that require grad, the plan stays on
    the autograd graph (several layers' merges then share it; backward once through their sum).
    """

    P: Tensor
    C: Tensor
    C_unique: Tensor
    group: Tensor
    counts: Tensor
    sizes: list[int]
    ridge: float
    cond_q_raw: float
    cond_q: float
    cond_s: float
    n_merged: int

    @classmethod
    def build(cls, C_list: Sequence[Tensor], C_reg: Tensor, *, ridge_rel: float = 1e-4,
              ridge_abs: float | None = None, dedup_tol: float = 1e-6,
              max_cond: float | None = None, warn_cond: float = 1e8) -> MergePlan:
        """Dedup the rows of ``C_list`` (each l_n×c), factorise Q and S once.

        ``ridge_abs`` overrides ``ridge_rel``. ``max_cond`` (default 0.01/eps of the dtype) is the
        condition number past which Q or S is jittered; in float32 that usually enlarges the ridge,
        so build in float64 when accuracy matters (the c×c solves are cheap). Emits one
        MergeConditioningWarning when cond(C_regᵀC_reg) or cond(S) exceeds ``warn_cond``, a jitter
        was needed, or rows were merged.
        """
        if len(C_list) == 0:
            raise ValueError("C_list must hold at least one concept's target rows")
        _check_matrix("C_list[0]", C_list[0], None, None)
        c = C_list[0].shape[1]
        for n, Cn in enumerate(C_list):
            _check_matrix(f"C_list[{n}]", Cn, None, c, C_list[0].dtype)
        _check_matrix("C_reg", C_reg, None, c, C_list[0].dtype)
        if ridge_rel < 0 or (ridge_abs is not None and ridge_abs < 0):
            raise ValueError("ridge_rel and ridge_abs must be non-negative")
        max_cond = max_cond or 0.01 / torch.finfo(C_reg.dtype).eps

        C = torch.cat(list(C_list), 0)
        group = _group_rows(C, dedup_tol)
        m_u = int(group.max()) + 1
        counts = torch.bincount(group, minlength=m_u).to(C.dtype)
        C_u = C.new_zeros(m_u, c).index_add(0, group, C) / counts[:, None]

        Q_raw = C_reg.mT @ C_reg
        lam = ridge_abs if ridge_abs is not None else ridge_rel * torch.diagonal(Q_raw).sum() / c
        Q = Q_raw + lam * torch.eye(c, dtype=C.dtype, device=C.device)
        Lq, cond_q, jit_q = _factor(Q, max_cond)
        X = torch.cholesky_solve(C_u.mT, Lq)  # Q⁻¹C'ᵀ, c×m'
        Ls, cond_s, jit_s = _factor(C_u @ X, max_cond)
        P = torch.cholesky_solve(X.mT, Ls).mT  # (S⁻¹Xᵀ)ᵀ = Q⁻¹C'ᵀS⁻¹ since S is symmetric

        ridge = float(lam.detach()) if isinstance(lam, Tensor) else float(lam)
        plan = cls(P, C, C_u, group, counts, [Cn.shape[0] for Cn in C_list], ridge,
                   _cond(Q_raw), cond_q, cond_s, C.shape[0] - m_u)
        if max(plan.cond_q_raw, cond_s) > warn_cond or jit_q or jit_s or plan.n_merged:
            warnings.warn(
                f"MIMA merge: cond(C_reg^T C_reg)={plan.cond_q_raw:.3g} (r={C_reg.shape[0]}, c={c}), "
                f"cond(Q+ridge)={cond_q:.3g} with ridge={ridge:.3g}, cond(S)={cond_s:.3g}; "
                f"jitter rel. Q={jit_q:.3g}, S={jit_s:.3g}; {plan.n_merged} duplicate target rows "
                f"merged (their targets averaged), {m_u} unique of {C.shape[0]}",
                MergeConditioningWarning, stacklevel=2)
        return plan

    def merge(self, W_p: Tensor, W_list: Sequence[Tensor]) -> Tensor:
        """φ = W^p + P(O* − C'W^p), O* = each concept's C_n W_n averaged over duplicate rows (c×d)."""
        c, dt = self.C.shape[1], self.C.dtype
        _check_matrix("W_p", W_p, c, None, dt)
        if len(W_list) != len(self.sizes):
            raise ValueError(f"W_list has {len(W_list)} weights, the plan has {len(self.sizes)} concepts")
        for n, Wn in enumerate(W_list):
            _check_matrix(f"W_list[{n}]", Wn, c, W_p.shape[1], dt)
        O = torch.cat([Cn @ Wn for Cn, Wn in zip(self.C.split(self.sizes), W_list)], 0)
        O_u = O.new_zeros(self.C_unique.shape[0], O.shape[1]).index_add(0, self.group, O)
        O_u = O_u / self.counts[:, None]
        return W_p + self.P @ (O_u - self.C_unique @ W_p)

    def merge_linear(self, weight_p: Tensor, weights: Sequence[Tensor]) -> Tensor:
        """:meth:`merge` for ``nn.Linear`` weights (d×c = Wᵀ): transposes in and out."""
        c = self.C.shape[1]
        _check_matrix("weight_p", weight_p, None, c)
        for n, w in enumerate(weights):
            _check_matrix(f"weights[{n}]", w, weight_p.shape[0], c)
        return self.merge(weight_p.mT, [w.mT for w in weights]).mT


def merge_weights(W_p: Tensor, W_list: Sequence[Tensor], C_list: Sequence[Tensor], C_reg: Tensor,
                  **build_kwargs: float | None) -> Tensor:
    """One-shot merge in paper layout (W is c×d); ``build_kwargs`` go to :meth:`MergePlan.build`."""
    return MergePlan.build(C_list, C_reg, **build_kwargs).merge(W_p, W_list)


def merge_state_dicts(base: Mapping[str, Tensor], adapted: Sequence[Mapping[str, Tensor]],
                      kv_names: Iterable[str], plan: MergePlan) -> dict[str, Tensor]:
    """Merge N adapted state dicts: closed form on ``kv_names`` (nn.Linear d×c), mean elsewhere.

    MIMA Eq. 10: parameters outside the key/value projections are averaged over the N concepts.
    Entries of ``base`` absent from every adapted dict are passed through unchanged.
    """
    if len(adapted) != len(plan.sizes):
        raise ValueError(f"adapted has {len(adapted)} state dicts, the plan has {len(plan.sizes)} concepts")
    kv = list(dict.fromkeys(kv_names))
    keys = set().union(*(a.keys() for a in adapted))
    out = {k: v for k, v in base.items() if k not in keys}
    for k in sorted(keys - set(kv)):
        missing = [n for n, a in enumerate(adapted) if k not in a]
        if missing:
            raise ValueError(f"adapted[{missing[0]}] lacks {k!r}, present in another adapted dict")
        vals = [a[k] for a in adapted]
        if any(v.shape != vals[0].shape for v in vals):
            raise ValueError(f"adapted dicts disagree on the shape of {k!r}")
        if vals[0].is_floating_point():
            out[k] = torch.stack(vals).mean(0)
        elif all(torch.equal(v, vals[0]) for v in vals):
            out[k] = vals[0]
        else:
            raise ValueError(f"non-float entry {k!r} differs across adapted dicts; cannot average")
    for k in kv:
        if k not in base:
            raise ValueError(f"kv name {k!r} is not in base")
        c = plan.C.shape[1]
        _check_matrix(f"base[{k!r}]", base[k], None, c)
        for n, a in enumerate(adapted):
            if k not in a:
                raise ValueError(f"kv name {k!r} is not in adapted[{n}]")
            _check_matrix(f"adapted[{n}][{k!r}]", a[k], base[k].shape[0], c)
        out[k] = plan.merge_linear(base[k], [a[k] for a in adapted])
    return out
