"""DreamBooth, DreamBooth-LoRA and full fine-tuning (and LoRA's merge): each lowers its own loss,
honours frozen tensors, leaves the input model alone; DreamBooth's prior term is present and weighted;
LoRA adapters sample the same images live and merged."""
import copy
from dataclasses import replace

import pytest
import torch

from immunobench.cards import ConceptGroup, get_card
from immunobench.data import ConceptImages, TaskData
from immunobench.diffusion import diffusion_loss, encode_images, encode_prompts, sample
from immunobench.finetune import class_images, prior_preservation_loss
from immunobench.plugins import Constraints, get_attack

# tiny settings: lrs high enough that a tiny random model moves visibly in a few steps
TINY = {
    "dreambooth": {"lr": 1e-3, "batch_size": 2, "num_class_images": 2},
    "dreambooth_lora": {"lr": 1e-2, "batch_size": 2},
    "full_ft": {"lr": 1e-3, "batch_size": 2},
}


@pytest.fixture(scope="module")
def fast_sd(tiny_sd):
    """tiny_sd sampling in 3 DDIM steps: DreamBooth's class images cost little."""
    model = copy.copy(tiny_sd)
    model.spec = replace(tiny_sd.spec, sample_steps=3)
    return model


@pytest.fixture(scope="module")
def purse():
    """A one-target personalization group (purse, "a photo of ktn purse") and 3 attack images."""
    card = get_card("personalization")
    group = ConceptGroup("personalization", "2c-1", ("purse",), (), card)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    return group, TaskData(attack={"purse": ConceptImages(images, [group.prompt("purse")] * 3)})


def _config(name: str, **extra):
    cls = get_attack(name)
    return cls, cls.Config(**{**TINY[name], **extra})


def _final(name, model, group, data, constraints=Constraints(), checkpoints=(0, 3), **extra):
    """(steps yielded, the UNet at the last checkpoint as a detached copy)."""
    cls, cfg = _config(name, **extra)
    steps, unet = [], None
    for step, adapted in cls().adapt(model, group, data, cfg, constraints, list(checkpoints)):
        steps.append(step)
        unet = copy.deepcopy(adapted.unet)
    return steps, unet


def _merged(unet):
    """A copy with peft's LoRA merged into the base weights (adapters then inactive)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = copy.deepcopy(unet)
    layers = [m for m in merged.modules() if isinstance(m, BaseTunerLayer)]
    for m in layers:
        m.merge()
    return merged, len(layers)


def _effective(unet) -> dict[str, torch.Tensor]:
    """Base-weight names → the weights the UNet computes with (LoRA merged in)."""
    merged, _ = _merged(unet) if any("lora_" in n for n, _ in unet.named_parameters()) else (unet, 0)
    return {n.replace(".base_layer", ""): p.detach() for n, p in merged.named_parameters() if "lora_" not in n}


@pytest.mark.parametrize("name", ["dreambooth", "dreambooth_lora", "full_ft"])
def test_attack_lowers_its_own_loss_on_its_concept(fast_sd, purse, name):
    tiny_sd = fast_sd
    group, data = purse
    latents = encode_images(tiny_sd, data.attack["purse"].images).detach()
    cond = encode_prompts(tiny_sd, data.attack["purse"].prompts).detach()
    g = torch.Generator().manual_seed(123)  # the same noise and timesteps before and after
    reps = 8
    noise = torch.randn((reps * len(latents), *latents.shape[1:]), generator=g)
    timesteps = torch.randint(0, tiny_sd.scheduler.config.num_train_timesteps, (reps * len(latents),), generator=g)

    def loss(unet):
        with torch.no_grad():
            return float(diffusion_loss(unet, latents.repeat(reps, 1, 1, 1), cond.repeat(reps, 1, 1),
                                        tiny_sd.scheduler, noise=noise, timesteps=timesteps))

    cls, cfg = _config(name)
    losses, steps = {}, []
    for step, adapted in cls().adapt(tiny_sd, group, data, cfg, Constraints(), [0, 4, 8]):
        steps.append(step)
        losses[step] = loss(adapted.unet)
    assert steps == [0, 4, 8]
    assert losses[8] < 0.9 * losses[0], losses


@pytest.mark.parametrize("name", ["dreambooth", "dreambooth_lora", "full_ft"])
def test_frozen_tensors_stay_bit_identical_and_input_model_untouched(fast_sd, purse, name):
    tiny_sd = fast_sd
    group, data = purse
    names = [n for n, _ in tiny_sd.unet.named_parameters()]
    frozen = {next(n for n in names if n.endswith("attn2.to_k.weight")),
              next(n for n in names if n.endswith("attn1.to_q.weight")),
              next(n for n in names if n.endswith("attn2.to_out.0.weight")),
              "conv_in.weight", next(n for n in names if "resnets" in n and n.endswith("conv1.weight"))}
    before = {n: p.detach().clone() for n, p in tiny_sd.unet.named_parameters()}
    steps, unet = _final(name, tiny_sd, group, data, Constraints(frozen=frozenset(frozen)))
    assert steps == [0, 3]
    after = _effective(unet)
    assert set(after) == set(before)
    for n in frozen:
        assert torch.equal(after[n], before[n]), n
    trained = [n for n in names if n not in frozen and n.endswith("to_k.weight")]
    assert all(not torch.equal(after[n], before[n]) for n in trained)  # the attack did train the rest
    for n, p in tiny_sd.unet.named_parameters():
        assert torch.equal(p, before[n]), n


def test_dreambooth_lora_changes_only_lora_factors(tiny_sd, purse):
    group, data = purse
    before = {n: p.detach().clone() for n, p in tiny_sd.unet.named_parameters()}
    _, unet = _final("dreambooth_lora", tiny_sd, group, data)
    named = dict(unet.named_parameters())
    base = {n.replace(".base_layer", ""): p for n, p in named.items() if "lora_" not in n}
    assert set(base) == set(before)
    assert all(torch.equal(p, before[n]) for n, p in base.items())
    lora_b = [p for n, p in named.items() if "lora_B" in n]
    targets = {"to_k", "to_q", "to_v", "to_out.0"}
    assert {n.split(".lora_B")[0].split("attn")[1].split(".", 1)[1] for n in named if "lora_B" in n} == targets
    assert all(torch.count_nonzero(p) > 0 for p in lora_b)


def test_prior_preservation_loss_is_instance_plus_weighted_prior(tiny_sd):
    g = torch.Generator().manual_seed(1)
    inst, cls = torch.randn(2, 4, 16, 16, generator=g), torch.randn(3, 4, 16, 16, generator=g)
    ci = encode_prompts(tiny_sd, ["a photo of ktn purse"] * 2).detach()
    cc = encode_prompts(tiny_sd, ["purse"] * 3).detach()
    total, l_inst, l_prior = prior_preservation_loss(tiny_sd.unet, inst, ci, cls, cc, tiny_sd.scheduler, 0.5,
                                                     torch.Generator().manual_seed(7))
    # by hand: the same generator gives one noise draw then one timestep draw for the whole batch of 5
    h = torch.Generator().manual_seed(7)
    noise = torch.randn((5, 4, 16, 16), generator=h)
    t = torch.randint(0, tiny_sd.scheduler.config.num_train_timesteps, (5,), generator=h)
    hand_inst = diffusion_loss(tiny_sd.unet, inst, ci, tiny_sd.scheduler, noise=noise[:2], timesteps=t[:2])
    hand_prior = diffusion_loss(tiny_sd.unet, cls, cc, tiny_sd.scheduler, noise=noise[2:], timesteps=t[2:])
    torch.testing.assert_close(l_inst, hand_inst, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(l_prior, hand_prior, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total, hand_inst + 0.5 * hand_prior, rtol=1e-5, atol=1e-6)
    assert l_prior > 0


def test_dreambooth_draws_class_images_from_the_attacked_model_and_weights_the_prior(fast_sd, purse):
    tiny_sd = fast_sd
    group, data = purse
    prior = class_images(tiny_sd, group, ["purse"], 2, seed=3)
    assert prior.prompts == ["purse", "purse"]  # the card's class prompt, "{category}"
    drawn = sample(tiny_sd, ["purse"] * 2, [3 * 100_000 + 7_000 + i for i in range(2)], batch_size=16)
    torch.testing.assert_close(prior.latents, encode_images(tiny_sd, drawn))  # deterministic in the seed
    # the prior term is in the attack's objective: its weight changes the update, all else equal
    _, unweighted = _final("dreambooth", tiny_sd, group, data, checkpoints=(1,), prior_loss_weight=0.0)
    _, weighted = _final("dreambooth", tiny_sd, group, data, checkpoints=(1,), prior_loss_weight=1.0)
    assert any(not torch.equal(a, b) for a, b in zip(unweighted.parameters(), weighted.parameters()))


@pytest.mark.parametrize("name", ["lora", "dreambooth_lora"])
def test_lora_merged_and_unmerged_sample_the_same_images(tiny_sd, purse, name):
    group, data = purse
    cls = get_attack(name)
    cfg = cls.Config(lr=1e-2, batch_size=2)
    prompts, seeds = [group.prompt("purse")] * 2, [5, 6]
    base = sample(tiny_sd, prompts, seeds, steps=4)
    for step, adapted in cls().adapt(tiny_sd, group, data, cfg, Constraints(), [3]):
        live = sample(adapted, prompts, seeds, steps=4)
        merged_unet, n_layers = _merged(adapted.unet)
        merged = tiny_sd.with_weights()
        merged.unet = merged_unet
        merged_images = sample(merged, prompts, seeds, steps=4)
    assert n_layers > 0
    assert (live - base).abs().max() > 1e-3  # the adapters do change the images
    torch.testing.assert_close(merged_images, live, rtol=0, atol=1e-4)
