"""The content-addressed store: stable keys, atomic writes, leftovers of killed writers ignored."""
import os
import time

import torch

from immunobench.store import Store, artifact_key


def test_keys_are_stable_and_input_sensitive():
    a = artifact_key("attack", model="m", config={"lr": 1e-4, "rank": 4}, seed=0)
    assert a == artifact_key("attack", seed=0, config={"rank": 4, "lr": 1e-4}, model="m")  # order-free
    assert a != artifact_key("attack", model="m", config={"lr": 1e-4, "rank": 4}, seed=1)
    assert a != artifact_key("immunize", model="m", config={"lr": 1e-4, "rank": 4}, seed=0)


def test_put_get_roundtrip_is_bit_exact(tmp_path):
    store = Store(tmp_path)
    t = {"w": torch.randn(3, 4), "u": torch.arange(5, dtype=torch.uint8)}
    key = artifact_key("x", n=1)
    assert store.get(key) is None
    store.put(key, {"info": [1, 2]}, {"tensors": t})
    art = store.get(key)
    assert art.meta["info"] == [1, 2] and art.meta["key"] == key
    back = art.tensors()
    assert torch.equal(back["w"], t["w"]) and torch.equal(back["u"], t["u"])
    # a second put of a finished key keeps the first (same inputs → same output)
    store.put(key, {"info": "other"}, {})
    assert store.get(key).meta["info"] == [1, 2]


def test_unfinished_writes_are_invisible_and_cleaned(tmp_path):
    store = Store(tmp_path)
    key = artifact_key("x", n=2)
    # what a writer killed mid-write leaves: a temporary folder, never the final one
    leftover = tmp_path / "tmp" / f"{key}.dead"
    leftover.mkdir(parents=True)
    (leftover / "tensors.safetensors").write_bytes(b"partial")
    assert not store.has(key)
    old = time.time() - 7200
    os.utime(leftover, (old, old))
    assert store.clean_temporary() == 1
    assert not leftover.exists()
    fresh = tmp_path / "tmp" / f"{key}.live"
    fresh.mkdir()
    assert store.clean_temporary() == 0 and fresh.exists()  # a live writer's folder is left alone


def test_image_sets_are_keyed_by_typed_step_and_concept_records(tmp_path):
    import pytest

    from immunobench.store import IMAGE_SETS_FORMAT, ImageKey, image_sets_artifact, read_image_sets

    store = Store(tmp_path)
    images = {ImageKey(0, "claude-monet"): torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
              ImageKey(400, "a/b concept"): torch.ones(2, 3, 4, 4, dtype=torch.uint8)}  # no separator to trip on
    meta, tensors = image_sets_artifact(images)
    art = store.put(artifact_key("attack", n=1), {"attack": "lora", **meta}, tensors)
    back = read_image_sets(art)
    assert list(back) == list(images) and all(isinstance(k, ImageKey) for k in back)
    assert all(torch.equal(back[k], images[k]) for k in images)
    assert back[ImageKey(400, "a/b concept")].sum() == 2 * 3 * 4 * 4
    # an artifact of the earlier "step/concept" format is refused, never parsed into wrong keys
    old = store.put(artifact_key("attack", n=0), {"attack": "lora"}, {"tensors": {"0/claude-monet": images[ImageKey(0, "claude-monet")]}})
    with pytest.raises(ValueError, match=f"format None, this code reads format {IMAGE_SETS_FORMAT}"):
        read_image_sets(old)


def test_a_machine_with_another_device_finds_none_of_this_ones_artifacts(finished, monkeypatch):
    """Keys descend from the backbone's fingerprint *and* the device type, dtype, torch and diffusers
    versions: a CUDA machine sharing this store plans every stage again instead of reading CPU floats."""
    import json

    import diffusers

    from immunobench import runner as runner_module
    from immunobench.progress import Progress

    tmp, cpu_runner, run_dir = finished
    assert cpu_runner.environment == {"device": "cpu", "dtype": "float32", "torch": torch.__version__,
                                      "diffusers": diffusers.__version__}
    assert json.loads((run_dir / "manifest.json").read_text())["store_keys_environment"] == cpu_runner.environment

    real = runner_module.key_environment
    monkeypatch.setattr(runner_module, "key_environment", lambda model, device: {**real(model, device), "device": "cuda"})
    other = runner_module.Runner(cpu_runner.cfg, Progress(False), log=lambda _: None)
    other.prepare()
    other._plan = runner_module._Plan()
    other._walk()
    stored = {k for keys in json.loads((run_dir / "manifest.json").read_text())["artifacts"].values() for k in keys}
    assert other._plan.images and not set(other._plan.images) & stored
    assert len(other._plan.cells) == len(cpu_runner.cells)  # every cell, the shared no-defense ones included
