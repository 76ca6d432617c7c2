"""The closed-form MIMA / Custom Diffusion merge solves the constrained least-squares problem it claims."""

from __future__ import annotations

import warnings

import pytest
import torch

from immunobench.merge import (
    MergeConditioningWarning,
    MergePlan,
    merge_state_dicts,
    merge_weights,
)

DT = torch.float64


def _problem(seed: int, c: int, d: int, sizes: list[int], r: int):
    g = torch.Generator().manual_seed(seed)
    C_list = [torch.randn(l, c, generator=g, dtype=DT) for l in sizes]
    C_reg = torch.randn(r, c, generator=g, dtype=DT)
    W_p = torch.randn(c, d, generator=g, dtype=DT)
    W_list = [W_p + 0.5 * torch.randn(c, d, generator=g, dtype=DT) for _ in sizes]
    return C_list, C_reg, W_p, W_list


def _targets(C_list, W_list):
    return torch.cat([Cn @ Wn for Cn, Wn in zip(C_list, W_list)])


def _quiet_plan(*args, **kwargs) -> MergePlan:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MergeConditioningWarning)
        return MergePlan.build(*args, **kwargs)


@pytest.mark.parametrize("c,d,sizes,r", [(12, 5, [2, 3], 40), (16, 4, [3, 2, 2], 6)])
def test_constraint_holds(c, d, sizes, r):
    C_list, C_reg, W_p, W_list = _problem(0, c, d, sizes, r)
    phi = _quiet_plan(C_list, C_reg).merge(W_p, W_list)
    C, O = torch.cat(C_list), _targets(C_list, W_list)
    assert (C @ phi - O).norm() / O.norm() < 1e-9


@pytest.mark.parametrize("seed,c,d,sizes,r", [(1, 10, 4, [2, 3], 30), (2, 14, 6, [4, 1, 3], 9),
                                              (3, 8, 3, [1], 8)])
def test_matches_generic_kkt_solve(seed, c, d, sizes, r):
    C_list, C_reg, W_p, W_list = _problem(seed, c, d, sizes, r)
    plan = _quiet_plan(C_list, C_reg, ridge_rel=1e-2)
    phi = plan.merge(W_p, W_list)
    C, O = torch.cat(C_list), _targets(C_list, W_list)
    m = C.shape[0]
    Q = C_reg.T @ C_reg + plan.ridge * torch.eye(c, dtype=DT)
    K = torch.cat([torch.cat([2 * Q, C.T], 1), torch.cat([C, torch.zeros(m, m, dtype=DT)], 1)])
    sol = torch.linalg.solve(K, torch.cat([2 * Q @ W_p, O]))
    torch.testing.assert_close(phi, sol[:c], rtol=1e-8, atol=1e-9)


def test_single_concept_orthogonal_to_regulariser():
    c, d = 12, 4
    g = torch.Generator().manual_seed(4)
    basis = torch.linalg.qr(torch.randn(c, c, generator=g, dtype=DT))[0]
    C_reg = torch.randn(30, 8, generator=g, dtype=DT) @ basis[:, :8].T  # spans the first 8 dirs
    C1 = torch.randn(3, 4, generator=g, dtype=DT) @ basis[:, 8:].T  # the other 4 dirs, plus slight overlap
    C1 = C1 + 1e-4 * torch.randn(3, c, generator=g, dtype=DT)
    W_p = torch.randn(c, d, generator=g, dtype=DT)
    W_1 = W_p + torch.randn(c, d, generator=g, dtype=DT)
    phi = _quiet_plan([C1], C_reg).merge(W_p, [W_1])
    torch.testing.assert_close(C1 @ phi, C1 @ W_1, rtol=1e-10, atol=1e-10)
    moved = (C_reg @ (phi - W_p)).norm() / (C_reg @ (W_1 - W_p)).norm()
    assert moved < 1e-2


def test_gradcheck_all_inputs():
    c, d, r = 6, 3, 8
    C_list, C_reg, W_p, W_list = _problem(5, c, d, [2, 1], r)
    leaves = [t.clone().requires_grad_() for t in (W_p, *W_list, *C_list, C_reg)]

    def f(W_p, W_1, W_2, C_1, C_2, C_reg):
        return merge_weights(W_p, [W_1, W_2], [C_1, C_2], C_reg, ridge_rel=1e-2)

    with warnings.catch_warnings():
        warnings.simplefilter("error", MergeConditioningWarning)  # well-posed: no warning expected
        assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_singular_regulariser_is_finite_and_warns():
    C_list, C_reg, W_p, W_list = _problem(6, 10, 3, [2, 2], 3)  # r=3 < c=10: C_regᵀC_reg singular
    with pytest.warns(MergeConditioningWarning, match="cond") as rec:
        phi = merge_weights(W_p, W_list, C_list, C_reg)
    assert len(rec) == 1 and "ridge" in str(rec[0].message)
    assert torch.isfinite(phi).all()
    C, O = torch.cat(C_list), _targets(C_list, W_list)
    assert (C @ phi - O).norm() / O.norm() < 1e-6
    with pytest.warns(MergeConditioningWarning, match="cond"):  # no ridge at all: jitter rescues Q
        phi0 = merge_weights(W_p, W_list, C_list, C_reg, ridge_rel=0.0)
    assert torch.isfinite(phi0).all()


@pytest.mark.parametrize("tol,noise", [(1e-6, 0.0), (1e-6, 1e-9)])
def test_duplicate_rows_get_mean_target(tol, noise):
    c, d = 10, 4
    g = torch.Generator().manual_seed(7)
    prefix = torch.randn(1, c, generator=g, dtype=DT)  # a shared causal prefix token
    C1 = torch.cat([prefix, torch.randn(2, c, generator=g, dtype=DT)])
    C2 = torch.cat([prefix + noise * torch.randn(1, c, generator=g, dtype=DT),
                    torch.randn(1, c, generator=g, dtype=DT)])
    C_reg = torch.randn(25, c, generator=g, dtype=DT)
    W_p = torch.randn(c, d, generator=g, dtype=DT)
    W_1, W_2 = W_p + torch.randn(c, d, generator=g, dtype=DT), W_p - torch.randn(c, d, generator=g, dtype=DT)
    with pytest.warns(MergeConditioningWarning, match="1 duplicate"):
        phi = merge_weights(W_p, [W_1, W_2], [C1, C2], C_reg, dedup_tol=tol)
    assert torch.isfinite(phi).all()
    torch.testing.assert_close(prefix @ phi, 0.5 * (prefix @ W_1 + prefix @ W_2), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(C1[1:] @ phi, C1[1:] @ W_1)
    torch.testing.assert_close(C2[1:] @ phi, C2[1:] @ W_2)


def test_gradient_really_flows_through_the_merge():
    C_list, C_reg, W_p, W_list = _problem(8, 8, 3, [2, 2], 12)
    G = torch.randn(8, 3, dtype=DT, generator=torch.Generator().manual_seed(9))
    W_p = W_p.clone().requires_grad_()  # keeps every variant's loss on the graph
    W_1 = W_list[0].clone().requires_grad_()
    C_1 = C_list[0].clone().requires_grad_()

    def grads(detach_inside: bool):
        w1, c1 = (W_1.detach(), C_1.detach()) if detach_inside else (W_1, C_1)
        plan = _quiet_plan([c1, C_list[1]], C_reg)
        loss = (plan.merge(W_p, [w1, W_list[1]]) * G).sum()
        gw, gc = torch.autograd.grad(loss, [W_1, C_1], allow_unused=True, materialize_grads=True)
        return gw, gc, plan

    gw, gc, plan = grads(False)
    assert gw.abs().max() > 1e-3 and gc.abs().max() > 1e-3
    # Analytic: φ depends on W_1 only through C_1 W_1 and P's first block of columns.
    torch.testing.assert_close(gw, C_1.detach().T @ plan.P[:, :2].detach().T @ G)
    gw_sg, gc_sg, _ = grads(True)
    assert torch.equal(gw_sg, torch.zeros_like(gw)) and torch.equal(gc_sg, torch.zeros_like(gc))


def test_state_dict_merge():
    c, d = 8, 5
    C_list, C_reg, _, _ = _problem(10, c, d, [2, 3], 20)
    g = torch.Generator().manual_seed(11)
    kv = ["down.attn2.to_k.weight", "down.attn2.to_v.weight"]
    base = {k: torch.randn(d, c, generator=g, dtype=DT) for k in kv}
    base |= {"norm.weight": torch.randn(d, generator=g, dtype=DT), "frozen.bias": torch.zeros(3, dtype=DT)}
    adapted = [{**{k: base[k] + torch.randn(d, c, generator=g, dtype=DT) for k in kv},
                "norm.weight": torch.randn(d, generator=g, dtype=DT),
                "steps": torch.tensor([5])} for _ in C_list]
    plan = _quiet_plan(C_list, C_reg)
    out = merge_state_dicts(base, adapted, kv, plan)
    torch.testing.assert_close(out["norm.weight"], 0.5 * (adapted[0]["norm.weight"] + adapted[1]["norm.weight"]))
    assert torch.equal(out["frozen.bias"], base["frozen.bias"]) and torch.equal(out["steps"], torch.tensor([5]))
    for k in kv:
        assert out[k].shape == (d, c)
        for Cn, a in zip(C_list, adapted):
            torch.testing.assert_close(out[k] @ Cn.T, a[k] @ Cn.T, rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="adapted\\[1\\]"):
        merge_state_dicts(base, [adapted[0], {**adapted[1], kv[0]: torch.zeros(d, c + 1, dtype=DT)}], kv, plan)


def test_plan_reuse_equals_one_shot():
    C_list, C_reg, W_p, W_list = _problem(12, 9, 4, [2, 2], 15)
    _, _, V_p, V_list = _problem(13, 9, 6, [2, 2], 15)
    plan = _quiet_plan(C_list, C_reg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MergeConditioningWarning)
        for Wp, Wl in ((W_p, W_list), (V_p, V_list)):
            torch.testing.assert_close(plan.merge(Wp, Wl), merge_weights(Wp, Wl, C_list, C_reg))
    torch.testing.assert_close(plan.merge_linear(W_p.T, [w.T for w in W_list]), plan.merge(W_p, W_list).T)


def test_shape_errors_name_the_argument():
    C_list, C_reg, W_p, W_list = _problem(14, 6, 3, [2, 1], 8)
    with pytest.raises(ValueError, match="C_reg"):
        MergePlan.build(C_list, C_reg[:, :5])
    with pytest.raises(ValueError, match=r"C_list\[1\]"):
        MergePlan.build([C_list[0], C_list[1][:, :4]], C_reg)
    plan = _quiet_plan(C_list, C_reg)
    with pytest.raises(ValueError, match="W_p"):
        plan.merge(W_p[:5], W_list)
    with pytest.raises(ValueError, match=r"W_list\[1\]"):
        plan.merge(W_p, [W_list[0], W_list[1][:, :2]])
    with pytest.raises(ValueError, match="W_list"):
        plan.merge(W_p, W_list[:1])
