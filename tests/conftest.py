import os
from pathlib import Path

import pytest
import yaml

GROUP = "2c-1"

# Tests never touch the hub: an uncached id must fail fast, as it would on an offline machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one test process per core: one torch thread each, or they oversubscribe the cores
    import torch

    torch.set_num_threads(1)


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


@pytest.fixture(scope="session")
def small_card(tmp_path_factory) -> Path:
    """relearn-style with every count shrunk: 2 images per set, checkpoints 0 and 2."""
    from immunobench.cards import get_card

    card = get_card("relearn-style").model_dump(mode="json", exclude={"path"})
    card.update(task="relearn-small", checkpoints=[0, 2], report_step=2,
                data={"source": "generated", "defense_images": 2, "attack_images": 2, "eval_images": 2},
                regularization={"prompt": "artwork", "images": 2})
    path = tmp_path_factory.mktemp("cards") / "relearn-small.yaml"
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


def small_config(card, tmp, defenses=("mima",), name="r1", store="store"):
    """A run of ``card`` on group 2c-1 of the shipped tiny-sd, 2 sampling steps, MIMA at 2 steps, computed in
    this process (worker processes cost more than these cells; tests of the worker path ask for them)."""
    from immunobench.runner import RunConfig

    return RunConfig(task=str(card), defenses=defenses, groups=(GROUP,), model="tiny-sd", out=str(tmp / "runs"),
                     store=str(tmp / store), name=name, sample_steps=2, overrides={"mima": {"steps": 2}}, workers=1)


@pytest.fixture(scope="session")
def finished(small_card, tmp_path_factory):
    """(folder, runner, run folder) of one finished small_card run of MIMA and none; shared, read-only."""
    from immunobench.progress import Progress
    from immunobench.runner import Runner

    tmp = tmp_path_factory.mktemp("grid")
    runner = Runner(small_config(small_card, tmp), Progress(False), log=lambda _: None)
    return tmp, runner, runner.run()
