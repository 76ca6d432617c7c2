import os

import pytest

# Tests never touch the hub: an uncached id must fail fast, as it would on an offline machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory):
    """A tiny random SD-architecture model saved in the diffusers layout SD v1-4 ships in."""
    from immunobench.architecture import SDArchitecture, build_components, save_components

    folder = tmp_path_factory.mktemp("tiny-random-sd")
    save_components(build_components(SDArchitecture(), seed=0), folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sd(tiny_sd_folder):
    from immunobench.backbones import load_backbone

    return load_backbone(str(tiny_sd_folder))


@pytest.fixture(scope="session")
def style_view(tiny_sd):
    """What a defense sees of relearn-style 2c-1 (data.DefenseData): 2 random images per target and
    2 regularization images, at tiny_sd's resolution."""
    import torch

    from immunobench.cards import get_card
    from immunobench.data import ConceptImages, defense_view

    group = get_card("relearn-style").group("2c-1")
    res = tiny_sd.resolution
    g = torch.Generator().manual_seed(0)
    images = {c: ConceptImages(torch.rand(2, 3, res, res, generator=g) * 2 - 1, [group.prompt(c, "defense")] * 2)
              for c in group.targets}
    reg = ConceptImages(torch.rand(2, 3, res, res, generator=g) * 2 - 1, [group.card.regularization.prompt] * 2)
    return defense_view(group, images, reg, captions=("a photo of a tree", "a small red house", "two birds"))
