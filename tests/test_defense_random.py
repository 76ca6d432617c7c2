"""The random control: MIMA's update with each tensor's direction replaced by seeded noise of the same
norm — same tensors, same per-tensor and total norms, a direction nearly orthogonal to MIMA's,
deterministic in its seed; MIMA's config resolves as the grid resolves it."""
import pytest
import torch

from immunobench.cards import get_card
from immunobench.data import ConceptImages, defense_view
from immunobench.defenses.mima import MIMA
from immunobench.defenses.random_control import RandomConfig, RandomControl, mima_config, randomize
from immunobench.errors import ConfigError
from immunobench.plugins import configure

# MIMA at a tiny model's scale: 2 outer steps with a large lr, so the update is far above float32 rounding
TINY_MIMA = {"steps": 2, "outer_lr": 1e-3, "inner_lr": 1e-2, "prior_weight": 1.0}


@pytest.fixture(scope="module")
def view(tiny_sd):
    group = get_card("relearn-style").group("2c-1")
    res = tiny_sd.resolution
    g = torch.Generator().manual_seed(0)
    images = {c: ConceptImages(torch.rand(1, 3, res, res, generator=g) * 2 - 1, [group.prompt(c, "defense")])
              for c in group.targets}
    reg = ConceptImages(torch.rand(1, 3, res, res, generator=g) * 2 - 1, [group.card.regularization.prompt])
    return defense_view(group, images, reg, captions=("a photo of a tree", "a small red house", "two birds"))


@pytest.fixture(scope="module")
def runs(tiny_sd, view):
    """MIMA alone, the control at seed 0 twice, and at seed 1."""
    cfg = RandomConfig(mima=TINY_MIMA, seed=0)
    mima = MIMA().immunize(tiny_sd, view, mima_config(tiny_sd.name, cfg).config)
    return {"mima": mima, "random": RandomControl().immunize(tiny_sd, view, cfg),
            "again": RandomControl().immunize(tiny_sd, view, cfg),
            "seed1": RandomControl().immunize(tiny_sd, view, RandomConfig(mima=TINY_MIMA, seed=1))}


def _deltas(model, tensors):
    base = dict(model.unet.named_parameters())
    return {n: (t.double() - base[n].detach().double()) for n, t in sorted(tensors.items())}


def test_per_tensor_and_total_norms_equal_mimas(tiny_sd, runs):
    mima, control = _deltas(tiny_sd, runs["mima"].unet), _deltas(tiny_sd, runs["random"].unet)
    assert set(control) == set(mima)
    moved = [n for n in mima if mima[n].norm() > 0]
    assert len(moved) > len(mima) // 2  # MIMA did move most of its tensors: the comparison has content
    for n in mima:
        torch.testing.assert_close(control[n].norm(), mima[n].norm(), rtol=1e-4, atol=0.0)
    total = lambda d: torch.sqrt(sum(v.norm() ** 2 for v in d.values()))  # noqa: E731
    torch.testing.assert_close(total(control), total(mima), rtol=1e-5, atol=0.0)
    info = runs["random"].info
    assert info["update_norm_random"] == pytest.approx(info["update_norm_mima"], rel=1e-5)
    assert info["update_norm_mima"] == pytest.approx(float(total(mima)), rel=1e-6)  # the control ran MIMA itself


def test_direction_is_nearly_orthogonal_to_mimas(tiny_sd, runs):
    mima, control = _deltas(tiny_sd, runs["mima"].unet), _deltas(tiny_sd, runs["random"].unet)
    a = torch.cat([v.flatten() for v in mima.values()])
    b = torch.cat([control[n].flatten() for n in mima])
    cosine = float(a @ b / (a.norm() * b.norm()))
    # a Gaussian direction in D dimensions has |cos| ~ 1/√D against any fixed vector (D = 24 736 here: 0.006)
    assert abs(cosine) < 5 / len(a) ** 0.5, cosine
    assert runs["random"].info["cosine_to_mima"] == pytest.approx(cosine, abs=1e-9)


def test_only_mimas_parameters_change(tiny_sd, runs):
    base = dict(tiny_sd.unet.named_parameters())
    mima, control = runs["mima"].unet, runs["random"].unet
    assert set(control) == set(mima) and all(".attn2." in n for n in control)  # MIMA's S^u: every attn2 tensor
    assert runs["random"].text_encoder == {} and runs["random"].constraints.frozen == frozenset()
    for n in control:  # a tensor MIMA left alone stays; one it moved moves
        assert torch.equal(control[n], base[n]) == torch.equal(mima[n], base[n]), n
    changed = tiny_sd.with_weights(unet=control)
    untouched = [n for n, p in changed.unet.named_parameters() if n not in control]
    assert untouched and all(torch.equal(dict(changed.unet.named_parameters())[n], base[n]) for n in untouched)


def test_deterministic_in_seed(runs):
    a, b, c = runs["random"].unet, runs["again"].unet, runs["seed1"].unet
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    # the noise alone: one seed, one draw, whatever MIMA did
    before = {"w": torch.zeros(3, 4), "v": torch.ones(5)}
    after = {"w": torch.ones(3, 4), "v": torch.full((5,), 2.0)}
    assert all(torch.equal(x, y) for x, y in zip(randomize(before, after, 7).values(), randomize(before, after, 7).values()))
    assert not torch.equal(randomize(before, after, 7)["w"], randomize(before, after, 8)["w"])


def test_total_norm_option_matches_only_the_total():
    g = torch.Generator().manual_seed(0)
    before = {"big": torch.zeros(50, 50), "small": torch.zeros(4)}
    after = {"big": torch.randn(50, 50, generator=g) * 1e-3, "small": torch.randn(4, generator=g)}  # most norm in "small"
    total = randomize(before, after, 0, norm="total")
    norm = lambda d: torch.sqrt(sum(v.double().norm() ** 2 for v in d.values()))  # noqa: E731
    torch.testing.assert_close(norm(total), norm(after), rtol=1e-6, atol=0.0)
    assert total["small"].norm() < 0.5 * after["small"].norm()  # one draw re-allocates the norm by size
    per = randomize(before, after, 0)
    for n in after:
        torch.testing.assert_close(per[n].norm(), after[n].norm(), rtol=1e-6, atol=0.0)


def test_mima_config_resolves_like_the_grids():
    tiny = configure(RandomControl, "tiny-sd", "personalization", {"mima": {"steps": 7}, "seed": 3})
    assert tiny.task_kind == "personalization"  # set by the control's own kind preset
    resolved = mima_config("tiny-sd", tiny).config
    # MIMA's tiny-sd preset (outer lr 2e-4, λ_prior 5) under the override, with the control's seed
    assert (resolved.outer_lr, resolved.prior_weight, resolved.steps, resolved.seed) == (2e-4, 5.0, 7, 3)
    assert resolved == configure(MIMA, "tiny-sd", "personalization", {"steps": 7, "seed": 3})
    sd = mima_config("sd-v1-4", configure(RandomControl, "sd-v1-4", "relearn")).config
    assert (sd.outer_lr, sd.steps) == (3e-5, 300)  # MIMA App. D
    assert configure(RandomControl, "tiny-sd", "relearn", {"mima": "{outer_lr: 1e-3}"}).mima == {"outer_lr": 1e-3}
    with pytest.raises(ConfigError, match="no field 'stepz'"):
        configure(RandomControl, "tiny-sd", "relearn", {"mima": {"stepz": 3}})
    with pytest.raises(ConfigError, match="random.seed"):
        configure(RandomControl, "tiny-sd", "relearn", {"mima": {"seed": 3}})
