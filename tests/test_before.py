"""Two things the runner does not draw, exact only if every attack behaves: it draws a model's others
before the attack once (``Runner.before``) and uses them as step 0 of every attack on that model, which
needs that no attack has moved, at step 0, anything those prompts go through; and it measures a sweep's
non-default points at their report step alone, which needs that sampling at the checkpoints before does
not change the training. Both checked here for every attack, bit for bit."""
import copy
from dataclasses import replace

import pytest
import torch

from immunobench.cards import get_card
from immunobench.data import ConceptImages, TaskData
from immunobench.diffusion import sample
from immunobench.plugins import ATTACKS, Constraints, get_attack

# settings under which one step visibly moves what the others' prompts go through: step 0's equality means
# something only if the same attack does change those images once it has stepped. Textual Inversion never
# does (it learns a new token's row only), so for it both steps must equal the model's.
MOVING = {"lora": {"lr": 1e-2}, "dreambooth": {"lr": 1e-3, "num_class_images": 2}, "dreambooth_lora": {"lr": 1e-2},
          "full_ft": {"lr": 1e-3}, "textual_inversion": {"lr": 5e-2}, "custom_diffusion": {"lr": 1e-3, "class_images": 2}}


@pytest.fixture(scope="module")
def fast_sd(tiny_sd):
    model = copy.copy(tiny_sd)
    model.spec = replace(tiny_sd.spec, sample_steps=3)
    return model


def _group_and_data(attack: str, resolution: int):
    card = get_card("relearn-style" if attack in ("lora", "full_ft") else "personalization")
    group = card.group("2c-1")
    g = torch.Generator().manual_seed(0)
    data = TaskData(attack={c: ConceptImages(torch.rand(2, 3, resolution, resolution, generator=g) * 2 - 1,
                                             [group.prompt(c)] * 2) for c in group.targets})
    return group, data


def test_every_attack_is_covered():
    shipped = {n for n in ATTACKS.names() if get_attack(n).__module__.startswith("immunobench.attacks.")}
    assert set(MOVING) == shipped  # (other tests register throwaway attacks in this process)


@pytest.mark.parametrize("attack", sorted(MOVING))
def test_step_zero_leaves_the_others_as_the_model_draws_them(fast_sd, attack):
    group, data = _group_and_data(attack, fast_sd.resolution)
    cls = get_attack(attack)
    cfg = replace(cls.Config(), batch_size=2, **MOVING[attack])
    prompts = [prompt for _, prompt in (group.probe(c) for c in group.others[:2])]
    seeds = [11, 12]
    model_draws = sample(fast_sd, prompts, seeds)
    drawn = {}
    for step, adapted in cls().adapt(fast_sd, group, data, cfg, Constraints(), [0, 1]):
        drawn[step] = sample(adapted, prompts, seeds)
    assert torch.equal(drawn[0], model_draws)
    if attack == "textual_inversion":
        assert torch.equal(drawn[1], model_draws)
    else:
        assert (drawn[1] - model_draws).abs().max() > 0  # the attack does reach these prompts once it steps


@pytest.mark.parametrize("attack", sorted(MOVING))
def test_sampling_at_earlier_checkpoints_leaves_the_report_step_as_it_is(fast_sd, attack):
    """A sweep point measured at its report step alone draws there what the full curve draws there."""
    group, data = _group_and_data(attack, fast_sd.resolution)
    cls = get_attack(attack)
    cfg = replace(cls.Config(), batch_size=2, **MOVING[attack])
    prompts = [group.prompt(c) for c in group.targets] + [prompt for _, prompt in (group.probe(c) for c in group.others[:1])]
    seeds = [11, 12, 13]
    curve = {step: sample(adapted, prompts, seeds)
             for step, adapted in cls().adapt(fast_sd, group, data, cfg, Constraints(), [0, 1, 2, 3])}
    alone = {step: sample(adapted, prompts, seeds)
             for step, adapted in cls().adapt(fast_sd, group, data, cfg, Constraints(), [3])}
    assert list(alone) == [3] and torch.equal(alone[3], curve[3])
    assert (curve[3] - curve[0]).abs().max() > 0  # the attack did train in between
