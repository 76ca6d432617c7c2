"""GIFT: its noise term falls, its hooks see every UNet block and leave none behind, only ψ and θ
train, and the immunized model loses the harmful images far more than the safe ones.

The training tests run the shipped tiny-sd on world renders: Van Gogh artworks as D_M, artworks of
two artists no card scores as D_S (the runner's D_S is the card's generated "artwork" class images).
"""
import copy
import re
from dataclasses import replace

import pytest
import torch

from immunobench.data import ConceptImages, DefenseData
from immunobench.defenses.gift import GIFT, GIFTConfig, block_activations, noise_mse, train, unet_blocks
from immunobench.diffusion import diffusion_loss, encode_images, encode_prompts, select_parameters

PROMPT = "an artwork of Van Gogh"
# a few times the paper's step sizes (chosen for SD-sized gradients) so 60 alternations on tiny-sd show the effect
SMALL = GIFTConfig(steps=60, immunize_lr=1e-3, prior_lr=3e-4)


@pytest.fixture(scope="module")
def world():
    from immunobench.backbones import load_backbone
    from immunobench.world.concepts import OTHER_ARTISTS
    from immunobench.world.render import render_batch

    model = load_backbone("tiny-sd")
    harmful = render_batch([("van-gogh", i) for i in range(4)])
    safe = render_batch([(a, i) for a in OTHER_ARTISTS[:2] for i in range(2)])
    view = DefenseData(task="relearn-style", group="test", concept_type="style", targets=("van-gogh",),
                       names={"van-gogh": "Van Gogh"}, prompts={"van-gogh": PROMPT},
                       images={"van-gogh": ConceptImages(harmful, [PROMPT] * 4)},
                       regularization=ConceptImages(safe, ["artwork"] * 4))
    return model, view


@pytest.fixture(scope="module")
def immunized(world):
    model, view = world
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    out = GIFT().immunize(model, view, SMALL)
    return out, before


def _eval_loss(model, unet, images, prompts, draws=8):
    """Diffusion loss on fixed draws (same noise and timesteps before and after)."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        lat, cond = encode_images(model, images), encode_prompts(model, prompts)
        return sum(diffusion_loss(unet, lat, cond, model.scheduler, generator=g).item() for _ in range(draws)) / draws


def _eval_noise(model, unet, images, prompts):
    """L_noise of Eq. (7) on one fixed draw of latents' noise, timesteps and block noise."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad(), block_activations(unet) as z:
        lat, cond = encode_images(model, images), encode_prompts(model, prompts)
        diffusion_loss(unet, lat, cond, model.scheduler, generator=g)
        return sum(noise_mse(z[name], g) for name in unet_blocks(unet)).item()


def test_noise_term_falls_during_training_and_only_because_of_beta(world, immunized):
    model, view = world
    out, _ = immunized
    first, last = out.info["noise_first_last"]
    print(f"\nL_noise (β=1) first/last 10 steps: {first:.2f} → {last:.2f}")
    assert last < 0.7 * first  # measured 18.9 → 8.8
    images, prompts = view.images["van-gogh"].images, view.images["van-gogh"].prompts
    fixed_before = _eval_noise(model, model.unet, images, prompts)
    fixed_after = _eval_noise(model, model.with_weights(unet=out.unet).unet, images, prompts)
    print(f"L_noise on a fixed harmful draw: {fixed_before:.2f} → {fixed_after:.2f}")
    assert fixed_after < 0.7 * fixed_before
    # loss maximization alone (β = 0) inflates the activations instead: the fall is the noise term's doing
    alone = GIFT().immunize(model, view, replace(SMALL, beta=0.0))
    a_first, a_last = alone.info["noise_first_last"]
    print(f"L_noise with β=0: {a_first:.2f} → {a_last:.2f}")
    assert a_last > a_first


def test_harmful_loss_rises_while_safe_loss_moves_much_less(world, immunized):
    model, view = world
    out, before = immunized
    harm, safe = view.images["van-gogh"], view.regularization
    new = model.with_weights(unet=out.unet).unet
    h0, h1 = _eval_loss(model, model.unet, harm.images, harm.prompts), _eval_loss(model, new, harm.images, harm.prompts)
    s0, s1 = _eval_loss(model, model.unet, safe.images, safe.prompts), _eval_loss(model, new, safe.images, safe.prompts)
    print(f"\ndiffusion loss, harmful: {h0:.4f} → {h1:.4f}; safe: {s0:.4f} → {s1:.4f}")
    assert h1 > 2 * h0  # measured 0.077 → 0.294
    assert abs(s1 - s0) / s0 < 0.25 * (h1 - h0) / h0  # measured 0.064 → 0.074
    # without the lower level (α_P = 0) the safe loss is not held: the prior step is what retains it
    no_prior = model.with_weights(unet=GIFT().immunize(model, view, replace(SMALL, prior_lr=0.0)).unet).unet
    s_np = _eval_loss(model, no_prior, safe.images, safe.prompts)
    print(f"safe loss without the prior step: {s0:.4f} → {s_np:.4f}")
    assert s_np - s0 > 3 * (s1 - s0)
    # the defense trained a copy: the input model is bit-identical and carries no hook
    assert all(torch.equal(before[k], v) for k, v in model.unet.state_dict().items())
    assert not any(m._forward_hooks for m in model.unet.modules())


def test_output_is_theta_and_the_histories(world, immunized):
    """Defaults: ψ = every attn2 tensor, θ = the whole UNet, so the release is every UNet parameter."""
    model, _ = world
    out, _ = immunized
    assert set(out.unet) == {k for k, _ in model.unet.named_parameters()}
    assert out.info["trained_tensors"] == len(out.unet)
    assert {len(h) for h in out.info["history"].values()} == {SMALL.steps}
    assert set(out.info["history"]) == {"prior", "diffusion", "noise", "immunize"}
    for term in ("prior", "diffusion", "noise", "immunize"):
        assert len(out.info[f"{term}_first_last"]) == 2


def _expected_blocks(unet):
    names = {n for n, _ in unet.named_modules() if re.fullmatch(r"(down_blocks|up_blocks)\.\d+|mid_block", n)}
    assert len(names) == len(unet.config.down_block_types) + 1 + len(unet.config.up_block_types)
    return names


@pytest.mark.parametrize("which", ["fixture", "tiny-sd"])
def test_hooks_see_every_block(tiny_sd, world, which):
    """The hooked modules are exactly the down/mid/up blocks (a random model with a plain DownBlock2D
    and UpBlock2D, and the shipped tiny-sd), and each yields its output in one forward."""
    model = tiny_sd if which == "fixture" else world[0]
    unet = model.unet
    expected = _expected_blocks(unet)
    g = torch.Generator().manual_seed(0)
    size = unet.config.sample_size
    x = torch.randn(2, unet.config.in_channels, size, size, generator=g)
    cond = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad(), block_activations(unet) as z:
        hooked = {n for n, m in unet.named_modules() if m._forward_hooks}
        assert hooked == expected
        pred = unet(x, torch.tensor([10, 500]), encoder_hidden_states=cond).sample
    assert set(z) == expected
    assert all(isinstance(a, torch.Tensor) and a.shape[0] == 2 and a.ndim == 4 for a in z.values())
    assert z["mid_block"].shape[1] == unet.config.block_out_channels[-1]
    # the last up block's output is what the UNet's head turns into ε̂: the captured z is the chain's state
    last = f"up_blocks.{len(unet.up_blocks) - 1}"
    head = unet.conv_out(unet.conv_act(unet.conv_norm_out(z[last])))
    torch.testing.assert_close(head, pred)
    # down blocks return (hidden, skips): z is the hidden state, the last skip
    with torch.no_grad():
        emb = unet.time_embedding(unet.time_proj(torch.tensor([10, 500])).to(x.dtype))
        kwargs = {"encoder_hidden_states": cond} if getattr(unet.down_blocks[0], "has_cross_attention", False) else {}
        hidden, skips = unet.down_blocks[0](unet.conv_in(x), emb, **kwargs)
    torch.testing.assert_close(z["down_blocks.0"], hidden)
    assert torch.equal(hidden, skips[-1])


def test_hooks_are_removed_after_training_and_after_an_error(tiny_sd):
    unet = copy.deepcopy(tiny_sd.unet)
    g = torch.Generator().manual_seed(0)
    size, dim = unet.config.sample_size, unet.config.cross_attention_dim
    data = (torch.randn(3, 4, size, size, generator=g), torch.randn(3, 77, dim, generator=g))
    train(unet, tiny_sd.scheduler, data, data, GIFTConfig(steps=2, immunize_lr=1e-3, prior_lr=1e-3))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in unet.modules())
    # its forward is that of a clean UNet carrying the same weights
    clean = copy.deepcopy(tiny_sd.unet)
    clean.load_state_dict(unet.state_dict())
    x, t = torch.randn(2, 4, size, size, generator=g), torch.tensor([3, 700])
    c = torch.randn(2, 77, dim, generator=g)
    with torch.no_grad():
        assert torch.equal(unet(x, t, encoder_hidden_states=c).sample, clean(x, t, encoder_hidden_states=c).sample)
    with pytest.raises(RuntimeError, match="boom"):
        with block_activations(unet):
            raise RuntimeError("boom")
    assert not any(m._forward_hooks for m in unet.modules())


def test_only_the_configured_parameters_change(tiny_sd):
    """ψ = attn2 K/V, θ = all attention q/k/v/out: exactly their union changes, the rest (buffers too) is
    bit-identical; with α_P = 0 only ψ changes, so the upper step never touches anything outside ψ."""
    base = tiny_sd.unet
    g = torch.Generator().manual_seed(0)
    size, dim = base.config.sample_size, base.config.cross_attention_dim
    data = (torch.randn(3, 4, size, size, generator=g), torch.randn(3, 77, dim, generator=g))
    psi, theta = set(select_parameters(base, "xattn-kv")), set(select_parameters(base, "attn"))
    assert psi < theta and len(theta) < len(dict(base.named_parameters()))
    for prior_lr, allowed in ((1e-3, theta), (0.0, psi)):
        unet = copy.deepcopy(base)
        cfg = GIFTConfig(steps=3, immunize_lr=1e-3, prior_lr=prior_lr, immunize_params="xattn-kv", prior_params="attn")
        _, trained = train(unet, tiny_sd.scheduler, data, data, cfg)
        assert set(trained) == theta
        changed = {k for k, v in unet.state_dict().items() if not torch.equal(v, base.state_dict()[k])}
        assert changed == allowed


def test_deterministic_in_the_seed(world):
    model, view = world
    runs = [GIFT().immunize(model, view, GIFTConfig(steps=2, immunize_lr=1e-3, prior_lr=1e-3, seed=s)) for s in (0, 0, 1)]
    key = next(k for k in runs[0].unet if ".attn2.to_k." in k)
    assert all(torch.equal(runs[0].unet[k], runs[1].unet[k]) for k in runs[0].unet)
    assert runs[0].info["history"] == runs[1].info["history"]
    assert not torch.equal(runs[0].unet[key], runs[2].unet[key])


def test_registered_with_documented_defaults(world):
    from immunobench.errors import ConfigError
    from immunobench.plugins import configure, get_defense

    cls = get_defense("gift")
    assert cls is GIFT and cls.needs_regularization
    sd = configure(cls, "sd-v1-4", "relearn")
    assert (sd.immunize_lr, sd.prior_lr, sd.steps, sd.beta) == (2e-5, 5e-6, 500, 1.0)
    assert (sd.immunize_params, sd.prior_params) == ("xattn", "unet")  # GIFT §3.1
    # its tiny-sd preset: tests/test_defense_presets.py
    with pytest.raises(ConfigError):
        configure(cls, "tiny-sd", "relearn", {"optimizer": "lion"})
    model, view = world
    with pytest.raises(ValueError, match="regularization"):
        GIFT().immunize(model, replace(view, regularization=None), GIFTConfig(steps=1))
