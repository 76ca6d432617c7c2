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
