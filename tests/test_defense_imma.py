"""IMMA, JT and CP: the upper step raises the adapted model's loss, the unrolled gradient is the
objective's, each releases only the tensors its definition allows, IMMA is sequential (its order
matters and it is not JT, except on one concept where it is JT exactly), deterministic in the seed.

All on the tiny random SD-architecture model of ``conftest.tiny_sd`` with random images.
"""
import copy
from dataclasses import replace

import pytest
import torch

from immunobench.bilevel import Adaptation, alternate, draw, unrolled_objective, update, upper_step, lower_step
from immunobench.data import ConceptImages, DefenseData
from immunobench.defenses.cp import CP, CPConfig
from immunobench.defenses.imma import IMMA, IMMAConfig
from immunobench.defenses.jt import JT, JTConfig
from immunobench.diffusion import encode_images, second_order_attention, select_parameters


NAMES = {"van-gogh": "Van Gogh", "claude-monet": "Claude Monet"}


def _view(model, targets=("van-gogh", "claude-monet"), n=2, regularization=True):
    g = torch.Generator().manual_seed(0)
    res = model.resolution
    prompts = {c: f"an artwork of {NAMES[c]}" for c in NAMES}
    images = {c: ConceptImages(torch.rand(n, 3, res, res, generator=g) * 2 - 1, [prompts[c]] * n) for c in NAMES}
    reg = ConceptImages(torch.rand(n, 3, res, res, generator=g) * 2 - 1, ["artwork"] * n) if regularization else None
    return DefenseData(task="relearn-style", group="test", concept_type="style", targets=tuple(targets),
                       names={c: NAMES[c] for c in targets}, prompts={c: prompts[c] for c in targets},
                       images={c: images[c] for c in targets}, regularization=reg, regularization_prompt="artwork",
                       captions=("a photo of a red boat", "a quiet street at night", "a bowl of fruit on a table"))


def _adaptation(model, kind, dtype=torch.float32, upper="attn"):
    view = _view(model)
    unet = copy.deepcopy(model.unet).to(dtype)
    with torch.no_grad():
        latents = encode_images(model, view.images["van-gogh"].images).to(dtype)
    ad = Adaptation(kind, model, unet, upper, latents, view.images["van-gogh"].prompts, word="Van Gogh", seed=0)
    if kind != "ti":
        ad.cond = ad.cond.to(dtype)
    else:
        ad.text.text_encoder.to(dtype)
        ad.embedding, ad.lower["token"].data = ad.embedding.to(dtype), ad.lower["token"].data.to(dtype)
    return ad


def _mean_loss(ad, draws, phi=None):
    with torch.no_grad():
        return sum(float(ad.loss(ad.lower if phi is None else phi, d)) for d in draws) / len(draws)


def _snapshot(ad):
    return {k: v.detach().clone() for k, v in {**ad.upper, **ad.lower}.items()}


LRS = {"lora": (3e-2, 3e-3), "dreambooth": (1e-3, 3e-3), "ti": (1e-1, 3e-3)}  # (lower, upper) for 3 steps on a random model


@pytest.mark.parametrize("kind", ["lora", "dreambooth", "ti"])
def test_first_order_upper_step_raises_the_adapted_loss(tiny_sd, kind):
    """After the lower level adapted φ, upper steps (ascent on θ_u at the adapted φ) raise L(θ_u, φ)
    on held-out draws of the target, and leave φ where the attack put it (LoRA, TI)."""
    ad = _adaptation(tiny_sd, kind)
    g = torch.Generator().manual_seed(1)
    lower_lr, upper_lr = LRS[kind]
    opt_lower = torch.optim.AdamW(ad.lower.values(), lr=lower_lr)
    opt_upper = torch.optim.AdamW(ad.upper.values(), lr=upper_lr)
    before_lower = _snapshot(ad)
    for _ in range(3):
        lower_step(ad, opt_lower, ad.draw(g))
    moved = [k for k in ad.lower if not torch.equal(ad.lower[k], before_lower[k])]
    assert moved  # the lower level adapted φ
    held_out = [ad.draw(torch.Generator().manual_seed(100 + i)) for i in range(6)]
    adapted = _snapshot(ad)
    before = _mean_loss(ad, held_out)
    for _ in range(3):
        upper_step(ad, opt_upper, ad.draw(g))
    after = _mean_loss(ad, held_out)
    print(f"\n{kind} first_order: L(θ_u, φ_adapted) on held-out draws {before:.5f} → {after:.5f}")
    assert after > before * 1.02
    if kind != "dreambooth":  # (DreamBooth's φ holds θ_u itself)
        assert all(torch.equal(ad.lower[k], adapted[k]) for k in ad.lower)
    assert any(not torch.equal(ad.upper[k], adapted[k]) for k in ad.upper)


@pytest.mark.parametrize("kind", ["lora", "dreambooth", "ti"])
def test_unrolled_upper_step_raises_the_loss_after_the_unrolled_adaptation(tiny_sd, kind):
    """J(θ_u) = L(x^u; θ_u, φ'(θ_u)), φ' one SGD step of the lower level: upper steps through φ' raise J."""
    ad = _adaptation(tiny_sd, kind)
    lower_lr, upper_lr = LRS[kind]
    pairs = [(draw(ad.latents, ad.scheduler, torch.Generator().manual_seed(200 + i)),
              draw(ad.latents, ad.scheduler, torch.Generator().manual_seed(300 + i))) for i in range(3)]
    opt = torch.optim.AdamW(ad.upper.values(), lr=upper_lr)
    start = _snapshot(ad)

    def J():
        return sum(unrolled_objective(ad, di, do, lower_lr)[0] for di, do in pairs) / len(pairs)

    with second_order_attention():  # fused CPU/GPU attention kernels have no double backward
        before = float(J().detach())
        for _ in range(3):
            update(opt, ad.upper, -J(), None, "upper")
        after = float(J().detach())
    print(f"\n{kind} unrolled: L(θ_u, φ'(θ_u)) {before:.5f} → {after:.5f}")
    assert after > before * 1.02
    # the unroll never steps the lower level's start; only θ_u moved
    lower_only = [k for k in ad.lower if k not in ad.upper]
    assert all(torch.equal(ad.lower[k], start[k]) for k in lower_only)


@pytest.mark.parametrize("kind", ["dreambooth", "lora"])
def test_unrolled_gradient_matches_finite_differences(tiny_sd, kind):
    """float64: ⟨∇_θu J, v⟩ by autograd through the unrolled step equals the central difference of J,
    and differs from the first-order gradient (φ' held fixed), so the second-order term is there."""
    ad = _adaptation(tiny_sd, kind, dtype=torch.float64)
    lr = 5.0 if kind == "dreambooth" else 50.0  # large enough that φ' depends visibly on θ_u
    d_in = draw(ad.latents, ad.scheduler, torch.Generator().manual_seed(5))
    d_out = draw(ad.latents, ad.scheduler, torch.Generator().manual_seed(6))
    name = next(k for k in ad.upper if ".attn2.to_k." in k)
    p = ad.upper[name]
    v = torch.randn(p.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    v /= v.norm()

    with second_order_attention():
        outer, _ = unrolled_objective(ad, d_in, d_out, lr)
        analytic = float((torch.autograd.grad(outer, p)[0] * v).sum())

    def J_at(shift):
        with torch.no_grad():
            p.add_(shift * v)
        value = float(unrolled_objective(ad, d_in, d_out, lr)[0].detach())
        with torch.no_grad():
            p.sub_(shift * v)
        return value

    eps = 1e-5
    numeric = (J_at(eps) - J_at(-eps)) / (2 * eps)
    print(f"\n{kind}: directional derivative autograd {analytic:.6e}, finite difference {numeric:.6e}")
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-10)

    # first order: the gradient of L at φ' with φ' a constant (for DreamBooth: ∂L/∂θ at θ')
    inner = ad.loss(ad.lower, d_in)
    grads = torch.autograd.grad(inner, list(ad.lower.values()), allow_unused=True)
    frozen = {k: (t - lr * gk).detach().requires_grad_(True) if gk is not None else t
              for (k, t), gk in zip(ad.lower.items(), grads)}
    at = frozen[name] if kind == "dreambooth" else p
    first = float((torch.autograd.grad(ad.loss(frozen, d_out), at)[0] * v).sum())
    print(f"first-order directional derivative {first:.6e}")
    assert abs(first - numeric) > 0.01 * abs(numeric)


def test_first_order_persists_the_adaptation_and_the_unroll_restarts_it(tiny_sd):
    """first_order: the LoRA factors keep the attack's progress; unrolled: they stay at their start."""
    for variant, persists in (("first_order", True), ("unrolled", False)):
        ad = _adaptation(tiny_sd, "lora")
        start = _snapshot(ad)
        alternate(ad, steps=2, variant=variant, lower_lr=1e-2, upper_lr=1e-3, weight_decay=1e-2, max_grad_norm=1.0,
                  batch_size=1, generator=torch.Generator().manual_seed(0))
        b = [k for k in ad.lower if "lora_B" in k]
        assert any(not torch.equal(ad.lower[k], start[k]) for k in b) == persists
        assert any(not torch.equal(ad.upper[k], start[k]) for k in ad.upper)


SMALL_IMMA = IMMAConfig(steps=2, lower_lr=1e-3, upper_lr=1e-3)
SMALL_JT = JTConfig(steps=2, lower_lr=1e-3, upper_lr=1e-3)
SMALL_CP = CPConfig(steps=2, outer_lr=1e-3, inner_lr=1e-1)


def _changed_only_within(model, out, allowed: set[str]):
    base = dict(model.unet.named_parameters())
    assert out.unet and set(out.unet) <= allowed and not out.text_encoder
    assert all(not torch.equal(v, base[k]) for k, v in out.unet.items())  # only changed tensors are released
    # the released model differs from the start model in exactly those tensors
    released = dict(model.with_weights(unet=out.unet).unet.named_parameters())
    assert {k for k in base if not torch.equal(base[k], released[k])} == set(out.unet)


@pytest.mark.parametrize("adaptation,variant", [("lora", "first_order"), ("dreambooth", "first_order"),
                                                ("ti", "first_order"), ("dreambooth", "unrolled")])
def test_imma_releases_only_its_upper_set(tiny_sd, adaptation, variant):
    before = {k: v.clone() for k, v in tiny_sd.unet.state_dict().items()}
    view = _view(tiny_sd, targets=("van-gogh",))
    out = IMMA().immunize(tiny_sd, view, replace(SMALL_IMMA, adaptation=adaptation, variant=variant))
    attn = set(select_parameters(tiny_sd.unet, "attn"))
    _changed_only_within(tiny_sd, out, attn)
    assert len(out.unet) > len(select_parameters(tiny_sd.unet, "xattn"))  # attn1 too, as the released code
    assert len(out.info["adapted_loss_first_last"]) == 2 and out.info["order"] == ["van-gogh"]
    assert all(torch.equal(before[k], v) for k, v in tiny_sd.unet.state_dict().items())  # the input is untouched


def test_jt_releases_only_attn2_although_its_lower_level_trains_the_whole_unet(tiny_sd):
    out = JT().immunize(tiny_sd, _view(tiny_sd), SMALL_JT)
    _changed_only_within(tiny_sd, out, set(select_parameters(tiny_sd.unet, "xattn")))
    assert out.info["images"] == 4 and len(out.info["lower_loss_first_last"]) == 2


@pytest.mark.parametrize("prior_weight", [1.0, 0.0])
def test_cp_changes_only_cross_attention_k_and_v(tiny_sd, prior_weight):
    view = _view(tiny_sd, regularization=bool(prior_weight))
    out = CP().immunize(tiny_sd, view, replace(SMALL_CP, prior_weight=prior_weight))
    kv = set(select_parameters(tiny_sd.unet, "xattn-kv"))
    _changed_only_within(tiny_sd, out, kv)
    assert set(out.unet) == kv  # every K/V moved; attn2 q/out and everything else is bit-identical
    assert len(out.info["outer_loss_first_last"]) == 2 and out.info["merge"]["c_rows"] > 0


def test_imma_is_sequential_jt_is_joint(tiny_sd):
    """With IMMA set up as JT (DreamBooth, θ_u = attn2, JT's lrs): on one concept they are the same
    run bit for bit; on two, IMMA's sequential runs differ from JT's joint one, and IMMA's order matters."""
    as_jt = replace(SMALL_IMMA, adaptation="dreambooth", upper_params="xattn", max_grad_norm=1.0)
    one = _view(tiny_sd, targets=("van-gogh",))
    a, b = IMMA().immunize(tiny_sd, one, as_jt), JT().immunize(tiny_sd, one, SMALL_JT)
    assert set(a.unet) == set(b.unet) and all(torch.equal(a.unet[k], b.unet[k]) for k in a.unet)

    forward, backward = _view(tiny_sd), _view(tiny_sd, targets=("claude-monet", "van-gogh"))
    seq, rev, joint = (IMMA().immunize(tiny_sd, forward, as_jt), IMMA().immunize(tiny_sd, backward, as_jt),
                       JT().immunize(tiny_sd, forward, SMALL_JT))
    assert seq.info["order"] == ["van-gogh", "claude-monet"] and rev.info["order"] == ["claude-monet", "van-gogh"]

    def distance(x, y):
        return sum(float((x.unet[k] - y.unet[k]).norm()) for k in x.unet)

    assert set(seq.unet) == set(joint.unet) == set(rev.unet)
    assert distance(seq, joint) > 0 and distance(seq, rev) > 0
    # the second run starts from the first's release: IMMA on two concepts moves θ_u further than JT
    base = dict(tiny_sd.unet.named_parameters())
    moved = {name: sum(float((o.unet[k] - base[k]).norm()) for k in o.unet) for name, o in (("seq", seq), ("jt", joint))}
    print(f"\n‖Δθ_u‖ summed over tensors: sequential IMMA {moved['seq']:.4f}, JT {moved['jt']:.4f}")
    assert moved["seq"] > moved["jt"]


@pytest.mark.parametrize("defense,cfg", [(IMMA, SMALL_IMMA), (JT, SMALL_JT), (CP, SMALL_CP)])
def test_deterministic_in_the_seed(tiny_sd, defense, cfg):
    view = _view(tiny_sd)
    runs = [defense().immunize(tiny_sd, view, replace(cfg, seed=s)) for s in (0, 0, 1)]
    assert all(torch.equal(runs[0].unet[k], runs[1].unet[k]) for k in runs[0].unet)
    assert any(not torch.equal(runs[0].unet[k], runs[2].unet[k]) for k in runs[0].unet)


def test_registered_with_cited_defaults(tiny_sd):
    from immunobench.defenses.imma import resolved
    from immunobench.plugins import configure, get_defense

    imma, jt, cp = get_defense("imma"), get_defense("jt"), get_defense("cp")
    assert (imma, jt, cp) == (IMMA, JT, CP)
    assert (imma.needs_regularization, jt.needs_regularization, cp.needs_regularization) == (False, False, True)
    sd = configure(imma, "sd-v1-4", "relearn")
    assert (sd.adaptation, sd.variant, sd.steps, sd.upper_params) == ("lora", "first_order", 500, "attn")
    assert resolved(sd) == {"lower_lr": 1e-4, "upper_lr": 1e-5, "max_grad_norm": 1.0}  # defend_text_to_image_lora.py
    pers = configure(imma, "sd-v1-4", "personalization")
    assert pers.adaptation == "dreambooth" and resolved(pers) == {"lower_lr": 5e-6, "upper_lr": 2e-5, "max_grad_norm": 1.0}
    assert resolved(replace(sd, adaptation="ti")) == {"lower_lr": 5e-4, "upper_lr": 1e-6, "max_grad_norm": None}
    j = configure(jt, "sd-v1-4", "relearn")
    assert (j.lower_lr, j.upper_lr, j.steps, j.upper_params) == (5e-6, 2e-5, 500, "xattn")
    c = configure(cp, "sd-v1-4", "relearn")
    assert (c.outer_lr, c.steps, c.inner_lr, c.prior_weight) == (3e-5, 300, 1e-5, 1.0)
    assert (configure(cp, "sd-v1-4", "personalization").outer_lr, configure(cp, "sd-v1-4", "personalization").steps) == (2e-5, 500)
    # tiny-sd presets: tests/test_defense_presets.py (the protocol's choice, or none)
    with pytest.raises(ValueError, match="prior_weight=0"):
        CP().immunize(tiny_sd, _view(tiny_sd, regularization=False), SMALL_CP)


def test_ti_binds_the_identifier_on_instance_cards():
    from immunobench.defenses.imma import token_word

    view = DefenseData(task="personalization", group="g", concept_type="instance", targets=("purse",),
                       names={"purse": "pll purse"}, prompts={"purse": "a photo of pll purse"})
    assert token_word(view, "purse") == "pll"
    assert token_word(_view_names(), "van-gogh") == "Van Gogh"


def _view_names():
    return DefenseData(task="relearn-style", group="g", concept_type="style", targets=("van-gogh",),
                       names={"van-gogh": "Van Gogh"}, prompts={"van-gogh": "an artwork of Van Gogh"})


def test_unroll_is_one_sgd_step_that_stays_differentiable():
    """θ' = θ − α∇f(θ) for f = Σθ³: θ' = θ − 3αθ², and d(Σθ')/dθ = 1 − 6αθ through create_graph."""
    from immunobench.bilevel import unroll

    theta = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    other = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)  # not reached by f: kept as is
    params = {"theta": theta, "other": other}
    out = unroll(params, ["theta", "other"], (theta ** 3).sum(), lr=0.1)
    torch.testing.assert_close(out["theta"], theta - 0.3 * theta ** 2)
    assert out["other"] is other
    grad = torch.autograd.grad(out["theta"].sum(), theta)[0]
    torch.testing.assert_close(grad, 1 - 0.6 * theta.detach())
    detached = unroll(params, ["theta"], (theta ** 3).sum(), lr=0.1, create_graph=False)
    torch.testing.assert_close(torch.autograd.grad(detached["theta"].sum(), theta)[0], torch.ones(3, dtype=torch.float64))
