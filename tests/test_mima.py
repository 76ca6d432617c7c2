"""MIMA's outer gradient flows through the merge and the unrolled inner step (issue [3/7])."""
import copy

import pytest
import torch

from immunobench.diffusion import second_order_attention, select_parameters
from immunobench.merge import MergePlan
from immunobench.defenses.mima import Batch, MIMAConfig, outer_objective


@pytest.fixture(scope="module")
def setup(tiny_sd):
    torch.manual_seed(0)
    unet = copy.deepcopy(tiny_sd.unet).double().requires_grad_(False)
    theta = {k: p.requires_grad_(True) for k, p in select_parameters(unet, "xattn").items()}
    lower = list(theta)
    kv = [k for k in lower if ".attn2.to_k." in k or ".attn2.to_v." in k]
    dim = unet.config.cross_attention_dim
    size = unet.config.sample_size
    g = torch.Generator().manual_seed(1)

    def batch():
        return Batch(torch.randn(1, 4, size, size, generator=g, dtype=torch.float64),
                     torch.randn(1, 77, dim, generator=g, dtype=torch.float64),
                     torch.randn(1, 4, size, size, generator=g, dtype=torch.float64),
                     torch.randint(100, 900, (1,), generator=g))

    batches = [(batch(), batch(), batch(), batch()) for _ in range(2)]  # two concepts, with prior terms
    C_list = [torch.randn(3, dim, generator=g, dtype=torch.float64) for _ in range(2)]
    plan = MergePlan.build(C_list, torch.randn(40, dim, generator=g, dtype=torch.float64))
    cfg = MIMAConfig(inner_lr=5.0, prior_weight=1.0)
    return unet, theta, lower, kv, plan, batches, cfg


def _objective(setup, theta, stop_gradient=False):
    unet, _, lower, kv, plan, batches, cfg = setup
    with second_order_attention():
        return outer_objective(unet, unet_scheduler(), theta, lower, kv, plan, batches, cfg, stop_gradient)


def unet_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def test_outer_gradient_matches_finite_differences_and_differs_from_stop_gradient(setup):
    unet, theta, lower, kv, plan, batches, cfg = setup
    name = kv[0]  # a K projection: its gradient passes through the merge's closed form
    g = torch.Generator().manual_seed(2)
    direction = torch.randn(theta[name].shape, generator=g, dtype=torch.float64)
    direction /= direction.norm()

    grad = torch.autograd.grad(_objective(setup, theta), theta[name])[0]
    analytic = float((grad * direction).sum())

    eps = 1e-4
    plus = _objective(setup, {**theta, name: theta[name] + eps * direction}).item()
    minus = _objective(setup, {**theta, name: theta[name] - eps * direction}).item()
    numeric = (plus - minus) / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-9)

    stop = torch.autograd.grad(_objective(setup, theta, stop_gradient=True), theta[name])[0]
    stop_directional = float((stop * direction).sum())
    # the released code's gradient (merge copied under no_grad) is not the objective's gradient
    assert abs(stop_directional - numeric) > 0.05 * abs(numeric)
    assert not torch.allclose(stop, grad, rtol=1e-2)
    # same value either way: only the gradient differs
    assert _objective(setup, theta, True).item() == pytest.approx(_objective(setup, theta).item(), rel=1e-12)


def test_inner_step_is_differentiated_for_averaged_tensors_too(setup):
    """A to_q tensor is averaged, not merged: its gradient still carries the second-order term."""
    unet, theta, lower, kv, plan, batches, cfg = setup
    name = next(k for k in lower if ".attn2.to_q." in k)
    full = torch.autograd.grad(_objective(setup, theta), theta[name])[0]
    stop = torch.autograd.grad(_objective(setup, theta, stop_gradient=True), theta[name])[0]
    assert not torch.allclose(full, stop, rtol=1e-3)


def test_paper_defaults_and_presets_resolve_in_order():
    from immunobench.defenses.mima import MIMA
    from immunobench.plugins import configure

    sd = configure(MIMA, "sd-v1-4", "relearn")
    assert (sd.outer_lr, sd.steps) == (3e-5, 300)  # MIMA App. D, re-learning
    sd_p = configure(MIMA, "sd-v1-4", "personalization")
    assert (sd_p.outer_lr, sd_p.steps) == (2e-5, 500)  # MIMA App. D, personalization
    tiny = configure(MIMA, "tiny-sd", "personalization", {"steps": 7})
    assert (tiny.outer_lr, tiny.steps) == (3e-4, 7)  # backbone preset over kind, user over both
    with pytest.raises(TypeError):
        configure(MIMA, "tiny-sd", "relearn", {"no_such_field": 1})
