"""ESD trains only its variant's parameters, erases a style the embedded world draws, and samples x_t
with the shared partial DDIM sampler."""
import pytest
import torch

from immunobench import diffusion
from immunobench.data import DefenseData
from immunobench.plugins import get_defense


def _view(concept_type, targets: dict[str, tuple[str, str]]) -> DefenseData:
    """A defense view of ``targets`` {id: (name, defense prompt)}."""
    return DefenseData(task="test", group="g", concept_type=concept_type, targets=tuple(targets),
                       names={c: n for c, (n, _) in targets.items()}, prompts={c: p for c, (_, p) in targets.items()})


STYLES = _view("style", {"claude-monet": ("Claude Monet", "an artwork of Claude Monet"),
                         "kirbi-fagan": ("Kirbi Fagan", "an artwork of Kirbi Fagan")})
OBJECT = _view("object", {"church": ("church", "a photo of a church")})


def _linear_conv_outside_attn2(unet) -> set[str]:
    """esd_sd.py's ESD-u, by module class."""
    return {f"{m}.{p}" for m, module in unet.named_modules() if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))
            and "attn2" not in m for p, _ in module.named_parameters(recurse=False)}


@pytest.mark.parametrize("variant, data, expected", [
    ("esd-x", OBJECT, "xattn"), ("esd-x-strict", STYLES, "xattn-kv"), ("esd-u", STYLES, "esd-u"),
    ("auto", STYLES, "xattn"), ("auto", OBJECT, "esd-u")])
def test_only_the_variants_parameters_change(tiny_sd, variant, data, expected, monkeypatch):
    esd = get_defense("esd")
    unet0 = {n: p.detach().clone() for n, p in tiny_sd.unet.state_dict().items()}
    text0 = {n: p.detach().clone() for n, p in tiny_sd.text_encoder.state_dict().items()}
    sampled = []  # the prompt of every x_t: a group's targets take turns
    real = diffusion.partial_sample
    monkeypatch.setattr("immunobench.defenses.esd.partial_sample",
                        lambda m, prompts, *a, **kw: sampled.extend(prompts) or real(m, prompts, *a, **kw))
    cfg = esd.Config(variant=variant, iterations=4, lr=1e-3, ddim_steps=2)
    result = esd().immunize(tiny_sd, data, cfg)

    allowed = set(diffusion.select_parameters(tiny_sd.unet, expected))
    assert set(result.unet) == allowed and not result.text_encoder
    assert result.info["variant"] == {"xattn": "esd-x", "xattn-kv": "esd-x-strict", "esd-u": "esd-u"}[expected]
    if expected == "esd-u":
        assert allowed == _linear_conv_outside_attn2(tiny_sd.unet)  # the regex set is the class-defined one
    # every trained tensor moved; the input model (UNet and text encoder) is bit-identical
    assert all(not torch.equal(t, unet0[n]) for n, t in result.unet.items())
    assert all(torch.equal(p, unet0[n]) for n, p in tiny_sd.unet.state_dict().items())
    assert all(torch.equal(p, text0[n]) for n, p in tiny_sd.text_encoder.state_dict().items())
    # the immunized model differs from the base exactly on the variant's tensors
    immunized = tiny_sd.with_weights(unet=result.unet)
    changed = {n for n, p in immunized.unet.state_dict().items() if not torch.equal(p, unet0[n])}
    assert changed == allowed
    assert sampled == [data.prompts[c] for c in data.targets] * (4 // len(data.targets))
    # deterministic in the seed
    if variant == "esd-x-strict":
        again = esd().immunize(tiny_sd, data, cfg).unet
        other = esd().immunize(tiny_sd, data, esd.Config(**{**vars(cfg), "seed": 1})).unet
        assert all(torch.equal(again[n], t) for n, t in result.unet.items())
        assert not all(torch.equal(other[n], t) for n, t in result.unet.items())


def test_esd_x_erases_a_style_on_tiny_sd_and_keeps_another():
    """The embedded world's judge (the runner's ``acc``, classifier-world) on tiny-sd's own samples:
    ESD-x of Claude Monet takes his accuracy from ≥ 0.75 to ≤ 0.25, while Van Gogh keeps ≥ 0.75.
    40 iterations at lr 1e-3 and 10 DDIM steps for x_t stand in for the paper's 1000 at 1e-5 and 50
    (measured 2026-12-06 on these 16 seeds: Monet 0.94 → 0.06 / 0.00 / 0.00 / 0.06 at ESD seeds 0-3,
    Van Gogh 1.00 → 0.94-1.00; at 30 iterations Monet fell to 0.12 / 0.00 / 0.06)."""
    from immunobench.backbones import load_backbone
    from immunobench.plugins import get_metric, judges_for

    model = load_backbone("tiny-sd")
    judge = get_metric(judges_for(model.spec.metric_family)["acc"])()
    seeds = list(range(10_000, 10_016))

    def accuracy(m, concept, prompt):
        return judge.accuracy(diffusion.sample(m, [prompt] * len(seeds), seeds, batch_size=16), concept)

    monet = _view("style", {"claude-monet": ("Claude Monet", "an artwork of Claude Monet")})
    before = accuracy(model, "claude-monet", "an artwork of Claude Monet")
    esd = get_defense("esd")
    result = esd().immunize(model, monet, esd.Config(iterations=40, lr=1e-3, ddim_steps=10))
    erased = model.with_weights(unet=result.unet)
    after = accuracy(erased, "claude-monet", "an artwork of Claude Monet")
    kept = accuracy(erased, "van-gogh", "an artwork of Van Gogh")
    assert result.info["variant"] == "esd-x"
    assert before >= 0.75 and after <= 0.25, (before, after)
    assert kept >= 0.75, kept
    first, last = result.info["loss_first_last"]
    assert last < first  # θ* approaches the negatively guided target


def test_partial_sample_starts_at_the_seeded_noise_and_ends_at_samples_latents(tiny_sd):
    prompts, seeds, steps = ["a photo of a church", "an artwork of Van Gogh"], [3, 4], 3
    kw = dict(steps=steps, guidance_scale=3.0)
    noise, t0 = diffusion.partial_sample(tiny_sd, prompts, seeds, 0, **kw)
    assert torch.equal(noise, diffusion.initial_latents(tiny_sd, seeds))  # DDIM's init sigma is 1
    x1, t1 = diffusion.partial_sample(tiny_sd, prompts, seeds, 1, **kw)
    x_end, t_end = diffusion.partial_sample(tiny_sd, prompts, seeds, steps, **kw)
    assert not torch.equal(x1, noise)
    # x_t after k steps sits at the schedule's k-th timestep, where step k + 1 starts
    from diffusers import DDIMScheduler

    schedule = DDIMScheduler.from_config(tiny_sd.scheduler.config)
    schedule.set_timesteps(steps)
    assert (int(t0), int(t1), int(t_end)) == (int(schedule.timesteps[0]), int(schedule.timesteps[1]), 0)
    images = diffusion.sample(tiny_sd, prompts, seeds, **kw)
    assert torch.equal(diffusion.decode_latents(tiny_sd, x_end).float(), images)
    # each image depends only on its own seed and prompt
    alone, _ = diffusion.partial_sample(tiny_sd, prompts[1:], seeds[1:], 2, **kw)
    torch.testing.assert_close(alone[0], diffusion.partial_sample(tiny_sd, prompts, seeds, 2, **kw)[0][1])
    with pytest.raises(ValueError, match="done must lie"):
        diffusion.partial_sample(tiny_sd, prompts, seeds, steps + 1, **kw)
