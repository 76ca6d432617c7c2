"""MIMA's outer gradient flows through the merge and the unrolled inner step."""
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
    from immunobench.errors import ConfigError
    from immunobench.plugins import configure

    sd = configure(MIMA, "sd-v1-4", "relearn")
    assert (sd.outer_lr, sd.steps) == (3e-5, 300)  # MIMA App. D, re-learning
    sd_p = configure(MIMA, "sd-v1-4", "personalization")
    assert (sd_p.outer_lr, sd_p.steps) == (2e-5, 500)  # MIMA App. D, personalization
    tiny = configure(MIMA, "tiny-sd", "personalization", {"steps": 7})
    assert (tiny.outer_lr, tiny.steps, tiny.prior_weight) == (2e-4, 7, 5.0)  # backbone preset over kind, user over both
    with pytest.raises(ConfigError, match="no field 'no_such_field'"):
        configure(MIMA, "tiny-sd", "relearn", {"no_such_field": 1})


def _view(tiny_sd, task, group_name, images_per=1):
    from immunobench.captions import all_card_names, generic_captions
    from immunobench.plugins import get_backbone
    from immunobench.cards import get_card
    from immunobench.data import ConceptImages, defense_view

    group = get_card(task).group(group_name)
    res = tiny_sd.resolution
    g = torch.Generator().manual_seed(0)
    images = {c: ConceptImages(torch.rand(images_per, 3, res, res, generator=g) * 2 - 1,
                               [group.prompt(c, "defense")] * images_per) for c in group.targets}
    reg = ConceptImages(torch.rand(images_per, 3, res, res, generator=g) * 2 - 1, [group.card.regularization.prompt] * images_per)
    captions, source = generic_captions(get_backbone("tiny-sd")(), all_card_names())
    return group, defense_view(group, images, reg, tuple(captions), source)


@pytest.mark.parametrize("task,group_name", [("relearn-style", "3c-4"), ("relearn-object", "2c-1")])
def test_merge_constrains_only_the_concepts_own_rows(tiny_sd, task, group_name):
    """C holds each target's own token rows and EOS (in its prompt and as a bare name), no template row."""
    from immunobench.defenses.mima import _merge_plan
    from immunobench.diffusion import token_embeddings

    group, view = _view(tiny_sd, task, group_name)
    with torch.no_grad():
        plan, rows = _merge_plan(tiny_sd, list(group.targets), view, MIMAConfig())
        prompt_plan, _ = _merge_plan(tiny_sd, list(group.targets), view, MIMAConfig(merge_rows="prompt"))
        template_rows = []
        for c in group.targets:
            prompt, name = group.prompt(c, "defense"), group.concept_name(c)
            n_template = len(tiny_sd.tokenizer(prompt.rsplit(name, 1)[0], add_special_tokens=False).input_ids)
            assert n_template >= 2  # "an artwork of", "a photo of a"
            template_rows.append(token_embeddings(tiny_sd, [prompt])[0][:n_template])  # BOS already dropped
        template = torch.cat(template_rows).to(plan.C.dtype)

    def holds(C, row):
        return bool(((C - row).norm(dim=1) <= 1e-5 * row.norm()).any())

    assert not any(holds(plan.C, r) for r in template), "a template token row is constrained"
    assert all(holds(prompt_plan.C, r) for r in template)  # merge_rows="prompt" keeps them (the former choice)
    # each concept: its name's tokens + EOS, in the prompt and as a bare name
    per_concept = [2 * (len(tiny_sd.tokenizer(group.concept_name(c), add_special_tokens=False).input_ids) + 1)
                   for c in group.targets]
    assert plan.sizes == per_concept and rows["c_rows"] == sum(per_concept)
    # C_reg: the regularization prompt and the first 200 generic captions; none names a card concept
    assert rows["c_reg_captions"] == 200 and rows["c_reg_prompts"] == [group.card.regularization.prompt]
    names = [v.name.lower() for v in group.card.concepts.values()]
    assert not any(n in caption.lower() for caption in view.captions for n in names)


def test_prior_weight_zero_is_algorithm_1(setup):
    """prior_weight=0: the objective ignores the prior draws, = −(1/N) Σ_n L(x^u_n; φ) with prior-free inner steps."""
    from dataclasses import replace

    from immunobench.defenses.mima import _losses

    unet, theta, lower, kv, plan, batches, cfg = setup
    literal = replace(cfg, prior_weight=0.0)
    no_prior = [(b[0], None, b[2], None) for b in batches]
    with second_order_attention():
        with_draws = outer_objective(unet, unet_scheduler(), theta, lower, kv, plan, batches, literal)
        without = outer_objective(unet, unet_scheduler(), theta, lower, kv, plan, no_prior, literal)
        released = outer_objective(unet, unet_scheduler(), theta, lower, kv, plan, batches, cfg)
        # by hand: one SGD step per concept on its instance loss alone, merge, mean of −L_outer
        adapted = []
        for inner, *_ in batches:
            loss = _losses(unet, unet_scheduler(), theta, [inner])[0]
            grads = torch.autograd.grad(loss, [theta[k] for k in lower])
            adapted.append({k: theta[k] - cfg.inner_lr * g for k, g in zip(lower, grads)})
        phi = dict(theta)
        for k in lower:
            phi[k] = plan.merge_linear(theta[k], [a[k] for a in adapted]) if k in kv else torch.stack([a[k] for a in adapted]).mean(0)
        by_hand = -_losses(unet, unet_scheduler(), phi, [b[2] for b in batches]).mean()
    assert torch.allclose(with_draws, without) and torch.allclose(with_draws, by_hand, rtol=1e-9)
    assert not torch.allclose(with_draws, released)  # λ=1 (the released script) is a different objective


def test_mima_runs_paper_literal_without_regularization_images(tiny_sd):
    """Algorithm 1 (prior_weight=0) needs no prior images; λ=1 without them is a one-line error."""
    from dataclasses import replace

    from immunobench.defenses.mima import MIMA

    _, view = _view(tiny_sd, "relearn-style", "2c-1")
    bare = replace(view, regularization=None)
    out = MIMA().immunize(tiny_sd, bare, MIMAConfig(steps=1, prior_weight=0.0, outer_lr=1e-3))
    assert out.unet and out.info["merge"]["c_reg_prompts"] == ["artwork"]
    changed = [k for k, v in out.unet.items() if not torch.equal(v, dict(tiny_sd.unet.named_parameters())[k])]
    assert changed  # one outer step moved θ
    with pytest.raises(ValueError, match="prior_weight=0"):
        MIMA().immunize(tiny_sd, bare, MIMAConfig(steps=1))
