"""FreezeAsGuard: the mask's mean reaches ρ, its frozen set is honoured by every registered attack, and
the mask step moves the logits the way Eq. 8 says (raising the target loss relative to the innocent one)."""
import copy
from dataclasses import replace

import pytest
import torch

from immunobench.cards import get_card
from immunobench.data import ConceptImages, TaskData, defense_view
from immunobench.defenses.freezeasguard import (
    Domains, FreezeAsGuard, FreezeAsGuardConfig, domain_losses, finetune, finetune_start, mask_of, mask_step, masked_weights, user_step,
)
from immunobench.diffusion import encode_images, encode_prompts
from immunobench.plugins import ATTACKS, Constraints, get_attack

# Tiny Alg. 1: 40 mask steps of batch 2, one user step each, θ_ft from 3 AdamW steps at a tiny model's lr.
# c_s is 300, not the released 5e3: the sparsity gradient scales as c_s/N and the test UNet has 208
# tensors (SD v1.5: 686), where 5e3 overshoots far past ρ on the first step (module docstring).
TINY = FreezeAsGuardConfig(c_sparsity=300.0, steps=40, user_steps=1, batch_size=2, finetune_steps=3,
                           finetune_lr=1e-3, finetune_batch_size=2, user_lr=1e-3)
RATIOS = (0.25, 0.6)
MEAN_TOL = 0.01  # |mean m − ρ|
HARD_TOL = 0.10  # |frozen / N − ρ|: Round(m) of a soft mask whose mean is ρ


@pytest.fixture(scope="module")
def fast_sd(tiny_sd):
    """tiny_sd sampling in 2 DDIM steps: DreamBooth's and Custom Diffusion's class images cost little."""
    model = copy.copy(tiny_sd)
    model.spec = replace(tiny_sd.spec, sample_steps=2)
    return model


@pytest.fixture(scope="module")
def group():
    return get_card("personalization").group("2c-1")  # purse ← ktn, plant ← pll


def _images(group, res, phase, n, seed):
    """Per target a colour field with a bright square, distinct per concept: something to fit."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, c in enumerate(group.targets):
        x = torch.rand(n, 3, 1, 1, generator=g).expand(n, 3, res, res).clone() * 2 - 1
        x[:, k % 3, 8 + 8 * k : 32 + 8 * k, 8:40] = 1.0
        out[c] = ConceptImages(x, [group.prompt(c, phase)] * n)
    return out


@pytest.fixture(scope="module")
def view(fast_sd, group):
    res = fast_sd.resolution
    innocent = ConceptImages(torch.rand(3, 3, res, res, generator=torch.Generator().manual_seed(9)) * 2 - 1,
                             [group.card.regularization.prompt] * 3)
    return defense_view(group, _images(group, res, "defense", 2, 0), innocent)


@pytest.fixture(scope="module")
def immunized(fast_sd, view):
    return {rho: FreezeAsGuard().immunize(fast_sd, view, replace(TINY, freeze_ratio=rho)) for rho in RATIOS}


@pytest.mark.parametrize("rho", RATIOS)
def test_mask_mean_reaches_the_freeze_ratio_and_round_m_is_the_constraint(fast_sd, immunized, rho):
    out = immunized[rho]
    names = [n for n, _ in fast_sd.unet.named_parameters()]
    assert out.info["tensors"] == len(names) and list(out.info["mask"]) == names  # one logit per tensor, by name
    assert abs(out.info["mask_mean"] - rho) <= MEAN_TOL, out.info["mask_mean"]
    frozen = out.constraints.frozen
    assert frozen == {n for n, m in out.info["mask"].items() if m > 0.5}  # Round(m) = 1
    assert frozen <= set(names)
    assert abs(len(frozen) / len(names) - rho) <= HARD_TOL, len(frozen) / len(names)
    assert out.unet == {} and out.text_encoder == {}  # the release is θ_pre with the mask
    assert FreezeAsGuard.releases_start_weights  # as declared to the grid's price


def test_higher_ratio_freezes_more(immunized):
    low, high = (immunized[r].constraints.frozen for r in RATIOS)
    assert len(high) > len(low)


def _attack_config(name: str):
    """A couple of steps at a tiny model's lr; priors of 1 class image (drawn in 2 DDIM steps)."""
    tiny = {"lora": {"lr": 1e-2, "batch_size": 2},
            "dreambooth_lora": {"lr": 1e-2, "batch_size": 2, "with_prior_preservation": True, "num_class_images": 1},
            "dreambooth": {"lr": 1e-3, "batch_size": 2, "num_class_images": 1},
            "full_ft": {"lr": 1e-3, "batch_size": 2},
            "textual_inversion": {"lr": 5e-2, "batch_size": 2},
            "custom_diffusion": {"lr": 1e-2, "batch_size": 1, "class_images": 1}}
    cls = get_attack(name)
    return cls, cls.Config(**tiny.get(name, {}))


def _effective_unet(unet) -> dict[str, torch.Tensor]:
    """Base-weight names → the weights the UNet computes with (peft LoRA merged in)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    if any("lora_" in n for n, _ in unet.named_parameters()):
        unet = copy.deepcopy(unet)
        for m in unet.modules():
            if isinstance(m, BaseTunerLayer):
                m.merge()
    return {n.replace(".base_layer", ""): p.detach().clone() for n, p in unet.named_parameters() if "lora_" not in n}


def _attacked(name, model, group, data, constraints):
    """(UNet weights after 2 steps of the attack, whether rows it added to the embedding matrix moved)."""
    cls, cfg = _attack_config(name)
    rows = {}
    n_old = model.text_encoder.get_input_embeddings().weight.shape[0]
    for step, adapted in cls().adapt(model, group, data, cfg, constraints, [0, 2]):
        rows[step] = adapted.text_encoder.get_input_embeddings().weight[n_old:].detach().clone()
        unet = _effective_unet(adapted.unet)
    assert list(rows) == [0, 2], name
    return unet, len(rows[2]) > 0 and not torch.equal(rows[0], rows[2])


def test_every_registered_attack_honours_the_frozen_set(fast_sd, group, immunized):
    out = immunized[0.6]
    model = fast_sd.with_weights(unet=out.unet)
    before = {n: p.detach().clone() for n, p in model.unet.named_parameters()}
    frozen = out.constraints.frozen
    data = TaskData(attack=_images(group, model.resolution, "attack", 2, 1))
    # the built-in attacks (other test modules register toy ones in the same registry)
    names = [n for n in ATTACKS.names() if ATTACKS.origin(n).startswith("immunobench.attacks.")]
    assert {"lora", "dreambooth_lora", "dreambooth", "full_ft", "textual_inversion", "custom_diffusion"} <= set(names)
    for name in names:
        free, _ = _attacked(name, model, group, data, Constraints())
        unet, tokens_moved = _attacked(name, model, group, data, out.constraints)
        assert set(unet) == set(before), name
        changed = {n for n in before if not torch.equal(unet[n], before[n])}
        assert not changed & frozen, (name, sorted(changed & frozen)[:3])  # every frozen tensor bit-identical
        assert changed or tokens_moved, f"{name} trained nothing under the constraint"
        trains_unet = any(not torch.equal(free[n], before[n]) for n in before)
        if trains_unet:  # unconstrained, it moves some of the frozen tensors: the constraint is what held them
            assert any(not torch.equal(free[n], before[n]) for n in frozen), name
            assert changed, name  # and it still trains the rest of its tensors
    for n, p in model.unet.named_parameters():
        assert torch.equal(p, before[n]), n  # the released model itself is never touched


@pytest.fixture(scope="module")
def state(fast_sd, view):
    """θ_pre, θ_ft (3 AdamW steps on both domains), logits mid-range, and one fixed batch."""
    unet = copy.deepcopy(fast_sd.unet).requires_grad_(False)
    unet.train()
    pre = {n: p.detach() for n, p in unet.named_parameters()}
    with torch.no_grad():
        target = (torch.cat([encode_images(fast_sd, view.images[c].images) for c in view.targets]),
                  torch.cat([encode_prompts(fast_sd, view.images[c].prompts) for c in view.targets]))
        innocent = (encode_images(fast_sd, view.regularization.images), encode_prompts(fast_sd, view.regularization.prompts))
    domains = Domains(target, innocent, fast_sd.scheduler.config.num_train_timesteps, torch.Generator().manual_seed(3))
    ft, opt = finetune_start(pre, TINY)
    finetune(unet, fast_sd.scheduler, ft, opt, domains, TINY, [])
    ft = {n: t.detach() for n, t in ft.items()}
    x = torch.rand(len(pre), generator=torch.Generator().manual_seed(4)) * 0.4 - 0.2  # m ∈ (0.27, 0.73)
    return unet, fast_sd.scheduler, pre, ft, x, domains.draw(8)


def _gap(state, x) -> float:
    """L_target − L_innocent at θ(m(x)) on the state's fixed batch."""
    unet, scheduler, pre, ft, _, batch = state
    with torch.no_grad():
        l_t, l_i = domain_losses(unet, scheduler, masked_weights(pre, ft, mask_of(x, TINY.temperature)), batch)
    return float(l_t - l_i)


def test_mask_step_is_eq_8_and_raises_target_loss_relative_to_innocent(state):
    unet, scheduler, pre, ft, x, batch = state
    # Eq. 8 / the released update: ∂J/∂x_i = ⟨∂J/∂θ(m)_i, Δ_i⟩ · m_i(1 − m_i)/T, Δ = θ_pre − θ_ft
    m = mask_of(x, TINY.temperature)
    theta = {n: t.detach().requires_grad_(True) for n, t in masked_weights(pre, ft, m).items()}
    l_t, l_i = domain_losses(unet, scheduler, theta, batch)
    grads = torch.autograd.grad((-l_t + l_i) / 2, list(theta.values()), allow_unused=True)
    by_hand = torch.stack([(g * (pre[n] - ft[n])).sum() if g is not None else torch.tensor(0.0)
                           for n, g in zip(theta, grads)]) * m * (1 - m) / TINY.temperature
    assert by_hand.abs().max() > 0

    # a small step (at most 0.05 on a logit), no sparsity term: x ← x − η_m ∂J/∂x
    lr = 0.05 / float(by_hand.abs().max())
    x2, _ = mask_step(unet, scheduler, pre, ft, x, batch, replace(TINY, c_sparsity=0.0, mask_lr=lr))
    torch.testing.assert_close((x - x2) / lr, by_hand, rtol=1e-3, atol=1e-4 * float(by_hand.abs().max()))

    # it widens the gap between the target and the innocent loss; the opposite step narrows it
    before, after, opposite = _gap(state, x), _gap(state, x2), _gap(state, 2 * x - x2)
    assert after > before > opposite, (opposite, before, after)


def test_user_step_trains_theta_ft_through_one_minus_m(state):
    """θ(m) moves by −η(1 − m_i)²∇_θ L (Eq. 10): a nearly frozen tensor barely moves, an open one does."""
    unet, scheduler, pre, ft, _, batch = state
    names = list(pre)
    x = torch.full((len(names),), -2.0)  # m ≈ 0: open
    x[: len(names) // 2] = 2.0  # m ≈ 1 − 4.5e-5: frozen
    m = mask_of(x, TINY.temperature)
    ft_copy = {n: t.clone() for n, t in ft.items()}
    theta0 = masked_weights(pre, ft_copy, m)
    user_step(unet, scheduler, pre, ft_copy, m, batch, lr=1e-2)
    theta1 = masked_weights(pre, ft_copy, m)
    moved = [float((theta1[n] - theta0[n]).norm()) for n in names]
    half = len(names) // 2
    open_moved = [d for d in moved[half:] if d > 0]
    assert open_moved, "no open tensor trained"
    assert max(moved[:half]) < 1e-4 * max(open_moved)  # (1 − m)² ≈ 2e-9, plus float32 rounding of θ(m)
